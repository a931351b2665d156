//! Named volumes (`b2c.volume`) and their sync with S3 (`b2c.minio`),
//! as boot2container does it with `mc mirror`:
//!
//! - [`setup`] (storage phase): volumes that expired are deleted (never
//!   one that still owes a push), declared ones are created, mounted from
//!   their `b2c.filesystem`, encrypted with their `fscrypt_key`, and a push
//!   an earlier boot could not finish is done first;
//! - [`VolumeSet::event`] at `pipeline_start`, `container_start`,
//!   `container_end`: pulls, then pushes, of the volumes that asked;
//! - [`VolumeSet::start_watchers`] for `push_on=changes`;
//! - [`VolumeSet::finish`] after the pipeline: the final push, then the
//!   volumes with `expiration=pipeline_end` are deleted.
//!
//! A volume owes a push from the moment one starts until one succeeds: a
//! marker in [`b2c_cmdline::Layout::volume_state`] says so across boots
//! (a server down at the end, a machine cut off mid-push), so nothing a
//! job wrote is lost.
//!
//! Returns what happened; the init decides what it means for the boot.

pub mod fscrypt;
pub mod mirror;
pub mod s3;
pub mod sync;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use b2c_cmdline::{
    BootPlan, Expiration, Filesystem, MinioAlias, NamedVolume, Proxy, Remote, SyncEvent,
};
use b2c_net::http::{RetryPolicy, Trust};
use log::{error, info, warn};

use s3::S3Client;
use sync::{Bucket, PushMode, SyncError};

/// Each S3 request: 4 attempts, 2 s, 4 s then 8 s apart (about 15 s when
/// the server is down), or what the server's `Retry-After` says.
pub const RETRY: RetryPolicy = RetryPolicy {
    attempts: 4,
    first_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(8),
    give_up_after: None,
};

/// Why the volumes could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {problem}")]
    Setup { volume: String, problem: String },
    #[error(transparent)]
    Sync(#[from] Box<SyncError>),
}

/// The declared volumes of a boot, ready for the pipeline's events.
pub struct VolumeSet {
    volumes: Vec<Managed>,
    state: PathBuf,
}

struct Managed {
    spec: NamedVolume,
    /// For syncing volumes: the pull side, then the push side.
    pull: Option<(Arc<S3Client>, Remote)>,
    push: Option<(Arc<S3Client>, Remote)>,
    watcher: Option<watch::Watcher>,
    /// Pulls are skipped while a push of an earlier boot is still owed:
    /// they could replace files the bucket has not seen yet.
    owes_old_push: bool,
}

/// What [`setup`] needs besides the plan: how to reach the endpoints.
pub struct Reach<'a> {
    pub trust: &'a Trust,
    pub proxy: &'a Proxy,
    pub retry: RetryPolicy,
}

/// Sets up every `b2c.volume` of `plan` (see the module's documentation).
pub async fn setup(plan: &BootPlan, reach: &Reach<'_>) -> Result<VolumeSet, VolumeError> {
    let state = plan.layout.volume_state();
    let state_err = |e: std::io::Error| VolumeError::Setup {
        volume: "*".into(),
        problem: format!("{}: {e}", state.display()),
    };
    std::fs::create_dir_all(&state).map_err(state_err)?;
    remove_expired(&plan.layout.volumes(), &state);
    let mut volumes = Vec::new();
    for spec in &plan.volumes {
        volumes.push(prepare(
            spec,
            &plan.minio,
            &plan.storage.filesystems,
            reach,
            &state,
        )?);
    }
    let set = VolumeSet { volumes, state };
    for v in &set.volumes {
        if v.owes_old_push {
            let Some((client, remote)) = &v.push else {
                warn!(
                    "volume {}: an earlier boot could not push it, and this boot has nowhere \
                     to push it: kept as it is",
                    v.spec.name()
                );
                continue;
            };
            info!(
                "volume {}: pushing what an earlier boot could not push",
                v.spec.name()
            );
            if let Err(e) = set.push(v, client, remote, PushMode::Mirror).await {
                error!("{e}");
            }
        }
    }
    Ok(set)
}

