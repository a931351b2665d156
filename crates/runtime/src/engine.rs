//! One container from image to exit: its overlay root, volumes, /etc files,
//! runtime spec and bundle, then crun; and the cleanup after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{ContainerArgs, Dns, VolumeSource};
use b2c_oci::PulledImage;
use b2c_system::reaper::{ExitCode, Process};
use log::{info, warn};

use crate::crun;
use crate::spec::{runtime_spec, BindMount, ContainerPlan, HostFiles, SpecError};
use crate::stop::{self, Running};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Overlay(#[from] b2c_oci::OverlayError),
    #[error(transparent)]
    Spec(#[from] SpecError),
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

/// One container to run.
#[derive(Debug)]
pub struct Container<'a> {
    /// Unique for the boot: names the crun container and its directory.
    pub id: String,
    pub args: &'a ContainerArgs,
    pub image: &'a PulledImage,
    /// Variables read from `--env-file`.
    pub env_file: Vec<(String, String)>,
}

/// Where containers live and what they share with the host.
#[derive(Debug, Clone)]
pub struct Engine {
    /// One directory per container: overlay upper/work, rootfs, bundle.
    containers: PathBuf,
    /// Named volumes: one directory each, for the whole boot.
    volumes: PathBuf,
    /// The host's /etc, for resolv.conf, hostname and hosts.
    etc: PathBuf,
    hostname: String,
}

impl Engine {
    pub fn new(storage: &Path, etc: &Path, hostname: &str) -> Engine {
        // Ctrl-Alt-Del, SIGTERM…: whatever runs is stopped.
        stop::stop_on_request();
        Engine {
            containers: storage.join("containers"),
            volumes: storage.join("volumes"),
            etc: etc.to_path_buf(),
            hostname: hostname.to_string(),
        }
    }

    /// Runs a container in the foreground, sharing the console; returns its
    /// exit code.
    pub fn run(&self, c: &Container, env: &[(String, String)]) -> Result<i32, RunError> {
        let bundle = self.prepare(c, env)?;
        let code = crun::start(&bundle, &c.id).map(|process| {
            let _running = Running::add(&c.id, process.pid());
            process.wait()
        });
        self.cleanup(&bundle);
        Ok(code?.0)
    }

    /// Starts a container in the background, for `b2c.run_service`.
    pub fn start(&self, c: &Container, env: &[(String, String)]) -> Result<Service, RunError> {
        let bundle = self.prepare(c, env)?;
        match crun::spawn(&bundle, &c.id) {
            Ok(process) => Ok(Service {
                _running: Running::add(&c.id, process.pid()),
                id: c.id.clone(),
                bundle,
                process,
                engine: self.clone(),
            }),
            Err(e) => {
                self.cleanup(&bundle);
                Err(e.into())
            }
        }
    }

    fn prepare(&self, c: &Container, env: &[(String, String)]) -> Result<PathBuf, RunError> {
        let bundle = self.containers.join(&c.id);
        let (upper, work, rootfs) = (
            bundle.join("upper"),
            bundle.join("work"),
            bundle.join("rootfs"),
        );
        for dir in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        b2c_oci::mount_overlay(&c.image.layers, &upper, &work, &rootfs)?;
        let volumes = self.volumes(c.args)?;

        // Per-container files where the options ask for their own.
        let hostname_file = match &c.args.hostname {
            Some(name) => write(&bundle.join("hostname"), &format!("{name}\n"))?,
            None => self.etc.join("hostname"),
        };
        let resolv_conf = match &c.args.dns {
            None => Some(self.etc.join("resolv.conf")),
            Some(Dns::None) => None,
            Some(Dns::Servers(servers)) => {
                let text: String = servers
                    .iter()
                    .map(|s| format!("nameserver {s}\n"))
                    .collect();
                Some(write(&bundle.join("resolv.conf"), &text)?)
            }
        };
        let hosts = self.etc.join("hosts");
        let plan = ContainerPlan {
            args: c.args,
            image: &c.image.config,
            rootfs: &rootfs,
            hostname: c.args.hostname.as_deref().unwrap_or(&self.hostname),
            host_files: HostFiles {
                resolv_conf: resolv_conf.as_deref(),
                hostname: &hostname_file,
                hosts: &hosts,
            },
            volumes: &volumes,
            env_file: &c.env_file,
            extra_env: env,
        };
        let spec = runtime_spec(&plan, &c.id)?;
        let config = bundle.join("config.json");
        spec.save(&config)
            .map_err(|e| io(&config)(std::io::Error::other(e)))?;
        Ok(bundle)
    }

    /// Named volumes are created on first use and shared by every
    /// container that names them; host paths must exist.
    fn volumes(&self, args: &ContainerArgs) -> Result<Vec<BindMount>, RunError> {
        args.volumes
            .iter()
            .map(|v| {
                let source = match &v.source {
                    VolumeSource::Named(name) => {
                        let dir = self.volumes.join(name);
                        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                        dir
                    }
                    VolumeSource::HostPath(path) => {
                        if !Path::new(path).exists() {
                            return Err(RunError::MissingHostPath {
                                path: path.clone(),
                                destination: v.destination.clone(),
                            });
                        }
                        PathBuf::from(path)
                    }
                };
                Ok(BindMount {
                    source,
                    destination: v.destination.clone(),
                    read_only: v.read_only,
                })
            })
            .collect()
    }

    /// Frees what the container used: its overlay and its writable layer
    /// (RAM, when storage is tmpfs). Failures only warn: the pipeline goes on.
    fn cleanup(&self, bundle: &Path) {
        let rootfs = bundle.join("rootfs");
        if let Err(e) = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
            warn!("cannot unmount {}: {e}", rootfs.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(bundle) {
            warn!("cannot remove {}: {e}", bundle.display());
        }
    }
}

fn write(path: &Path, content: &str) -> Result<PathBuf, RunError> {
    std::fs::write(path, content).map_err(io(path))?;
    Ok(path.to_path_buf())
}

/// A container running in the background.
#[derive(Debug)]
pub struct Service {
    /// Until it is stopped: a stop request or a crash stops it.
    _running: Running,
    id: String,
    bundle: PathBuf,
    process: Process,
    engine: Engine,
}

impl Service {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`. Returns how it ended.
    pub fn stop(self, grace: Duration) -> ExitCode {
        let code = match self.process.wait_timeout(Duration::ZERO) {
            Some(code) => {
                // After a stop request, `stop` got to it first: no news.
                if b2c_system::signals::requested().is_none() {
                    warn!(
                        "service {} had already exited with status {}",
                        self.id, code.0
                    );
                }
                code
            }
            None => {
                crun::kill(&self.id, "TERM");
                match self.process.wait_timeout(grace) {
                    Some(code) => code,
                    None => {
                        info!("service {} ignored SIGTERM: killing it", self.id);
                        crun::kill(&self.id, "KILL");
                        self.process.wait_timeout(grace).unwrap_or(ExitCode(137))
                    }
                }
            }
        };
        self.engine.cleanup(&self.bundle);
        code
    }
}
