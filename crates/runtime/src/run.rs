//! The pipeline loop: services in the background, the `b2c.run`
//! containers in order, then the post containers, then the services stop.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use b2c_cmdline::{BootPlan, ContainerPlan, DebugPanic, Stage};
use b2c_oci::PulledImage;
use b2c_system::signals::{self, StopRequest};
use log::{error, info};

use crate::engine::{Engine, Inputs, Service};
use crate::host::Host;
use crate::pipeline::{ContainerEnd, Pipeline, PipelineStatus, ShutdownMode, EXIT_TIMED_OUT};

/// How long a service gets between SIGTERM and SIGKILL.
const SERVICE_GRACE: Duration = Duration::from_secs(5);

/// What was fetched before the pipeline, by the plan's ids.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// By [`b2c_cmdline::ImageId`].
    pub images: &'a [PulledImage],
    /// The `KEY=VALUE` pairs of each env file, by [`b2c_cmdline::EnvFileId`].
    pub env_files: &'a [Vec<(String, String)>],
}

/// How the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: PipelineStatus,
    pub mode: ShutdownMode,
}

impl Outcome {
    /// The end of a boot whose setup failed before the pipeline.
    pub fn setup_failed() -> Outcome {
        Outcome {
            status: PipelineStatus::SetupFailed,
            mode: ShutdownMode::Default,
        }
    }
}

/// Where the pipeline runs: the host, its /etc and the host name the
/// containers get unless they ask for their own.
pub struct Site<'a, H: Host> {
    pub host: &'a H,
    pub etc: &'a Path,
    pub hostname: &'a str,
}

/// Runs every container of the plan as boot2container does.
pub fn run_pipeline<H: Host>(plan: &BootPlan, prepared: &Prepared, site: &Site<H>) -> Outcome {
    let engine = Engine::new(site.host, &plan.layout, site.etc, site.hostname);
    let mut pipeline = Pipeline::new(plan.pipefail);
    let inputs = |c: &ContainerPlan, pipeline: &Pipeline| Inputs {
        image: &prepared.images[c.image.0],
        env_file: c
            .env_files
            .iter()
            .flat_map(|f| prepared.env_files[f.0].iter().cloned())
            .collect(),
        env: pipeline.env(),
    };

    // Until the end of the function: the containers that run before it
    // are the ones a timeout stops.
    let _timeout = plan.timeout.map(Timeout::start);

    let mut services: Vec<Service<H>> = Vec::new();
    for c in plan.stage(Stage::Service) {
        // After a stop request nothing starts (the engine stops whatever
        // runs).
        if let Some(request) = signals::requested() {
            info!("not starting {}: stopping for a {request}", c.id);
            continue;
        }
        info!("starting service {}: {}", c.id, c.name());
        match engine.start(c, &inputs(c, &pipeline)) {
            Ok(service) => services.push(service),
            // The job may not need it: say so loudly and go on.
            Err(e) => error!("cannot start service {}: {e}", c.name()),
        }
    }

    if plan.debug_panic == Some(DebugPanic::Pipeline) {
        panic!("b2c.debug_panic=pipeline: crashing on purpose, before the first container");
    }

    for c in plan.stage(Stage::Run).chain(plan.stage(Stage::Post)) {
        if let Some(request) = signals::requested() {
            info!("not running {}: stopping for a {request}", c.id);
            continue;
        }
        if pipeline.skip(c.stage) {
            info!(
                "skipping {}: {} (b2c.pipefail and an earlier container failed)",
                c.id,
                c.name()
            );
            continue;
        }
        info!("running {}: {}", c.id, c.name());
        let end = match engine.run(c, &inputs(c, &pipeline)) {
            Ok(code) => {
                info!("{} exited with status {code}", c.id);
                ContainerEnd::Exited(code)
            }
            Err(e) => {
                error!("cannot run {}: {e}", c.name());
                info!("{} exited with status 1", c.id);
                ContainerEnd::NotStarted
            }
        };
        pipeline.record(c.stage, c.name(), end);
    }

    for service in services {
        let id = service.id().to_string();
        let code = service.stop(SERVICE_GRACE);
        info!("stopped service {id} (status {})", code.0);
    }
    if pipeline.shutdown() == ShutdownMode::Reboot {
        info!("a container asked for a reboot: rebooting at the end");
    }
    let status = if signals::requested() == Some(StopRequest::TimedOut) {
        PipelineStatus::TimedOut
    } else {
        pipeline.status()
    };
    Outcome {
        status,
        mode: pipeline.shutdown(),
    }
}

