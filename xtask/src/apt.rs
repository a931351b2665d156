//! Debian packages fetched with an apt configuration of our own: a sources
//! list, package lists and cache under target/, and, for another
//! architecture, `APT::Architecture`. The machine's apt sources (which may
//! list `main` only) and its dpkg architectures are never touched; the
//! packages are downloaded and unpacked with `dpkg-deb -x`, never
//! installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, run_output, Result};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A Debian archive of the machine's apt sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub uri: String,
    pub suite: String,
    /// The keyring that signs it.
    pub signed_by: String,
}

impl Archive {
    /// The main archive (not the security one nor `-updates`).
    fn is_main(&self) -> bool {
        !self.uri.contains("security") && !self.suite.contains('-')
    }

    /// A one-line sources.list entry for `components`, limited to `arch`
    /// when given.
    pub fn source_line(&self, arch: Option<&str>, components: &str) -> String {
        let arch = arch.map(|a| format!("arch={a} ")).unwrap_or_default();
        format!(
            "deb [{arch}signed-by={}] {} {} {components}\n",
            self.signed_by, self.uri, self.suite
        )
    }

    /// The `deb-src` line of the same archive: its source packages, for
    /// `apt-get source`.
    pub fn deb_src_line(&self, components: &str) -> String {
        format!(
            "deb-src [signed-by={}] {} {} {components}\n",
            self.signed_by, self.uri, self.suite
        )
    }
}

/// The texts of the machine's apt sources: deb822 `.sources` files and
/// one-line `.list` files, sources.list last.
fn machine_sources() -> Vec<String> {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e == "sources" || e == "list") {
                texts.push(std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    texts
}

/// Every Debian archive of the machine's apt sources, in their order: the
/// main one, `-updates`, security.
pub fn debian_archives() -> Result<Vec<Archive>> {
    let archives: Vec<Archive> = machine_sources()
        .iter()
        .flat_map(|t| archives_in(t))
        .collect();
    if !archives.iter().any(Archive::is_main) {
        return Err(
            "no Debian archive (a `deb` source with a suite such as bookworm) in /etc/apt: \
             cannot tell which mirror and release to fetch from"
                .into(),
        );
    }
    Ok(archives)
}

/// The Debian mirror and release of the machine's own apt sources: its
/// main archive.
pub fn debian_archive() -> Result<Archive> {
    Ok(debian_archives()?
        .into_iter()
        .find(Archive::is_main)
        .expect("debian_archives has a main archive"))
}

/// The Debian archives (`deb` sources whose URI names debian) of an apt
/// sources text, in its order.
fn archives_in(text: &str) -> Vec<Archive> {
    let mut found = Vec::new();
    let mut push = |uri: &str, suite: &str, signed_by: Option<String>| {
        if uri.contains("debian") {
            found.push(Archive {
                uri: uri.to_string(),
                suite: suite.to_string(),
                signed_by: signed_by.unwrap_or_else(|| KEYRING.to_string()),
            });
        }
    };
    // deb822: stanzas separated by blank lines.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                push(uri, suite, field("Signed-By"));
            }
        }
    }
    // One-line format: deb [options] URI SUITE COMPONENTS...
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        let mut signed_by = None;
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if let Some(v) = w.trim_matches(['[', ']']).strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            push(uri, suite, signed_by);
        }
    }
    found
}

/// apt with a sources list, package lists and cache of its own under
/// `dir`, for one architecture.
pub struct Apt {
    dir: PathBuf,
    arch: Option<String>,
}

