//! One container from image to exit: its overlay root, volumes, /etc
//! files, runtime spec and bundle, then crun; and the cleanup after it,
//! which a guard runs on every path, errors included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{ContainerPlan, Dns, Layout, VolumePlan};
use b2c_oci::PulledImage;
use b2c_system::reaper::ExitCode;
use log::{info, warn};

use crate::host::{Host, OverlayDirs};
use crate::servicelog::TAIL_LINES;
use crate::spec::{runtime_spec, user_spec, HostFiles, SpecError, SpecInputs};
use crate::user::UserError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Overlay(#[from] b2c_oci::OverlayError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "volume {path}:{destination}: {path} does not exist on the host (check -v in b2c.run)"
    )]
    MissingHostPath { path: String, destination: String },
    #[error(transparent)]
    Crun(#[from] b2c_system::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a container is made of, besides its plan.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub image: &'a PulledImage,
    /// Variables read from its `--env-file`s, in order.
    pub env_file: Vec<(String, String)>,
    /// The pipeline's variables, set last.
    pub env: Vec<(String, String)>,
}

/// Where containers live and what they share with the host.
pub struct Engine<'h, H: Host> {
    host: &'h H,
    layout: Layout,
    /// The host's /etc, for resolv.conf, hostname and hosts.
    etc: PathBuf,
    hostname: String,
}

impl<'h, H: Host> Engine<'h, H> {
    pub fn new(host: &'h H, layout: &Layout, etc: &Path, hostname: &str) -> Self {
        Engine {
            host,
            layout: layout.clone(),
            etc: etc.to_path_buf(),
            hostname: hostname.to_string(),
        }
    }

    /// Runs a container in the foreground, sharing the console; returns its
    /// exit code.
    pub fn run(&self, c: &ContainerPlan, inputs: &Inputs) -> Result<i32, RunError> {
        let bundle = self.prepare(c, inputs)?;
        let code = self.host.run(&bundle.dir, c.id.as_str())?;
        Ok(code.0)
    }

    /// Starts a container in the background, for `b2c.run_service`: its
    /// output goes to its log ([`Layout::log`]), not to the console.
    pub fn start(&self, c: &ContainerPlan, inputs: &Inputs) -> Result<Service<'h, H>, RunError> {
        let bundle = self.prepare(c, inputs)?;
        let logs = self.layout.logs();
        self.host.create_dir_all(&logs).map_err(io(&logs))?;
        let log = self.layout.log(&c.id);
        let process = self.host.spawn(&bundle.dir, c.id.as_str(), &log)?;
        info!("{}'s output goes to {}", c.id, log.display());
        Ok(Service {
            id: c.id.to_string(),
            name: c.name().to_string(),
            log,
            process,
            ended: None,
            _bundle: bundle,
        })
    }

    fn prepare(&self, c: &ContainerPlan, inputs: &Inputs) -> Result<Bundle<'h, H>, RunError> {
        let mut bundle = Bundle {
            host: self.host,
            dir: self.layout.container(&c.id),
            mounted: false,
        };
        let dirs = OverlayDirs::in_bundle(&bundle.dir);
        for dir in [&dirs.upper, &dirs.work, &dirs.rootfs] {
            self.host.create_dir_all(dir).map_err(io(dir))?;
        }
        self.host.mount_overlay(&inputs.image.layers, &dirs)?;
        // From here on, dropping the bundle unmounts it.
        bundle.mounted = true;
        self.volumes(&c.volumes)?;

        // Per-container files where the options ask for their own.
        let args = &c.args;
        let hostname_file = match &args.hostname {
            Some(name) => self.write(&bundle.dir.join("hostname"), &format!("{name}\n"))?,
            None => self.etc.join("hostname"),
        };
        let resolv_conf = match &args.dns {
            None => Some(self.etc.join("resolv.conf")),
            Some(Dns::None) => None,
            Some(Dns::Servers(servers)) => {
                let text: String = servers
                    .iter()
                    .map(|s| format!("nameserver {s}\n"))
                    .collect();
                Some(self.write(&bundle.dir.join("resolv.conf"), &text)?)
            }
        };
        let hosts = self.etc.join("hosts");
        let config = &inputs.image.config;
        let rootfs = &dirs.rootfs;
        let user = self.host.resolve_user(&user_spec(args, config), rootfs)?;
        let spec = runtime_spec(
            &SpecInputs {
                args,
                image: config,
                rootfs,
                hostname: args.hostname.as_deref().unwrap_or(&self.hostname),
                host_files: HostFiles {
                    resolv_conf: resolv_conf.as_deref(),
                    hostname: &hostname_file,
                    hosts: &hosts,
                },
                volumes: &c.volumes,
                user,
                env_file: &inputs.env_file,
                extra_env: &inputs.env,
            },
            c.id.as_str(),
        )?;
        let json = serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other);
        let path = bundle.dir.join("config.json");
        json.and_then(|json| self.host.write(&path, &json))
            .map_err(io(&path))?;
        Ok(bundle)
    }

    /// Named volumes are created on first use and shared by every
    /// container that names them; host paths must exist.
    fn volumes(&self, volumes: &[VolumePlan]) -> Result<(), RunError> {
        for v in volumes {
            if v.named {
                self.host.create_dir_all(&v.source).map_err(io(&v.source))?;
            } else if !self.host.exists(&v.source) {
                return Err(RunError::MissingHostPath {
                    path: v.source.display().to_string(),
                    destination: v.destination.clone(),
                });
            }
        }
        Ok(())
    }

    fn write(&self, path: &Path, content: &str) -> Result<PathBuf, RunError> {
        self.host
            .write(path, content.as_bytes())
            .map_err(io(path))?;
        Ok(path.to_path_buf())
    }
}

