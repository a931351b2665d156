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

/// `b2c.nbd=/dev/nbdN,host=H,port=P[,connections=N][,name=EXPORT]`: a
/// network block device b2c attaches before the cache and swap are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nbd {
    /// `/dev/nbdN`.
    pub device: String,
    /// N: the kernel's index of the device.
    pub index: u32,
    pub host: String,
    pub port: u16,
    /// TCP connections to the server, for throughput (1 by default).
    pub connections: u32,
    /// The export; empty: the server's default one.
    pub name: String,
}

impl Nbd {
    /// `host:port`, and ` export NAME` when one is named: how messages
    /// name the server side.
    pub fn server(&self) -> String {
        if self.name.is_empty() {
            format!("{}:{}", self.host, self.port)
        } else {
            format!("{}:{} export {}", self.host, self.port, self.name)
        }
    }
}

/// The most connections one device gets (the kernel has no limit; a
/// server forks a process or thread per connection).
pub const MAX_NBD_CONNECTIONS: u32 = 16;

pub fn parse_nbd(value: &str) -> Result<(Nbd, Vec<String>), String> {
    let mut parts = value.split(',');
    let device = parts.next().unwrap_or_default();
    let index = device
        .strip_prefix("/dev/nbd")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| format!("{device:?} is not /dev/nbdN (expected /dev/nbdN,host=H,port=P)"))?;
    let (mut host, mut port, mut connections, mut name) = (None, None, 1, String::new());
    let mut warnings = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("host", v)) if !v.is_empty() => host = Some(v.to_string()),
            Some(("port", v)) => {
                port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("port={v:?} is not a TCP port"))?,
                )
            }
            Some(("connections", v)) => {
                connections = match v.parse::<u32>() {
                    Ok(n @ 1..=MAX_NBD_CONNECTIONS) => n,
                    _ => {
                        warnings.push(format!(
                            "b2c.nbd={device}: connections={v:?} is not 1 to \
                             {MAX_NBD_CONNECTIONS}: using 1"
                        ));
                        1
                    }
                }
            }
            Some(("name", v)) => name = v.to_string(),
            _ => warnings.push(format!(
                "b2c.nbd={device}: unknown parameter {part:?} is ignored"
            )),
        }
    }
    let host = host.ok_or("host= is required")?;
    let port = port.ok_or("port= is required")?;
    Ok((
        Nbd {
            device: device.to_string(),
            index,
            host,
            port,
            connections,
            name,
        },
        warnings,
    ))
}

/// `b2c.storage=additionalimagestores=NAME[,NAME…]`: the names, and a
/// warning for anything else (boot2container hands the value to
/// containers-storage, which would have ignored it too).
pub fn parse_storage(value: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut warnings = Vec::new();
    let mut current: Option<&str> = None;
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let item = match part.split_once('=') {
            Some((key, first)) => {
                current = Some(key);
                first
            }
            None => part,
        };
        match current {
            Some("additionalimagestores") => {
                if !item.is_empty() && !names.iter().any(|n| n == item) {
                    names.push(item.to_string());
                }
            }
            _ => warnings.push(format!(
                "b2c.storage: {part:?} is ignored (only additionalimagestores=NAME[,NAME…] is \
                 known)"
            )),
        }
    }
    (names, warnings)
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
    fn nbd_devices() {
        let (n, w) = parse_nbd("/dev/nbd1,host=ci-gateway,port=40124,connections=5").unwrap();
        assert_eq!(
            n,
            Nbd {
                device: "/dev/nbd1".into(),
                index: 1,
                host: "ci-gateway".into(),
                port: 40124,
                connections: 5,
                name: String::new(),
            }
        );
        assert!(w.is_empty());
        let (n, w) = parse_nbd("/dev/nbd0,host=h,port=1,name=cache,connections=99,x=1").unwrap();
        assert_eq!((n.connections, n.name.as_str()), (1, "cache"));
        assert_eq!(w.len(), 2);
        for bad in [
            "/dev/sda,host=h,port=1",
            "/dev/nbd0,port=1",
            "/dev/nbd0,host=h",
            "/dev/nbd0,host=h,port=0",
            "nbd0,host=h,port=1",
        ] {
            assert!(parse_nbd(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn storage_names_the_image_stores() {
        assert_eq!(
            parse_storage("additionalimagestores=public,private"),
            (vec!["public".to_string(), "private".to_string()], vec![])
        );
        let (names, warnings) = parse_storage("additionalimagestores=a,size=10G,b");
        assert_eq!(names, ["a"]);
        assert_eq!(warnings.len(), 2);
        assert_eq!(parse_storage("").0, Vec::<String>::new());
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