impl Apt {
    /// `sources`: the sources.list text. `arch`: a Debian architecture
    /// (`arm64`) other than the machine's, or `None` for the machine's.
    pub fn new(dir: &Path, arch: Option<&str>, sources: &str) -> Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let list = dir.join("sources.list");
        // A changed list makes the package lists stale.
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources) {
            std::fs::write(&list, sources)?;
            let _ = std::fs::remove_dir_all(dir.join("lists"));
            std::fs::create_dir_all(dir.join("lists/partial"))?;
        }
        Ok(Apt {
            dir: dir.to_path_buf(),
            arch: arch.map(String::from),
        })
    }

    /// `program` (apt-get, apt-cache) with this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let mut options = vec![
            ("Dir::Etc::sourcelist", self.dir.join("sources.list")),
            ("Dir::Etc::sourceparts", PathBuf::from("-")),
            ("Dir::State::Lists", self.dir.join("lists")),
            ("Dir::Cache", self.dir.join("cache")),
            // Downloads land in our directory, which _apt may not enter.
            ("APT::Sandbox::User", PathBuf::from("root")),
        ];
        if let Some(arch) = &self.arch {
            // This architecture only, whatever dpkg is configured for.
            options.push(("APT::Architecture", PathBuf::from(arch)));
            options.push(("APT::Architectures", PathBuf::from(arch)));
        }
        for (key, value) in options {
            cmd.arg("-o").arg(format!("{key}={}", value.display()));
        }
        cmd
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        crate::command_output(self.command(program).args(args))
    }

    pub fn update(&self) -> Result<()> {
        run(self.command("apt-get").args(["-q", "update"]))
    }

    /// Updates the package lists unless an update less than a day old
    /// left some (binary or, for `deb-src` lines, source package lists).
    pub fn update_if_old(&self) -> Result<()> {
        const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        let fresh = std::fs::read_dir(self.dir.join("lists"))?
            .flatten()
            .filter(|e| is_package_list(&e.file_name().to_string_lossy()))
            .filter_map(|e| e.metadata().ok()?.modified().ok()?.elapsed().ok())
            .any(|age| age < DAY);
        if fresh {
            Ok(())
        } else {
            self.update()
        }
    }

    /// What a metapackage (`linux-image-arm64`) depends on among the
    /// packages named `prefix…`: the real package it stands for.
    pub fn dependency_named(&self, package: &str, prefix: &str) -> Result<String> {
        let depends = self.output("apt-cache", &["depends", package])?;
        depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with(prefix) && !p.contains('<'))
            .map(String::from)
            .ok_or_else(|| {
                format!("apt-cache knows no {package} with a {prefix}… dependency").into()
            })
    }

    /// `packages` and every package they need to run (Depends and
    /// PreDepends, recursively; of alternatives, the first), sorted.
    pub fn with_dependencies(&self, packages: &[String]) -> Result<Vec<String>> {
        let mut seen: BTreeSet<String> = packages.iter().cloned().collect();
        let mut pending: Vec<String> = packages.to_vec();
        while !pending.is_empty() {
            let mut args = vec![
                "depends",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ];
            args.extend(pending.iter().map(String::as_str));
            let text = self.output("apt-cache", &args)?;
            pending = needed_by(&text)
                .into_iter()
                .filter(|p| seen.insert(p.clone()))
                .collect();
        }
        Ok(seen.into_iter().collect())
    }

    /// Downloads `packages` into `dest` (kept there: a later call fetches
    /// only what changed; other .deb files are removed) and returns their
    /// files, sorted.
    pub fn download(&self, packages: &[String], dest: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dest)?;
        let mut args = vec!["-q", "download", "--print-uris"];
        args.extend(packages.iter().map(String::as_str));
        // 'URI' FILE SIZE HASH, one line per package.
        let uris = self.output("apt-get", &args)?;
        let files: BTreeSet<String> = uris
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(String::from)
            .collect();
        if files.len() != packages.len() {
            return Err(
                format!("apt-get download --print-uris {packages:?} gave {files:?}").into(),
            );
        }
        for entry in std::fs::read_dir(dest)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !files.contains(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        let missing: Vec<&String> = packages
            .iter()
            .filter(|p| {
                !files
                    .iter()
                    .any(|f| f.starts_with(&format!("{p}_")) && dest.join(f).is_file())
            })
            .collect();
        if !missing.is_empty() {
            run(self
                .command("apt-get")
                .args(["-q", "download"])
                .args(missing)
                .current_dir(dest))?;
        }
        Ok(files.iter().map(|f| dest.join(f)).collect())
    }
}