fn prepare(
    spec: &NamedVolume,
    minio: &[MinioAlias],
    filesystems: &[Filesystem],
    reach: &Reach<'_>,
    state: &Path,
) -> Result<Managed, VolumeError> {
    let name = spec.name();
    let bad = |problem: String| VolumeError::Setup {
        volume: name.to_string(),
        problem,
    };
    let dir = &spec.path;
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    if let Some(fs_name) = &spec.options.filesystem {
        let fs = filesystems
            .iter()
            .find(|f| &f.name == fs_name)
            .ok_or_else(|| bad(format!("no b2c.filesystem is named {fs_name}")))?;
        crate::mount_filesystem(fs, dir).map_err(|e| bad(e.to_string()))?;
        info!(
            "volume {name}: b2c.filesystem {fs_name} mounted on {}",
            dir.display()
        );
    }
    match &spec.options.fscrypt_key {
        Some(key) => {
            let outcome = fscrypt::encrypt_dir(dir, key, spec.options.fscrypt_reset_key)
                .map_err(|e| bad(e.to_string()))?;
            info!(
                "volume {name}: fscrypt-encrypted ({})",
                match outcome {
                    fscrypt::Encrypted::AsBefore => "unlocked with its key",
                    fscrypt::Encrypted::New => "new",
                    fscrypt::Encrypted::Emptied =>
                        "its earlier content, unreadable with this key, was deleted",
                }
            );
        }
        // Not encrypted, or a filesystem that cannot be (tmpfs): fine.
        None => {
            if fscrypt::is_encrypted(dir).unwrap_or(false) {
                return Err(bad(
                    fscrypt::FscryptError::NoKey(dir.display().to_string()).to_string()
                ));
            }
        }
    }
    sync::remove_partials(dir);
    let expires = state.join(format!("{name}.expires"));
    let marked = match spec.options.expiration {
        Expiration::PipelineEnd => std::fs::write(&expires, b""),
        Expiration::Never => std::fs::remove_file(&expires).or_else(not_found_is_fine),
    };
    marked.map_err(|e| bad(format!("{}: {e}", expires.display())))?;
    let client = |remote: &Remote| -> Result<(Arc<S3Client>, Remote), VolumeError> {
        let endpoint = minio
            .iter()
            .find(|m| m.alias == remote.alias)
            .ok_or_else(|| bad(format!("no b2c.minio declares the alias {}", remote.alias)))?;
        let client = S3Client::new(
            endpoint,
            &remote.bucket,
            spec.options.encrypt_key.as_ref(),
            reach.trust,
            reach.proxy,
            reach.retry.clone(),
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok((Arc::new(client), remote.clone()))
    };
    let (pull, push) = match (spec.syncs, &spec.options.pull_from, &spec.options.push_to) {
        (true, Some(from), Some(to)) => (Some(client(from)?), Some(client(to)?)),
        _ => (None, None),
    };
    Ok(Managed {
        owes_old_push: owed_marker(state, name).exists(),
        spec: spec.clone(),
        pull,
        push,
        watcher: None,
    })
}

fn not_found_is_fine(e: std::io::Error) -> std::io::Result<()> {
    match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

fn owed_marker(state: &Path, name: &str) -> PathBuf {
    state.join(format!("{name}.push-owed"))
}

/// Deletes the volumes an earlier boot marked `expiration=pipeline_end`
/// and did not delete (a crash), unless they still owe a push.
fn remove_expired(volumes: &Path, state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".expires") else {
            continue;
        };
        if !b2c_cmdline::valid_volume_name(name) {
            continue;
        }
        if owed_marker(state, name).exists() {
            warn!("volume {name}: expired, but kept: its last push did not complete");
            continue;
        }
        delete_volume(&volumes.join(name), name);
        let _ = std::fs::remove_file(entry.path());
    }
}

fn delete_volume(dir: &Path, name: &str) {
    crate::mount::unmount(dir);
    match std::fs::remove_dir_all(dir).or_else(not_found_is_fine) {
        Ok(()) => info!("volume {name}: deleted (expiration=pipeline_end)"),
        Err(e) => warn!("volume {name}: cannot delete {}: {e}", dir.display()),
    }
}

