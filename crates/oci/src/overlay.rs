//! Assembling a container root from unpacked layers with overlayfs.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::MountFlags;

/// mount(2) copies at most one page of options, NUL included; 4 KiB is the
/// smallest page Linux runs with.
const MAX_OPTIONS: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("an overlay needs at least one layer")]
    NoLayers,
    #[error("preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the overlay mount options for {layers} layers take {len} bytes, more than the \
         kernel's limit of {MAX_OPTIONS}"
    )]
    TooManyLayers { layers: usize, len: usize },
    #[error("mounting the overlay on {target}: {source} (options: {options})")]
    Mount {
        target: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
}

/// Mounts an overlay of `layers` (bottom → top, as in
/// [`crate::PulledImage::layers`]; all read-only) with `upper` and `work` as
/// the writable part, on `target`. `upper`, `work` and `target` are created
/// if missing; `upper` and `work` must be on the same filesystem.
///
/// Plain paths are used when they fit in the one page of mount options and
/// need no escaping; otherwise every directory is passed as
/// `/proc/self/fd/N` (about 17 bytes each, whatever the real path), which
/// needs /proc mounted. A layer repeated in the list is kept only at its
/// topmost position: the view is the same, and overlayfs may refuse
/// duplicates.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), OverlayError> {
    if layers.is_empty() {
        return Err(OverlayError::NoLayers);
    }
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(|source| OverlayError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut seen = HashSet::new();
    let lowers: Vec<&Path> = layers
        .iter()
        .rev()
        .filter(|p| seen.insert(p.as_path()))
        .map(PathBuf::as_path)
        .collect();

    // Kept open until mount(2) has resolved the /proc/self/fd paths.
    let mut fds = Vec::new();
    let options = match plain_options(&lowers, upper, work) {
        Some(o) => o,
        None => fd_options(&lowers, upper, work, &mut fds)?,
    };
    log::debug!("mounting overlay on {}: {options}", target.display());
    let data = CString::new(options.clone()).expect("paths have no NUL");
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| OverlayError::Mount {
        target: target.to_path_buf(),
        options,
        source: e.into(),
    })?;
    drop(fds);
    Ok(())
}

fn options(lowers: &[String], upper: &str, work: &str) -> String {
    format!(
        "lowerdir={},upperdir={upper},workdir={work}",
        lowers.join(":")
    )
}

/// Options with the real paths, if they need no escaping and fit.
fn plain_options(lowers: &[&Path], upper: &Path, work: &Path) -> Option<String> {
    let plain = |p: &Path| {
        let s = p.to_str()?;
        (!s.contains([':', ',', '\\'])).then(|| s.to_string())
    };
    let lowers = lowers
        .iter()
        .map(|p| plain(p))
        .collect::<Option<Vec<_>>>()?;
    let o = options(&lowers, &plain(upper)?, &plain(work)?);
    (o.len() <= MAX_OPTIONS).then_some(o)
}

fn fd_options(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    fds: &mut Vec<OwnedFd>,
) -> Result<String, OverlayError> {
    let mut fd_path = |p: &Path| -> Result<String, OverlayError> {
        let fd = rustix::fs::openat(
            CWD,
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| OverlayError::Prepare {
            path: p.to_path_buf(),
            source: e.into(),
        })?;
        let s = format!("/proc/self/fd/{}", fd.as_raw_fd());
        fds.push(fd);
        Ok(s)
    };
    let lower_strs = lowers
        .iter()
        .map(|p| fd_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let o = options(&lower_strs, &fd_path(upper)?, &fd_path(work)?);
    if o.len() > MAX_OPTIONS {
        return Err(OverlayError::TooManyLayers {
            layers: lowers.len(),
            len: o.len(),
        });
    }
    Ok(o)
}

#[cfg(test)]
pub(crate) fn would_use_plain_paths(layers: &[PathBuf], upper: &Path, work: &Path) -> bool {
    let lowers: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    plain_options(&lowers, upper, work).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_when_they_fit() {
        let layers: Vec<PathBuf> = (0..3).map(|i| PathBuf::from(format!("/s/l{i}"))).collect();
        assert!(would_use_plain_paths(
            &layers,
            Path::new("/u"),
            Path::new("/w")
        ));
        let lowers: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
        assert_eq!(
            plain_options(&lowers, Path::new("/u"), Path::new("/w")).unwrap(),
            "lowerdir=/s/l2:/s/l1:/s/l0,upperdir=/u,workdir=/w"
        );
        // Separators in a path, or too many long paths: fd paths instead.
        assert!(!would_use_plain_paths(
            &[PathBuf::from("/a:b")],
            Path::new("/u"),
            Path::new("/w")
        ));
        assert!(!would_use_plain_paths(
            &[PathBuf::from("/a")],
            Path::new("/u,x"),
            Path::new("/w")
        ));
        let many: Vec<PathBuf> = (0..80)
            .map(|i| PathBuf::from(format!("/var/cache/b2c/layers/sha256-{i:064}")))
            .collect();
        assert!(!would_use_plain_paths(
            &many,
            Path::new("/u"),
            Path::new("/w")
        ));
    }
}
