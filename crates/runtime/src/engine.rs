//! One container from image to exit: its overlay root, volumes, /etc
//! files, runtime spec and bundle, then crun; and the cleanup after it,
//! which a guard runs on every path, errors included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{ContainerArgs, ContainerPlan, Dns, Layout, Namespace, VolumePlan};
use b2c_oci::PulledImage;
use b2c_system::reaper::ExitCode;
use log::{info, warn};

use crate::console::Stdio;
use crate::host::{Host, Launch, OverlayDirs};
use crate::servicelog::TAIL_LINES;
use crate::spec::{runtime_spec, user_spec, HostFiles, SpecError, SpecInputs};
use crate::stop::StopPolicy;
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
    #[error("device {0} does not exist on the host (check --device in b2c.run)")]
    MissingDevice(String),
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
        let code = self.host.run(&launch(&bundle.dir, c))?;
        Ok(code.0)
    }

    /// Starts a container in the background, for `b2c.run_service`: its
    /// output goes to its log ([`Layout::log`]), not to the console.
    pub fn start(&self, c: &ContainerPlan, inputs: &Inputs) -> Result<Service<'h, H>, RunError> {
        let bundle = self.prepare(c, inputs)?;
        let logs = self.layout.logs();
        self.host.create_dir_all(&logs).map_err(io(&logs))?;
        let log = self.layout.log(&c.id);
        let launch = Launch {
            log: Some(&log),
            ..launch(&bundle.dir, c)
        };
        let process = self.host.spawn(&launch)?;
        let stop = launch.stop;
        if !launch.stdio.tty {
            info!("{}'s output goes to {}", c.id, log.display());
        }
        Ok(Service {
            id: c.id.to_string(),
            name: c.name().to_string(),
            log,
            process,
            ended: None,
            stop,
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

        self.devices(&c.args)?;

        // Per-container files where the options ask for their own.
        let args = &c.args;
        let hostname_file = match (&args.hostname, &args.namespaces.uts) {
            (Some(name), ns) if *ns != Namespace::Host => {
                self.write(&bundle.dir.join("hostname"), &format!("{name}\n"))?
            }
            _ => self.etc.join("hostname"),
        };
        let resolv_conf = self.resolv_conf(args, &bundle.dir)?;
        let hosts = self.hosts(args, &bundle.dir)?;
        let config = &inputs.image.config;
        let rootfs = &dirs.rootfs;
        let user = self
            .host
            .resolve_user(&user_spec(args, config), &args.group_add, rootfs)?;
        for v in c.volumes.iter().filter(|v| v.chown) {
            self.host
                .chown_tree(&v.source, user.uid, user.gid)
                .map_err(io(&v.source))?;
        }
        let init = args.init.then(|| {
            args.init_path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| self.host.init_binary())
        });
        let host_env = self.host.environment();
        let hostname = match (&args.hostname, &args.namespaces.uts) {
            (Some(name), ns) if *ns != Namespace::Host => name.as_str(),
            _ => &self.hostname,
        };
        let spec = runtime_spec(
            &SpecInputs {
                args,
                image: config,
                rootfs,
                hostname,
                host_files: HostFiles {
                    resolv_conf: resolv_conf.as_deref(),
                    hostname: &hostname_file,
                    hosts: hosts.as_deref(),
                },
                volumes: &c.volumes,
                user: &user,
                env_file: &inputs.env_file,
                extra_env: &inputs.env,
                host_env: &host_env,
                init: init.as_deref(),
            },
            c.id.as_str(),
        )?;
        let json = serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other);
        let path = bundle.dir.join("config.json");
        json.and_then(|json| self.host.write(&path, &json))
            .map_err(io(&path))?;
        Ok(bundle)
    }

    /// `--device`: the host's node must exist (podman refuses to start
    /// the container otherwise).
    fn devices(&self, args: &ContainerArgs) -> Result<(), RunError> {
        match args
            .devices
            .iter()
            .find(|d| !self.host.exists(Path::new(&d.host)))
        {
            Some(d) => Err(RunError::MissingDevice(d.host.clone())),
            None => Ok(()),
        }
    }

    /// The host's resolv.conf, or the container's own: `--dns` servers,
    /// `--dns-search` domains (`.` for none) and `--dns-option`s replace
    /// the host's lines of that kind; `--dns=none` keeps the image's.
    fn resolv_conf(
        &self,
        args: &ContainerArgs,
        bundle: &Path,
    ) -> Result<Option<PathBuf>, RunError> {
        let host = self.etc.join("resolv.conf");
        if matches!(args.dns, Some(Dns::None)) {
            return Ok(None);
        }
        if args.dns.is_none() && args.dns_search.is_empty() && args.dns_options.is_empty() {
            return Ok(Some(host));
        }
        let base = String::from_utf8_lossy(&self.host.read(&host).unwrap_or_default()).into_owned();
        let kind = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
        let mut text = String::new();
        match &args.dns {
            Some(Dns::Servers(servers)) => {
                for s in servers {
                    text.push_str(&format!("nameserver {s}\n"));
                }
            }
            _ => {
                for line in base.lines().filter(|l| kind(l) == "nameserver") {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        let search: Vec<&str> = args
            .dns_search
            .iter()
            .map(String::as_str)
            .filter(|d| *d != ".")
            .collect();
        if args.dns_search.is_empty() {
            for line in base
                .lines()
                .filter(|l| matches!(kind(l).as_str(), "search" | "domain"))
            {
                text.push_str(line);
                text.push('\n');
            }
        } else if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        if args.dns_options.is_empty() {
            for line in base.lines().filter(|l| kind(l) == "options") {
                text.push_str(line);
                text.push('\n');
            }
        } else {
            text.push_str(&format!("options {}\n", args.dns_options.join(" ")));
        }
        Ok(Some(self.write(&bundle.join("resolv.conf"), &text)?))
    }

    /// The host's /etc/hosts; with `--add-host`, the container's own copy
    /// with those entries first; none with `--no-hosts`.
    fn hosts(&self, args: &ContainerArgs, bundle: &Path) -> Result<Option<PathBuf>, RunError> {
        let host = self.etc.join("hosts");
        if args.no_hosts {
            return Ok(None);
        }
        if args.add_hosts.is_empty() {
            return Ok(Some(host));
        }
        let mut text: String = args
            .add_hosts
            .iter()
            .map(|(name, ip)| format!("{ip}\t{name}\n"))
            .collect();
        text.push_str(&String::from_utf8_lossy(
            &self.host.read(&host).unwrap_or_default(),
        ));
        Ok(Some(self.write(&bundle.join("hosts"), &text)?))
    }

    /// Named volumes are created on first use and shared by every
    /// container that names them; host paths must exist.
    fn volumes(&self, volumes: &[VolumePlan]) -> Result<(), RunError> {
        for v in volumes.iter().filter(|v| v.filesystem.is_none()) {
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

/// How crun starts container `c`.
fn launch<'a>(bundle: &'a Path, c: &'a ContainerPlan) -> Launch<'a> {
    Launch {
        bundle,
        id: c.id.as_str(),
        stdio: Stdio::of(&c.args),
        stop: StopPolicy::of(&c.args),
        log: None,
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
    /// `--stop-signal` and `--stop-timeout`.
    stop: StopPolicy,
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

    /// Stops it: its stop signal (SIGTERM unless `--stop-signal`), then
    /// SIGKILL after its `--stop-timeout`, else `grace`. Returns how it
    /// ended.
    pub fn stop(mut self, grace: Duration) -> ExitCode {
        let host = self._bundle.host;
        if let Some(code) = self.check() {
            return code;
        }
        let grace = self.stop.grace(grace);
        host.kill(&self.id, &self.stop.signal);
        if let Some(code) = host.wait_timeout(&self.process, grace) {
            return code;
        }
        info!(
            "service {} ignored SIG{}: killing it",
            self.id, self.stop.signal
        );
        host.kill(&self.id, "KILL");
        host.wait_timeout(&self.process, grace)
            .unwrap_or(ExitCode(137))
    }
}