impl VolumeSet {
    /// The pulls then the pushes that `event` triggers, volume by volume.
    /// Returns the first failure (the others are logged as ERRORs too).
    pub async fn event(&self, event: SyncEvent) -> Result<(), SyncError> {
        let mut first = None;
        for v in &self.volumes {
            let o = &v.spec.options;
            if o.pull_on.contains(&event) {
                if let Err(e) = self.pull(v).await {
                    error!("{e}");
                    first.get_or_insert(e);
                }
            }
            if o.push_on.contains(&event) {
                if let Some((client, remote)) = &v.push {
                    if let Err(e) = self.push(v, client, remote, PushMode::Mirror).await {
                        error!("{e}");
                        first.get_or_insert(e);
                    }
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn pull(&self, v: &Managed) -> Result<(), SyncError> {
        let Some((client, remote)) = &v.pull else {
            return Ok(());
        };
        if v.owes_old_push && owed_marker(&self.state, v.spec.name()).exists() {
            warn!(
                "volume {}: not pulled: a push of an earlier boot is still owed",
                v.spec.name()
            );
            return Ok(());
        }
        sync::pull(&v.spec.options, &v.spec.path, &Bucket::new(client, remote))
            .await
            .map(drop)
    }

    async fn push(
        &self,
        v: &Managed,
        client: &S3Client,
        remote: &Remote,
        mode: PushMode,
    ) -> Result<(), SyncError> {
        let owed = owed_marker(&self.state, v.spec.name());
        if let Err(e) = std::fs::write(&owed, remote.to_string()) {
            warn!("volume {}: {}: {e}", v.spec.name(), owed.display());
        }
        sync_file(&owed);
        sync_volume(&v.spec.path).await;
        sync::push(
            &v.spec.options,
            &v.spec.path,
            &Bucket::new(client, remote),
            mode,
        )
        .await?;
        let _ = std::fs::remove_file(&owed);
        Ok(())
    }

    /// `push_on=changes`: a watcher per volume pushes what changed while
    /// the containers run. The volume owes a push from now on.
    pub fn start_watchers(&mut self) {
        for v in &mut self.volumes {
            if !v.spec.options.push_on_changes {
                continue;
            }
            let Some((client, remote)) = &v.push else {
                continue;
            };
            let owed = owed_marker(&self.state, v.spec.name());
            let _ = std::fs::write(&owed, remote.to_string());
            sync_file(&owed);
            match watch::Watcher::start(
                v.spec.options.clone(),
                v.spec.path.clone(),
                client.clone(),
                remote.clone(),
            ) {
                Ok(w) => {
                    info!(
                        "volume {}: pushing changes to {remote} as they happen",
                        v.spec.name()
                    );
                    v.watcher = Some(w);
                }
                Err(e) => warn!(
                    "volume {}: cannot watch for changes ({e}): pushed at pipeline_end only",
                    v.spec.name()
                ),
            }
        }
    }

    /// After the pipeline: watchers stopped, the `pipeline_end` pulls and
    /// pushes (and the final push of `push_on=changes`), then the expired
    /// volumes deleted, unless their push failed. `false` when a sync
    /// failed (each failure is an ERROR line naming the volume).
    pub async fn finish(&mut self) -> bool {
        for v in &mut self.volumes {
            if let Some(w) = v.watcher.take() {
                w.stop().await;
            }
        }
        let mut ok = true;
        for v in &self.volumes {
            let o = &v.spec.options;
            if o.pull_on.contains(&SyncEvent::PipelineEnd) {
                if let Err(e) = self.pull(v).await {
                    error!("{e}");
                    ok = false;
                }
            }
            if o.push_on.contains(&SyncEvent::PipelineEnd) || o.push_on_changes {
                if let Some((client, remote)) = &v.push {
                    if let Err(e) = self.push(v, client, remote, PushMode::Mirror).await {
                        error!("{e}");
                        ok = false;
                    }
                }
            }
        }
        for v in &self.volumes {
            if v.spec.options.expiration != Expiration::PipelineEnd {
                continue;
            }
            let name = v.spec.name();
            if owed_marker(&self.state, name).exists() {
                warn!(
                    "volume {name}: kept despite expiration=pipeline_end: its push did not \
                     complete; the next boot that declares it pushes it"
                );
                continue;
            }
            delete_volume(&v.spec.path, name);
            let _ = std::fs::remove_file(self.state.join(format!("{name}.expires")));
        }
        ok
    }

    /// Whether any volume syncs on `event` (to skip the work otherwise).
    pub fn wants(&self, event: SyncEvent) -> bool {
        self.volumes.iter().any(|v| {
            v.push.is_some()
                && (v.spec.options.pull_on.contains(&event)
                    || v.spec.options.push_on.contains(&event))
        })
    }
}

/// The next boot pushes what the volume holds on the disk: what this push
/// sends must be there too should the machine be cut off before the push
/// completes. Written files may otherwise sit in memory for half a minute
/// (ext4's delayed allocation leaves them empty after a power cut).
/// Unmounting a container's overlay syncs the cache's filesystem (its
/// upper layer's), which covered the volumes on the cache, but not one on
/// its own `b2c.filesystem`.
async fn sync_volume(dir: &Path) {
    let path = dir.to_path_buf();
    let synced = tokio::task::spawn_blocking(move || {
        let dir = std::fs::File::open(&path)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
    })
    .await;
    if let Ok(Err(e)) = synced {
        warn!("{}: cannot sync it to its disk: {e}", dir.display());
    }
}

/// The marker must survive a power cut right after.
fn sync_file(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
}