/// Whether a file of apt's lists directory is a package list, binary or
/// source: apt may keep them compressed (`…_Packages.lz4` on Debian 12
/// here), so the name's end is not enough.
fn is_package_list(name: &str) -> bool {
    let base = [".lz4", ".gz", ".xz", ".zst", ".bz2", ".lzma"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    base.ends_with("_Packages") || base.ends_with("_Sources")
}

/// The packages an `apt-cache depends` text says its packages need: the
/// package of each Depends and PreDepends line, the first of alternatives
/// (`|Depends:` marks a line the next one is an alternative to), and for
/// a virtual package (`<name>`) its first provider (the indented line
/// after it).
fn needed_by(text: &str) -> Vec<String> {
    let mut needed = Vec::new();
    let mut lines = text.lines().peekable();
    let mut alternative = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let (or, rest) = match trimmed.strip_prefix('|') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let Some(name) = rest
            .strip_prefix("Depends: ")
            .or_else(|| rest.strip_prefix("PreDepends: "))
        else {
            continue;
        };
        let take = !alternative;
        alternative = or;
        if !take {
            continue;
        }
        if name.starts_with('<') {
            if let Some(provider) = lines.peek().filter(|l| l.starts_with("    ")) {
                needed.push(provider.trim().to_string());
            }
        } else {
            needed.push(name.trim().to_string());
        }
    }
    needed
}

/// Unpacks each .deb into `root` (in order: a later package's file
/// replaces an earlier one's, as dpkg would with a diversion-free set).
pub fn unpack(debs: &[PathBuf], root: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    for deb in debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    }
    Ok(())
}

/// The files a .deb holds (`dpkg-deb -c`, one line per entry).
pub fn listing(deb: &Path) -> Result<String> {
    run_output("dpkg-deb", &["-c", &deb.to_string_lossy()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debian_archives_in_either_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        let archives = archives_in(deb822);
        let pairs: Vec<(&str, &str)> = archives
            .iter()
            .map(|a| (a.uri.as_str(), a.suite.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("http://deb.debian.org/debian", "bookworm"),
                ("http://deb.debian.org/debian", "bookworm-updates"),
                ("http://deb.debian.org/debian-security", "bookworm-security"),
            ]
        );
        assert_eq!(
            archives.iter().find(|a| a.is_main()),
            Some(&Archive {
                uri: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                signed_by: KEYRING.into(),
            })
        );
        assert_eq!(
            archives[0].source_line(Some("arm64"), "main"),
            format!(
                "deb [arch=arm64 signed-by={KEYRING}] http://deb.debian.org/debian bookworm main\n"
            )
        );
        assert_eq!(
            archives[0].deb_src_line("main"),
            format!("deb-src [signed-by={KEYRING}] http://deb.debian.org/debian bookworm main\n")
        );
        let security_first = "Types: deb\nURIs: http://security.debian.org/debian-security\n\
                              Suites: bookworm-security\n\nTypes: deb\n\
                              URIs: http://mirror.example/debian\nSuites: trixie\n";
        let main = archives_in(security_first)
            .into_iter()
            .find(Archive::is_main);
        assert_eq!(
            main.map(|a| (a.uri, a.suite)),
            Some(("http://mirror.example/debian".into(), "trixie".into()))
        );
        let one_line = "# deb-src http://x/debian bookworm main\n\
                        deb http://security.debian.org/debian-security bookworm-security main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        let main = archives_in(one_line).into_iter().find(Archive::is_main);
        assert_eq!(
            main,
            Some(Archive {
                uri: "http://mirror.example/debian".into(),
                suite: "bookworm".into(),
                signed_by: "/k.gpg".into(),
            })
        );
        assert_eq!(
            archives_in("deb https://packages.example/apt cloud-sdk main\n"),
            []
        );
    }

    #[test]
    fn package_lists_are_recognised_compressed_or_not() {
        for name in [
            "deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages",
            "deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages.lz4",
            "deb.debian.org_debian_dists_bookworm_main_source_Sources.xz",
        ] {
            assert!(is_package_list(name), "{name}");
        }
        for name in [
            "deb.debian.org_debian_dists_bookworm_InRelease",
            "deb.debian.org_debian_dists_bookworm_main_dep11_Components-arm64.yml.gz",
            "lock",
        ] {
            assert!(!is_package_list(name), "{name}");
        }
    }

    #[test]
    fn dependencies_take_the_first_alternative_and_a_virtual_package_s_provider() {
        let text = "crun\n  Depends: libc6\n  Depends: libsystemd0\n    libelogind0\n\
                    e2fsprogs\n  PreDepends: libblkid1\n  |Depends: mawk\n  Depends: gawk\n\
                    \x20 Depends: <awk-virtual>\n    original-awk\n    busybox\n\
                    \x20 Depends: logsave\n";
        assert_eq!(
            needed_by(text),
            [
                "libc6",
                "libsystemd0",
                "libblkid1",
                "mawk",
                "original-awk",
                "logsave"
            ]
        );
    }
}
