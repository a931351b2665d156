//! `b2c pull IMAGE --root DIR`: the initramfs's pull, on a workstation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use b2c_oci::{LayerStore, PullPolicy, RegistryOptions, Trust};

use crate::Failure;

#[derive(Debug, Default, PartialEq)]
struct Args {
    image: String,
    root: PathBuf,
    tls_verify: bool,
    ca_certs: Vec<PathBuf>,
    rootfs: Option<PathBuf>,
    copy: bool,
    debug: bool,
    policy: PullPolicy,
}

fn parse(args: &[String]) -> Result<Args, Failure> {
    let usage = |m: String| Failure::Usage(m);
    let mut image = None;
    let mut root = None;
    let mut out = Args {
        tls_verify: true,
        ..Args::default()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match flag {
            "--root" => root = Some(PathBuf::from(value()?)),
            "--rootfs" => out.rootfs = Some(PathBuf::from(value()?)),
            "--ca-cert" => out.ca_certs.push(PathBuf::from(value()?)),
            "--tls-verify" => {
                out.tls_verify = match inline.as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(v) => return Err(usage(format!("--tls-verify={v}: true or false"))),
                }
            }
            "--pull" => {
                out.policy = match value()?.as_str() {
                    "always" => PullPolicy::Always,
                    "missing" => PullPolicy::Missing,
                    "never" => PullPolicy::Never,
                    v => return Err(usage(format!("--pull={v}: always, missing or never"))),
                }
            }
            "--copy" => out.copy = true,
            "--debug" => out.debug = true,
            f if f.starts_with('-') => return Err(usage(format!("unknown option {f}"))),
            _ if image.is_none() => image = Some(arg.clone()),
            _ => return Err(usage(format!("unexpected argument {arg:?}"))),
        }
    }
    out.image = image.ok_or_else(|| usage("no image given".into()))?;
    out.root = root.ok_or_else(|| usage("--root DIR is required".into()))?;
    if out.copy && out.rootfs.is_none() {
        return Err(usage("--copy goes with --rootfs DIR".into()));
    }
    Ok(out)
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let args = parse(args)?;
    crate::init_logging(args.debug);
    let start = Instant::now();
    let reference = b2c_oci::parse_reference(&args.image).map_err(Failure::error)?;
    let mut trust = Trust::bundled();
    for path in &args.ca_certs {
        let pem =
            std::fs::read(path).map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?;
        trust = trust
            .with_pem(&path.to_string_lossy(), &pem)
            .map_err(|e| Failure::Error(e.to_string()))?;
    }
    let options = RegistryOptions {
        tls_verify: args.tls_verify,
        trust,
        ..Default::default()
    };
    let store = LayerStore::new(&args.root)
        .map_err(|e| Failure::Error(format!("{}: {e}", args.root.display())))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("cannot start the async runtime: {e}")))?;
    let image = runtime
        .block_on(b2c_oci::pull(&reference, &options, &store, args.policy))
        .map_err(Failure::error)?;
    println!("image: {}", image.reference);
    println!("manifest: {}", image.manifest_digest);
    println!("layers (bottom to top):");
    for layer in &image.layers {
        println!("  {}", layer.display());
    }
    if let Some(rootfs) = &args.rootfs {
        assemble(&args, &image.layers, rootfs)?;
    }
    log::info!("done in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The merged root file system at `rootfs`: an overlay mount like a boot's
/// (read-only layers, a writable upper directory beside `rootfs`), or a
/// plain copy when asked or when the mount is refused (no privileges, no
/// overlayfs).
fn assemble(args: &Args, layers: &[PathBuf], rootfs: &Path) -> Result<(), Failure> {
    if !args.copy {
        let name = rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rootfs".into());
        let parent = rootfs.parent().unwrap_or(Path::new("."));
        let upper = parent.join(format!(".{name}.upper"));
        let work = parent.join(format!(".{name}.work"));
        match b2c_oci::mount_overlay(layers, &upper, &work, rootfs) {
            Ok(()) => {
                println!(
                    "rootfs: overlay mounted on {} (upper {}); `umount {}` when done",
                    rootfs.display(),
                    upper.display(),
                    rootfs.display()
                );
                return Ok(());
            }
            Err(e) => {
                log::warn!("cannot mount the overlay ({e}): copying the layers instead");
                let _ = std::fs::remove_dir(&upper);
                let _ = std::fs::remove_dir(&work);
            }
        }
    }
    crate::merge::copy_merged(layers, rootfs)
        .map_err(|e| Failure::Error(format!("copying the layers to {}: {e}", rootfs.display())))?;
    println!("rootfs: merged copy in {}", rootfs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Result<Args, Failure> {
        let v: Vec<String> = words.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn parses_podman_style_flags() {
        let a = args("docker://r:5000/x:1 --root /s --tls-verify=false --ca-cert a.pem --ca-cert=b.pem --rootfs /r --copy --pull=missing").unwrap();
        assert_eq!(
            a,
            Args {
                image: "docker://r:5000/x:1".into(),
                root: "/s".into(),
                tls_verify: false,
                ca_certs: vec!["a.pem".into(), "b.pem".into()],
                rootfs: Some("/r".into()),
                copy: true,
                debug: false,
                policy: PullPolicy::Missing,
            }
        );
        assert!(args("x --root=/s").unwrap().tls_verify);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "x",
            "--root /s",
            "x --root /s --bogus",
            "x y --root /s",
            "x --root /s --tls-verify=maybe",
            "x --root /s --copy",
            "x --root",
            "x --root /s --pull=sometimes",
        ] {
            assert!(matches!(args(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }
}
