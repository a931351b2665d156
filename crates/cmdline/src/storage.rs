//! Storage options: `b2c.cache_device`, `b2c.swap`, `b2c.filesystem`.

/// Where pulled layers and container scratch live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheDevice {
    /// Everything in RAM.
    #[default]
    None,
    /// The first partition labelled `B2C_CACHE`, else a new one over the
    /// first non-removable disk.
    Auto,
    /// Like `auto`, but reformatted.
    Reset,
    /// A disk or partition, `/dev/X`.
    Device(String),
    /// The name of a `b2c.filesystem`.
    Filesystem(String),
}

/// As written on the command line (`auto`, `/dev/sda1`, a name).
impl std::fmt::Display for CacheDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheDevice::None => "none",
            CacheDevice::Auto => "auto",
            CacheDevice::Reset => "reset",
            CacheDevice::Device(d) => d,
            CacheDevice::Filesystem(name) => name,
        })
    }
}

/// `b2c.swap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapSpace {
    /// A swap file of this many bytes on the cache partition.
    File { bytes: u64 },
    /// A swap device.
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub space: SwapSpace,
    pub swappiness: Option<u8>,
}

/// `b2c.filesystem=name,type=T,src=S[,opts=a|b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub name: String,
    pub fstype: Option<String>,
    pub src: String,
    /// Mount options, with boot2container's `|` turned back into `,`.
    pub opts: Option<String>,
}

pub fn parse_cache_device(value: &str) -> Result<CacheDevice, String> {
    Ok(match value {
        "none" => CacheDevice::None,
        "auto" => CacheDevice::Auto,
        "reset" => CacheDevice::Reset,
        "" => {
            return Err("expected none, auto, reset, /dev/DEVICE or a b2c.filesystem name".into())
        }
        dev if dev.starts_with("/dev/") => CacheDevice::Device(dev.into()),
        dev if dev.starts_with('/') => {
            return Err(format!("{dev:?} is not under /dev/"));
        }
        name => CacheDevice::Filesystem(name.into()),
    })
}

/// `8G`, `512M`, `1024K`, `100000` (bytes); binary units, as boot2container.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size such as 8G or 512M"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "k" | "KB" | "KiB" => 1 << 10,
        "M" | "m" | "MB" | "MiB" => 1 << 20,
        "G" | "g" | "GB" | "GiB" => 1 << 30,
        "T" | "t" | "TB" | "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{value:?} is not a usable size"))
}

/// `SIZE[,swappiness=N]` or `/dev/X[,swappiness=N]`.
pub fn parse_swap(value: &str) -> Result<(Swap, Vec<String>), String> {
    let mut parts = value.split(',');
    let first = parts.next().unwrap_or_default();
    let space = if first.starts_with("/dev/") {
        SwapSpace::Device(first.into())
    } else {
        SwapSpace::File {
            bytes: parse_size(first)?,
        }
    };
    let mut swap = Swap {
        space,
        swappiness: None,
    };
    let mut warnings = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("swappiness", v)) => {
                swap.swappiness = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|s| *s <= 200)
                        .ok_or_else(|| format!("swappiness={v:?} is not 0 to 200"))?,
                )
            }
            _ => warnings.push(format!("b2c.swap: unknown parameter {part:?} is ignored")),
        }
    }
    Ok((swap, warnings))
}

pub fn parse_filesystem(value: &str) -> Result<(Filesystem, Vec<String>), String> {
    let mut parts = value.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() || name.contains('=') {
        return Err("expected a name first: NAME,type=T,src=S[,opts=a|b]".into());
    }
    let (mut fstype, mut src, mut opts) = (None, None, None);
    let mut warnings = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("type", v)) => fstype = Some(v.to_string()),
            Some(("src", v)) => src = Some(v.to_string()),
            Some(("opts", v)) => opts = Some(v.replace('|', ",")),
            _ => warnings.push(format!(
                "b2c.filesystem={name}: unknown parameter {part:?} is ignored"
            )),
        }
    }
    let src = src
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("filesystem {name}: src= is required"))?;
    Ok((
        Filesystem {
            name: name.into(),
            fstype,
            src,
            opts,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_devices() {
        assert_eq!(parse_cache_device("auto"), Ok(CacheDevice::Auto));
        assert_eq!(parse_cache_device("reset"), Ok(CacheDevice::Reset));
        assert_eq!(parse_cache_device("none"), Ok(CacheDevice::None));
        assert_eq!(
            parse_cache_device("/dev/nvme0n1p3"),
            Ok(CacheDevice::Device("/dev/nvme0n1p3".into()))
        );
        assert_eq!(
            parse_cache_device("nfs_cache"),
            Ok(CacheDevice::Filesystem("nfs_cache".into()))
        );
        assert!(parse_cache_device("").is_err());
        assert!(parse_cache_device("/mnt/x").is_err());
    }

    #[test]
    fn sizes_and_swap() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "G", "8X", "0", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let (s, w) = parse_swap("2G,swappiness=10,bogus").unwrap();
        assert_eq!(s.space, SwapSpace::File { bytes: 2 << 30 });
        assert_eq!(s.swappiness, Some(10));
        assert_eq!(w.len(), 1);
        let (d, _) = parse_swap("/dev/sda2").unwrap();
        assert_eq!(d.space, SwapSpace::Device("/dev/sda2".into()));
        assert!(parse_swap("2G,swappiness=300").is_err());
    }

    #[test]
    fn filesystems() {
        let (f, w) =
            parse_filesystem("cache,type=nfs,src=10.0.0.1:/srv,opts=ro|vers=4,x=1").unwrap();
        assert_eq!(
            f,
            Filesystem {
                name: "cache".into(),
                fstype: Some("nfs".into()),
                src: "10.0.0.1:/srv".into(),
                opts: Some("ro,vers=4".into()),
            }
        );
        assert_eq!(w.len(), 1);
        assert!(parse_filesystem("cache,type=ext4").is_err());
        assert!(parse_filesystem("src=/dev/sda").is_err());
    }
}