/// A container's directory, and its overlay once mounted: dropping it
/// frees both (RAM, when storage is tmpfs), whatever happened before.
/// Failures only warn: the pipeline goes on.
struct Bundle<'h, H: Host> {
    host: &'h H,
    dir: PathBuf,
    mounted: bool,
}

impl<H: Host> Drop for Bundle<'_, H> {
    fn drop(&mut self) {
        if self.mounted {
            let rootfs = OverlayDirs::in_bundle(&self.dir).rootfs;
            if let Err(e) = self.host.unmount(&rootfs) {
                // Removing files below a mount would remove the image's.
                warn!("cannot unmount {}: {e}", rootfs.display());
                return;
            }
        }
        if let Err(e) = self.host.remove_dir_all(&self.dir) {
            warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// A container running in the background.
pub struct Service<'h, H: Host> {
    id: String,
    /// Its image, for messages.
    name: String,
    log: PathBuf,
    process: H::Process,
    /// How it ended by itself, once noticed (and reported).
    ended: Option<ExitCode>,
    // Dropped last: the container must be gone before its root is.
    _bundle: Bundle<'h, H>,
}

impl<H: Host> Service<'_, H> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it ended by itself; says so on the console the first time,
    /// with the end of its log when it failed.
    pub fn check(&mut self) -> Option<ExitCode> {
        if self.ended.is_none() {
            let code = self
                ._bundle
                .host
                .wait_timeout(&self.process, Duration::ZERO)?;
            self.ended = Some(code);
            // After a stop request, the engine got to it first: no news.
            if b2c_system::signals::requested().is_none() {
                self.report(code);
            }
        }
        self.ended
    }

    fn report(&self, code: ExitCode) {
        if code.0 == 0 {
            info!("service {} ({}) exited with status 0", self.id, self.name);
            return;
        }
        warn!(
            "service {} ({}) exited with status {}; the end of its log {}:",
            self.id,
            self.name,
            code.0,
            self.log.display()
        );
        match self._bundle.host.log_tail(&self.log, TAIL_LINES) {
            Ok(lines) if lines.is_empty() => info!("{}| (nothing)", self.id),
            Ok(lines) => lines.iter().for_each(|l| info!("{}| {l}", self.id)),
            Err(e) => warn!("cannot read {}: {e}", self.log.display()),
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`. Returns how it ended.
    pub fn stop(mut self, grace: Duration) -> ExitCode {
        let host = self._bundle.host;
        if let Some(code) = self.check() {
            return code;
        }
        host.kill(&self.id, "TERM");
        if let Some(code) = host.wait_timeout(&self.process, grace) {
            return code;
        }
        info!("service {} ignored SIGTERM: killing it", self.id);
        host.kill(&self.id, "KILL");
        host.wait_timeout(&self.process, grace)
            .unwrap_or(ExitCode(137))
    }
}
