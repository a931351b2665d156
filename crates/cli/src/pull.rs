//! `b2c pull IMAGE --root DIR`: the initramfs's pull, on a workstation.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use b2c_oci::{LayerStore, PullPolicy, RegistryOptions, Trust};
use clap::{ArgAction, ValueEnum};

use crate::Failure;

/// `b2c pull`'s arguments, spelled as podman spells them.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The image: docker://host/name:tag, host/name@sha256:…, or a short
    /// name (alpine is docker.io/library/alpine:latest)
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The store: layers in DIR/layers (one directory each, reused by
    /// later pulls), blobs in DIR/blobs, image records in DIR/images
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Verify the registry's certificate; --tls-verify=false: HTTPS
    /// without certificate verification, or plain HTTP
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = ArgAction::Set,
    )]
    tls_verify: bool,
    /// Also trust the CA(s) in this PEM file (repeatable)
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
    /// Also assemble the merged root file system at DIR: an overlay mount
    /// (upper and work directories beside DIR, in DIR/..), or a copy where
    /// mounting is not possible
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// With --rootfs: always copy the layers, never mount
    #[arg(long, requires = "rootfs")]
    copy: bool,
    /// When to ask the registry (podman's --pull)
    #[arg(long = "pull", value_name = "POLICY", value_enum, default_value_t = Policy::Always)]
    policy: Policy,
    /// Also show the libraries' messages
    #[arg(long)]
    debug: bool,
}

/// podman's `--pull` values; b2c_oci's `PullPolicy` as the command spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    /// Ask the registry for the manifest and download what the store lacks
    Always,
    /// Use a stored image as is; pull only when the store has none
    Missing,
    /// Only ever use a stored image
    Never,
}

impl From<Policy> for PullPolicy {
    fn from(p: Policy) -> PullPolicy {
        match p {
            Policy::Always => PullPolicy::Always,
            Policy::Missing => PullPolicy::Missing,
            Policy::Never => PullPolicy::Never,
        }
    }
}

/// The bundled roots, and the CAs of `--ca-cert`.
pub fn trust_with(ca_certs: &[PathBuf]) -> Result<Trust, Failure> {
    let mut trust = Trust::bundled();
    for path in ca_certs {
        let pem = std::fs::read(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
        trust = trust
            .with_pem(&path.to_string_lossy(), &pem)
            .map_err(|e| Failure(e.to_string()))?;
    }
    Ok(trust)
}

pub fn run(args: Args) -> Result<(), Failure> {
    crate::init_logging(args.debug);
    let start = Instant::now();
    let reference = b2c_oci::parse_reference(&args.image).map_err(Failure::error)?;
    let trust = trust_with(&args.ca_certs)?;
    let options = RegistryOptions {
        tls_verify: args.tls_verify,
        trust,
        ..Default::default()
    };
    let root_error = |e: std::io::Error| Failure(format!("{}: {e}", args.root.display()));
    if LayerStore::is_foreign(&args.root).map_err(root_error)? {
        return Err(Failure(format!(
            "--root {}: the directory is not empty and is not a b2c image store (it has no \
             FORMAT file); b2c empties a store it cannot use, so give it a new or empty \
             directory",
            args.root.display()
        )));
    }
    let store = LayerStore::new(&args.root).map_err(root_error)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))?;
    let image = runtime
        .block_on(b2c_oci::pull(
            &reference,
            &options,
            &store,
            args.policy.into(),
        ))
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
///
/// The root of the result is mode 0700 (as podman's storage), whatever the
/// image says: its setuid binaries and device nodes must not be usable by
/// other users. For an overlay, the root of the mount is the upper
/// directory's, made 0700 here.
fn assemble(args: &Args, layers: &[PathBuf], rootfs: &Path) -> Result<(), Failure> {
    let private = |dir: &Path| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, Permissions::from_mode(0o700)))
            .map_err(|e| Failure(format!("{}: {e}", dir.display())))
    };
    private(rootfs)?;
    if !args.copy {
        let name = rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rootfs".into());
        let parent = rootfs.parent().unwrap_or(Path::new("."));
        let upper = parent.join(format!(".{name}.upper"));
        let work = parent.join(format!(".{name}.work"));
        private(&upper)?;
        private(&work)?;
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
        .map_err(|e| Failure(format!("copying the layers to {}: {e}", rootfs.display())))?;
    println!("rootfs: merged copy in {}", rootfs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Pull {
        #[command(flatten)]
        args: Args,
    }

    fn args(words: &str) -> Result<Args, clap::Error> {
        Pull::try_parse_from(std::iter::once("pull").chain(words.split_whitespace()))
            .map(|p| p.args)
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
                policy: Policy::Missing,
            }
        );
        assert!(args("x --root=/s").unwrap().tls_verify);
        assert!(args("x --root /s --tls-verify").unwrap().tls_verify);
        assert!(args("x --root /s --tls-verify=true").unwrap().tls_verify);
        // As the xtask bench writes it.
        let a = args("docker://r:5000/x:1 --tls-verify=false --root /s").unwrap();
        assert_eq!(
            (a.image.as_str(), a.tls_verify),
            ("docker://r:5000/x:1", false)
        );
        // Options before and after the image, values in the next word.
        let a = args("--pull never --debug --root /s x --tls-verify=false").unwrap();
        assert_eq!((a.image.as_str(), a.tls_verify), ("x", false));
        assert_eq!(PullPolicy::from(a.policy), PullPolicy::Never);
        assert!(a.debug);
        assert_eq!(
            PullPolicy::from(args("x --root /s").unwrap().policy),
            PullPolicy::default()
        );
    }

    #[test]
    fn the_rootfs_is_private_copied_or_mounted() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let layer = t.path().join("layer");
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::fs::write(layer.join("bin/su"), "su").unwrap();
        std::fs::set_permissions(layer.join("bin/su"), Permissions::from_mode(0o4755)).unwrap();
        std::fs::set_permissions(&layer, Permissions::from_mode(0o755)).unwrap();
        for copy in [true, false] {
            let rootfs = t.path().join(format!("rootfs-{copy}"));
            let mut a = args(&format!("x --root /s --rootfs {}", rootfs.display())).unwrap();
            a.copy = copy;
            assemble(&a, std::slice::from_ref(&layer), &rootfs).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
            assert_eq!(mode(&rootfs), 0o700, "copy: {copy}");
            assert_eq!(mode(&rootfs.join("bin/su")), 0o4755, "copy: {copy}");
            if !copy {
                rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty()).unwrap();
            }
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "x",
            "--root /s",
            "x --root /s --bogus",
            "x y --root /s",
            "x --root /s --tls-verify=maybe",
            // podman's spelling: a bare --tls-verify never takes the next word.
            "x --root /s --tls-verify false",
            "x --root /s --copy",
            "x --root",
            "x --root /s --pull=sometimes",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }
}