/// `b2c.timeout`: a stop request once the pipeline ran `limit`, unless it
/// is dropped first. The request stops the running containers (SIGTERM,
/// SIGKILL 5 s later), nothing else starts, and the status is 124.
struct Timeout {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Timeout {
    fn start(limit: Duration) -> Timeout {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                error!(
                    "the pipeline ran for {} s, the most b2c.timeout allows: stopping it \
                     (status {EXIT_TIMED_OUT})",
                    limit.as_secs_f64()
                );
                signals::request_stop(StopRequest::TimedOut, "b2c.timeout");
            }
        });
        Timeout {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use b2c_oci::{ImageSource, PullStats};

    use super::*;
    use crate::host::fake::FakeHost;

    fn image(cmd: &str) -> PulledImage {
        PulledImage {
            reference: "docker.io/library/x:1".into(),
            served_by: "docker.io".into(),
            manifest_digest: "sha256:0".into(),
            config: serde_json::from_value(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Cmd": [cmd]}
            }))
            .unwrap(),
            layers: vec![PathBuf::from("/storage/oci/layers/l0")],
            layer_digests: Vec::new(),
            source: ImageSource::Registry,
            stats: PullStats::default(),
        }
    }

    struct Run {
        host: FakeHost,
        outcome: Outcome,
    }

    fn run(line: &str, host: FakeHost) -> Run {
        let plan = b2c_cmdline::plan(line).unwrap();
        let images: Vec<PulledImage> = plan.images.iter().map(|_| image("/bin/true")).collect();
        let env_files: Vec<Vec<(String, String)>> = plan
            .env_files
            .iter()
            .map(|f| vec![("FROM".to_string(), f.to_string())])
            .collect();
        let prepared = Prepared {
            images: &images,
            env_files: &env_files,
        };
        let site = Site {
            host: &host,
            etc: Path::new("/etc"),
            hostname: "dut",
        };
        let outcome = run_pipeline(&plan, &prepared, &site);
        Run { host, outcome }
    }

    fn config(host: &FakeHost, id: &str) -> serde_json::Value {
        serde_json::from_str(&host.file(&format!("/storage/containers/{id}/config.json"))).unwrap()
    }

    #[test]
    fn services_first_then_runs_then_posts_and_every_overlay_is_released() {
        let r = run(
            "b2c.run_service=svc b2c.run=a b2c.run=b b2c.post_container=p",
            FakeHost::default(),
        );
        let order: Vec<String> = r
            .host
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("spawn") || c.starts_with("run") || c.starts_with("kill"))
            .collect();
        assert_eq!(
            order,
            [
                "spawn service-0",
                "run run-0",
                "run run-1",
                "run post-0",
                "kill service-0 TERM"
            ]
        );
        assert_eq!(r.outcome.status, PipelineStatus::Passed);
        assert!(r.host.mounted.borrow().is_empty(), "{:?}", r.host.calls());
        assert!(
            r.host
                .dirs
                .borrow()
                .iter()
                .all(|d| !d.starts_with("/storage/containers")),
            "{:?}",
            r.host.dirs.borrow()
        );
    }

    #[test]
    fn pipefail_skips_runs_but_not_posts_and_the_status_is_the_first_failure() {
        let mut host = FakeHost::default();
        host.exit_codes.insert("run-0".into(), 3);
        host.exit_codes.insert("post-0".into(), 9);
        let r = run(
            "b2c.pipefail b2c.run=a b2c.run=b b2c.post_container=p",
            host,
        );
        let calls = r.host.calls();
        assert!(!calls.contains(&"run run-1".to_string()), "{calls:?}");
        assert!(calls.contains(&"run post-0".to_string()), "{calls:?}");
        assert_eq!(r.outcome.status, PipelineStatus::Failed(3));
    }

    #[test]
    fn the_pipeline_variables_reach_the_next_container() {
        let mut host = FakeHost::default();
        host.exit_codes.insert("run-0".into(), 4);
        let r = run("b2c.run=first:1 b2c.run=second:2", host);
        let env = config(&r.host, "run-1")["process"]["env"].clone();
        let env: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for want in [
            "B2C_PIPELINE_STATUS=4",
            "B2C_PIPELINE_FAILED_BY=first:1",
            "B2C_PIPELINE_PREV_CONTAINER=first:1",
            "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=4",
        ] {
            assert!(env.contains(&want), "{want} not in {env:?}");
        }
    }

    #[test]
    fn a_container_that_cannot_start_counts_as_failed_and_leaves_nothing_mounted() {
        let host = FakeHost {
            crun_fails: BTreeSet::from(["run-0".to_string()]),
            ..FakeHost::default()
        };
        let r = run("b2c.run=a b2c.run=b", host);
        assert_eq!(r.outcome.status, PipelineStatus::NotStarted);
        assert_eq!(r.outcome.status.code(), 1);
        assert!(r.host.calls().contains(&"run run-1".to_string()));
        assert!(r.host.mounted.borrow().is_empty(), "{:?}", r.host.calls());
    }

    #[test]
    fn a_failure_after_the_overlay_is_mounted_unmounts_it() {
        // The host path does not exist: the volume check fails after the
        // overlay was mounted.
        let r = run("b2c.run=\"-v /no/such:/x a\"", FakeHost::default());
        let calls = r.host.calls();
        let mount = calls
            .iter()
            .position(|c| c == "mount /storage/containers/run-0/rootfs");
        let unmount = calls
            .iter()
            .position(|c| c == "unmount /storage/containers/run-0/rootfs");
        assert!(mount.is_some() && unmount > mount, "{calls:?}");
        assert!(!calls.iter().any(|c| c.starts_with("run ")), "{calls:?}");
        assert_eq!(r.outcome.status, PipelineStatus::NotStarted);
        assert!(r.host.mounted.borrow().is_empty());
    }

    #[test]
    fn volumes_env_files_and_names_come_from_the_plan() {
        let mut host = FakeHost::default();
        host.host_paths.insert("/dev/shm".into());
        let r = run(
            "b2c.run=\"--env-file /etc/e -v job:/job -v /dev/shm:/shm:ro --hostname inner --dns=10.0.0.53 a\"",
            host,
        );
        assert_eq!(
            r.outcome.status,
            PipelineStatus::Passed,
            "{:?}",
            r.host.calls()
        );
        assert!(r
            .host
            .dirs
            .borrow()
            .contains(Path::new("/storage/volumes/job")));
        let spec = config(&r.host, "run-0");
        assert_eq!(spec["hostname"], "inner");
        let env = spec["process"]["env"].to_string();
        assert!(env.contains("FROM=/etc/e"), "{env}");
        let mounts = spec["mounts"].to_string();
        assert!(mounts.contains("/storage/volumes/job"), "{mounts}");
        assert!(
            mounts.contains("/storage/containers/run-0/resolv.conf"),
            "{mounts}"
        );
    }

    #[test]
    fn a_stubborn_service_is_killed_and_a_reboot_request_is_the_end() {
        let mut host = FakeHost::default();
        host.stubborn.insert("service-0".into());
        host.exit_codes
            .insert("run-0".into(), crate::pipeline::EXIT_REBOOT);
        let r = run("b2c.run_service=svc b2c.run=flasher", host);
        let calls = r.host.calls();
        assert!(
            calls.contains(&"kill service-0 KILL".to_string()),
            "{calls:?}"
        );
        assert_eq!(r.outcome.mode, ShutdownMode::Reboot);
        assert_eq!(r.outcome.status.code(), 129);
    }
}
