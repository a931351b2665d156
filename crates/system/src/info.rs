//! The runtime facts users rely on when reading a boot log.

use std::path::Path;

/// `model name` of the first CPU in /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
}

/// `MemTotal` of /proc/meminfo, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Block devices with their sizes, e.g. `vda (10.0 GiB)`; not loop, RAM
/// or NBD devices, which are only slots here (a kernel with NBD built in
/// has 16 of them, which `b2c.nbd` attaches later).
pub fn block_devices(sys_block: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut devs: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if ["loop", "ram", "nbd"].iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let sectors: u64 = std::fs::read_to_string(e.path().join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(format!("{name} ({})", human_bytes(sectors * 512)))
        })
        .collect();
    devs.sort();
    devs
}

/// `512 B`, `1.5 MiB`, `465.8 GiB`: binary units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `Linux 6.1.0-28-amd64 #1 SMP ... x86_64`.
pub fn kernel() -> String {
    let u = rustix::system::uname();
    format!(
        "{} {} {} {}",
        u.sysname().to_string_lossy(),
        u.release().to_string_lossy(),
        u.version().to_string_lossy(),
        u.machine().to_string_lossy()
    )
}

pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_devices_are_listed_with_their_size_but_slots() {
        let dir = tempfile::tempdir().unwrap();
        for (name, sectors) in [("vda", 20971520), ("nbd0", 0), ("loop3", 0), ("sda", 2048)] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("size"), format!("{sectors}\n")).unwrap();
        }
        assert_eq!(
            block_devices(dir.path()),
            ["sda (1.0 MiB)", "vda (10.0 GiB)"]
        );
    }

    #[test]
    fn parses_proc_files() {
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU version 2.5+\n";
        assert_eq!(cpu_model(cpu), Some("QEMU Virtual CPU version 2.5+"));
        assert_eq!(
            mem_total_kib("MemTotal:        1010776 kB\nMemFree: 1 kB\n"),
            Some(1010776)
        );
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(500_107_862_016), "465.8 GiB");
    }
}
