//! A module index made from the modules themselves, for a
//! `/lib/modules/<release>` tree without `modules.dep` (a kernel's
//! modules appended without running depmod): what depmod reads, the
//! `.modinfo` section of each `.ko` (`depends=`, `alias=`, `softdep=`).

use std::path::{Path, PathBuf};

/// The `key=value` strings of a module's `.modinfo` section: a 64-bit
/// little-endian ELF relocatable, as every x86-64 and arm64 module is.
/// `None` when the file is not such an ELF or has no `.modinfo`.
pub fn modinfo(elf: &[u8]) -> Option<Vec<(String, String)>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(at)? as usize;
        let offset = usize::try_from(u64_at(at + 24)?).ok()?;
        let size = usize::try_from(u64_at(at + 32)?).ok()?;
        Some((name, offset, size))
    };
    let (_, strtab, strtab_size) = section(shstrndx)?;
    let strings = elf.get(strtab..strtab.checked_add(strtab_size)?)?;
    let (_, offset, size) = (0..shnum).filter_map(section).find(|&(name, _, _)| {
        strings
            .get(name..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .is_some_and(|n| n == b".modinfo")
    })?;
    let data = elf.get(offset..offset.checked_add(size)?)?;
    Some(
        data.split(|&b| b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .filter_map(|entry| entry.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// `.ko`, or `.ko.zst` (which [`crate::modules::read_module`] reads).
fn is_module(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".ko") || name.ends_with(".ko.zst")
}

/// Every `.ko` (or `.ko.zst`) under `root`, relative to it, sorted.
fn module_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() && is_module(&path) => {
                    if let Ok(rel) = path.strip_prefix(root) {
                        found.push(rel.to_path_buf());
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// The text of `modules.dep`, `modules.softdep` and `modules.alias` that
/// depmod would write for the `.ko` (and `.ko.zst`) files under `root`,
/// from their `.modinfo`: dependencies are direct ones (the loader
/// follows them down). Modules compressed otherwise (`.ko.xz`…) are not
/// read: `cargo xtask modules` unpacks them.
pub fn index_text(root: &Path) -> (String, String, String) {
    let files = module_files(root);
    let names: std::collections::HashMap<String, &PathBuf> = files
        .iter()
        .map(|f| (crate::modules::module_name(&f.to_string_lossy()), f))
        .collect();
    let (mut dep, mut softdep, mut alias) = (String::new(), String::new(), String::new());
    for file in &files {
        let image = crate::modules::read_module(&root.join(file)).ok();
        let Some(info) = image.and_then(|b| modinfo(&b)) else {
            log::debug!("{}: no .modinfo, skipped", file.display());
            continue;
        };
        let name = crate::modules::module_name(&file.to_string_lossy());
        let deps: Vec<String> = info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|d| !d.is_empty())
            .filter_map(|d| names.get(&d.replace('-', "_")))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        dep.push_str(&format!("{}: {}\n", file.display(), deps.join(" ")));
        for (key, value) in &info {
            match key.as_str() {
                "alias" => alias.push_str(&format!("alias {value} {name}\n")),
                "softdep" => softdep.push_str(&format!("softdep {name} {value}\n")),
                _ => {}
            }
        }
    }
    (dep, softdep, alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE with a `.modinfo` section holding `info`.
    fn elf_with_modinfo(info: &[&str]) -> Vec<u8> {
        let mut data = Vec::new();
        for entry in info {
            data.extend_from_slice(entry.as_bytes());
            data.push(0);
        }
        let strtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let data_at = elf.len();
        elf.extend_from_slice(&data);
        let strtab_at = elf.len();
        elf.extend_from_slice(strtab);
        let shoff = elf.len();
        // Section 0: null; 1: .modinfo; 2: .shstrtab.
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&sh);
        };
        header(0, 0, 0);
        header(1, data_at, data.len());
        header(10, strtab_at, strtab.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_the_modinfo_section() {
        let elf = elf_with_modinfo(&[
            "license=GPL",
            "depends=mii,usbnet",
            "alias=usb:v0B95p1790d*",
        ]);
        assert_eq!(
            modinfo(&elf).unwrap(),
            [
                ("license".to_string(), "GPL".to_string()),
                ("depends".into(), "mii,usbnet".into()),
                ("alias".into(), "usb:v0B95p1790d*".into()),
            ]
        );
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(modinfo(&elf[..70]), None, "cut short");
    }

    #[test]
    fn an_index_is_made_from_the_modules() {
        let root = std::env::temp_dir().join(format!("b2c-modinfo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let net = root.join("kernel/drivers/net");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("mii.ko"), elf_with_modinfo(&["depends="])).unwrap();
        std::fs::write(
            net.join("asix.ko"),
            elf_with_modinfo(&[
                "depends=mii,built_in_one",
                "alias=usb:v0B95p1790d*dc*dsc*dp*ic*isc*ip*in*",
                "softdep=pre: crc32",
            ]),
        )
        .unwrap();
        std::fs::write(net.join("readme.txt"), "not a module").unwrap();
        let (dep, softdep, alias) = index_text(&root);
        assert_eq!(
            dep,
            "kernel/drivers/net/asix.ko: kernel/drivers/net/mii.ko\nkernel/drivers/net/mii.ko: \n"
        );
        assert_eq!(softdep, "softdep asix pre: crc32\n");
        assert_eq!(
            alias,
            "alias usb:v0B95p1790d*dc*dsc*dp*ic*isc*ip*in* asix\n"
        );
        // What the loader makes of it.
        let index = crate::modules::ModuleIndex::parse(&root, &dep, &softdep, &alias);
        let order = index
            .load_order(&["usb:v0B95p1790d0001dc00dsc00dp00icFFiscFFip00in00".into()])
            .unwrap();
        assert_eq!(order, [net.join("mii.ko"), net.join("asix.ko")]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn compressed_modules_are_read_too() {
        let root = std::env::temp_dir().join(format!("b2c-modinfo-zst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let elf = elf_with_modinfo(&["depends=", "alias=pci:v00001234d*sv*sd*bc*sc*i*"]);
        std::fs::write(root.join("one.ko"), &elf).unwrap();
        // As `cargo xtask initramfs` ships them.
        let zstd = std::process::Command::new("zstd")
            .args(["-q", "--rm"])
            .arg(root.join("one.ko"))
            .status();
        if !zstd.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: no zstd command");
            return;
        }
        assert_eq!(
            crate::modules::read_module(&root.join("one.ko.zst")).unwrap(),
            elf
        );
        let (dep, _, alias) = index_text(&root);
        assert_eq!(dep, "one.ko.zst: \n");
        assert_eq!(alias, "alias pci:v00001234d*sv*sd*bc*sc*i* one\n");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
