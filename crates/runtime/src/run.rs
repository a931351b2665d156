//! The pipeline loop: services in the background, the `b2c.run`
//! containers in order, then the post containers, then the services stop.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use b2c_cmdline::{BootPlan, ContainerPlan, DebugPanic, Stage};
use b2c_oci::{PullError, PulledImage};
use b2c_system::log::Section;
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
    /// By [`b2c_cmdline::ImageId`]: the image, or why it could not be
    /// pulled (its containers then fail, the others run).
    pub images: &'a [Result<PulledImage, PullError>],
    /// The `KEY=VALUE` pairs of each env file, by [`b2c_cmdline::EnvFileId`].
    pub env_files: &'a [Vec<(String, String)>],
}

/// How the pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: PipelineStatus,
    pub mode: ShutdownMode,
    /// The `B2C_PIPELINE_*` variables as the pipeline left them: the
    /// environment of `b2c.shutdown_cmd` and `b2c.reboot_cmd`, as in
    /// boot2container.
    pub env: Vec<(String, String)>,
}

impl Outcome {
    /// The end of a boot whose setup failed before the pipeline.
    pub fn setup_failed() -> Outcome {
        Outcome::of(&Pipeline::setup_failed())
    }

    fn of(pipeline: &Pipeline) -> Outcome {
        Outcome {
            status: pipeline.status(),
            mode: pipeline.shutdown(),
            env: pipeline.env(),
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

/// What runs around each `b2c.run` and post container (boot2container's
/// `container_start` and `container_end` hooks: the volume syncs).
pub trait ContainerHooks {
    /// Before the container; an error counts as the container failing to
    /// start, as in boot2container.
    fn container_start(&self, _container: &ContainerPlan) -> Result<(), String> {
        Ok(())
    }
    /// After it, whatever its status; an error is reported.
    fn container_end(&self, _container: &ContainerPlan) -> Result<(), String> {
        Ok(())
    }
}

/// No hooks.
pub struct NoHooks;

impl ContainerHooks for NoHooks {}

/// Runs every container of the plan as boot2container does.
pub fn run_pipeline<H: Host>(plan: &BootPlan, prepared: &Prepared, site: &Site<H>) -> Outcome {
    run_pipeline_with(plan, prepared, site, &NoHooks)
}

/// [`run_pipeline`], with `hooks` around each `b2c.run` and post
/// container.
pub fn run_pipeline_with<H: Host>(
    plan: &BootPlan,
    prepared: &Prepared,
    site: &Site<H>,
    hooks: &dyn ContainerHooks,
) -> Outcome {
    let engine = Engine::new(site.host, &plan.layout, site.etc, site.hostname);
    let mut pipeline = Pipeline::new(plan.pipefail);
    // Err: the image could not be pulled.
    let inputs = |c: &ContainerPlan, pipeline: &Pipeline| match &prepared.images[c.image.0] {
        Ok(image) => Ok(Inputs {
            image,
            env_file: c
                .env_files
                .iter()
                .flat_map(|f| prepared.env_files[f.0].iter().cloned())
                .collect(),
            env: pipeline.env(),
        }),
        Err(e) => Err(format!("its image could not be pulled: {e}")),
    };

    // Until the end of the function: the containers that run before it
    // are the ones a timeout stops.
    let _timeout = plan.timeout.map(Timeout::start);

    let mut services: Vec<Service<H>> = Vec::new();
    let section = (plan.stage(Stage::Service).count() > 0)
        .then(|| Section::start("b2c_services", "starting the services", true));
    for c in plan.stage(Stage::Service) {
        // After a stop request nothing starts (the engine stops whatever
        // runs).
        if let Some(request) = signals::requested() {
            info!("not starting {}: stopping for a {request}", c.id);
            continue;
        }
        info!("starting service {}: {}", c.id, c.name());
        let started = inputs(c, &pipeline)
            .and_then(|inputs| engine.start(c, &inputs).map_err(|e| e.to_string()));
        match started {
            Ok(service) => services.push(service),
            // The job may not need it: say so loudly and go on.
            Err(e) => error!("cannot start service {} ({}): {e}", c.id, c.name()),
        }
    }
    drop(section);

    if plan.debug_panic == Some(DebugPanic::Pipeline) {
        panic!("b2c.debug_panic=pipeline: crashing on purpose, before the first container");
    }

    for c in plan.stage(Stage::Run).chain(plan.stage(Stage::Post)) {
        // A service that died is news before the next container.
        for service in &mut services {
            service.check();
        }
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
        if let Err(e) = hooks.container_start(c) {
            error!("{}: container_start: {e}", c.id);
            info!("{} exited with status 1", c.id);
            pipeline.record(c.stage, c.option_value(), ContainerEnd::NotStarted);
            continue;
        }
        // The job's own output: folded in a GitLab log, but open.
        let _section = Section::start(
            &format!("b2c_{}", c.id),
            &format!("running {}: {}", c.id, c.name()),
            false,
        );
        let ran = inputs(c, &pipeline)
            .and_then(|inputs| engine.run(c, &inputs).map_err(|e| e.to_string()));
        let end = match ran {
            Ok(code) => {
                info!("{} exited with status {code}", c.id);
                ContainerEnd::Exited(code)
            }
            // A missing image fails the container as podman run would,
            // not the boot: the next ones (post containers) still run.
            Err(e) => {
                error!("cannot run {} ({}): {e}", c.id, c.name());
                info!("{} exited with status 1", c.id);
                ContainerEnd::NotStarted
            }
        };
        if let Err(e) = hooks.container_end(c) {
            error!("{}: container_end: {e}", c.id);
        }
        pipeline.record(c.stage, c.option_value(), end);
    }

    for service in services {
        let id = service.id().to_string();
        let code = service.stop(SERVICE_GRACE);
        info!("stopped service {id} (status {})", code.0);
    }
    if pipeline.shutdown() == ShutdownMode::Reboot {
        info!("a container asked for a reboot: rebooting at the end");
    }
    if signals::requested() == Some(StopRequest::TimedOut) {
        pipeline.time_out();
    }
    Outcome::of(&pipeline)
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
        run_without(line, host, &[])
    }

    /// As [`run`], the images named in `unpulled` having failed to pull.
    fn run_without(line: &str, host: FakeHost, unpulled: &[&str]) -> Run {
        let plan = b2c_cmdline::plan(line).unwrap();
        let images: Vec<Result<PulledImage, PullError>> = plan
            .images
            .iter()
            .map(|i| {
                if unpulled.contains(&i.written.as_str()) {
                    Err(PullError::NotFound {
                        image: i.name.to_string(),
                        registry: "docker.io".into(),
                        detail: "manifest unknown".into(),
                    })
                } else {
                    Ok(image("/bin/true"))
                }
            })
            .collect();
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
                // Detached: its output goes to a log, not the console.
                "spawn service-0 > /storage/logs/service-0.log",
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
        let r = run(
            "b2c.run=\"-e X=1 first:1 sh -c 'exit 4'\" b2c.run=second:2",
            host,
        );
        let env = config(&r.host, "run-1")["process"]["env"].clone();
        let env: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // The whole option value, as boot2container gives it.
        for want in [
            "B2C_PIPELINE_STATUS=4",
            "B2C_PIPELINE_FAILED_BY=-e X=1 first:1 sh -c 'exit 4'",
            "B2C_PIPELINE_PREV_CONTAINER=-e X=1 first:1 sh -c 'exit 4'",
            "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=4",
        ] {
            assert!(env.contains(&want), "{want} not in {env:?}");
        }
        // The same variables, as the pipeline left them, are the
        // environment of b2c.shutdown_cmd.
        let end: Vec<String> = r
            .outcome
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for want in [
            "B2C_PIPELINE_STATUS=4",
            "B2C_PIPELINE_FAILED_BY=-e X=1 first:1 sh -c 'exit 4'",
            "B2C_PIPELINE_PREV_CONTAINER=second:2",
            "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=0",
            "B2C_PIPELINE_SHUTDOWN_MODE=default",
        ] {
            assert!(end.contains(&want.to_string()), "{want} not in {end:?}");
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
    fn a_container_whose_image_did_not_pull_fails_and_the_rest_run() {
        let line = "b2c.run_service=gone:1 b2c.run=a b2c.run=gone:2 b2c.run=c \
                    b2c.post_container=gone:3 b2c.post_container=p";
        let r = run_without(line, FakeHost::default(), &["gone:1", "gone:2", "gone:3"]);
        let runs: Vec<String> = r
            .host
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("run ") || c.starts_with("spawn "))
            .collect();
        assert_eq!(runs, ["run run-0", "run run-2", "run post-1"]);
        assert_eq!(r.outcome.status, PipelineStatus::NotStarted);
        assert_eq!(r.outcome.status.code(), 1);

        // With pipefail, it is the failure that skips the rest; post
        // containers still run.
        let r = run_without(
            &format!("b2c.pipefail {line}"),
            FakeHost::default(),
            &["gone:2"],
        );
        let runs: Vec<String> = r
            .host
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("run "))
            .collect();
        assert_eq!(runs, ["run run-0", "run post-0", "run post-1"]);
        assert_eq!(r.outcome.status.code(), 1);
        let failed_by = r
            .outcome
            .env
            .iter()
            .find(|(k, _)| k == "B2C_PIPELINE_FAILED_BY")
            .map(|(_, v)| v.as_str());
        assert_eq!(failed_by, Some("gone:2"));
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

    /// Records what is logged, for the tests that read the console.
    struct Capture;

    static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            CAPTURED
                .lock()
                .unwrap()
                .push(format!("{}: {}", record.level(), record.args()));
        }
        fn flush(&self) {}
    }

    #[test]
    fn a_service_that_fails_is_told_with_the_end_of_its_log() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Info);
        let mut host = FakeHost::default();
        host.exited.insert("service-0".into(), 3);
        let log: String = (1..=30).map(|i| format!("svc line {i}\n")).collect();
        host.service_logs.insert("service-0".into(), log);
        let r = run("b2c.run_service=svc:9 b2c.run=a b2c.run=b", host);
        assert_eq!(r.outcome.status, PipelineStatus::Passed);
        let lines = CAPTURED.lock().unwrap().clone();
        let said: Vec<&String> = lines.iter().filter(|l| l.contains("service-0")).collect();
        let header = said
            .iter()
            .position(|l| {
                l.starts_with(
                    "WARN: service service-0 (svc:9) exited with status 3; the end of \
                     its log /storage/logs/service-0.log",
                )
            })
            .unwrap_or_else(|| panic!("{said:#?}"));
        // Once, not again at each container nor at the end.
        let told = said.iter().filter(|l| l.contains("exited with status 3"));
        assert_eq!(told.count(), 1);
        let tail: Vec<&str> = said[header + 1..]
            .iter()
            .filter_map(|l| l.strip_prefix("INFO: service-0| "))
            .collect();
        let want: Vec<String> = (11..=30).map(|i| format!("svc line {i}")).collect();
        assert_eq!(tail, want);
        // Told before the first container ran, and nothing killed.
        assert!(!r.host.calls().iter().any(|c| c.starts_with("kill")));
    }

    #[test]
    fn per_container_hosts_and_resolv_conf() {
        let mut host = FakeHost::default();
        host.host_files.insert(
            "/etc/resolv.conf".into(),
            "nameserver 10.0.0.1\nsearch lab.test\noptions ndots:1\n".into(),
        );
        host.host_files
            .insert("/etc/hosts".into(), "127.0.0.1\tlocalhost\n".into());
        let r = run(
            "b2c.run=\"--add-host gw:10.0.0.254 --dns-search farm.test --dns-option edns0 a\" \
             b2c.run=\"--dns-search . --no-hosts b\" b2c.run=\"--dns 9.9.9.9 c\"",
            host,
        );
        assert_eq!(
            r.host.file("/storage/containers/run-0/hosts"),
            "10.0.0.254\tgw\n127.0.0.1\tlocalhost\n"
        );
        assert_eq!(
            r.host.file("/storage/containers/run-0/resolv.conf"),
            "nameserver 10.0.0.1\nsearch farm.test\noptions edns0\n"
        );
        let spec = config(&r.host, "run-0");
        let mounts = spec["mounts"].to_string();
        assert!(
            mounts.contains("/storage/containers/run-0/hosts"),
            "{mounts}"
        );
        assert_eq!(
            r.host.file("/storage/containers/run-1/resolv.conf"),
            "nameserver 10.0.0.1\noptions ndots:1\n"
        );
        assert!(!config(&r.host, "run-1")["mounts"]
            .to_string()
            .contains("/etc/hosts"));
        assert_eq!(
            r.host.file("/storage/containers/run-2/resolv.conf"),
            "nameserver 9.9.9.9\nsearch lab.test\noptions ndots:1\n"
        );
    }

    #[test]
    fn stdio_stop_policy_init_and_the_environment_reach_the_host() {
        let host = FakeHost {
            environment: vec![("CI_JOB_ID".into(), "42".into())],
            ..FakeHost::default()
        };
        let r = run(
            "b2c.run_service=\"-t --stop-signal=SIGINT --stop-timeout=2 svc\" \
             b2c.run=\"-ti --init -e CI_JOB_ID -u mesa --group-add video a\" b2c.run=b",
            host,
        );
        let launches = r.host.launches.borrow().clone();
        let (id, stdio, stop) = &launches[0];
        assert_eq!(id, "service-0");
        assert!(stdio.tty && !stdio.interactive);
        assert_eq!(stop.signal, "INT");
        assert_eq!(stop.timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            launches[1].1,
            crate::Stdio {
                tty: true,
                interactive: true
            }
        );
        assert_eq!(launches[2].1, crate::Stdio::default());
        assert_eq!(launches[2].2, crate::StopPolicy::default());
        // The service was stopped with its own signal.
        assert!(
            r.host.calls().contains(&"kill service-0 INT".to_string()),
            "{:?}",
            r.host.calls()
        );
        let spec = config(&r.host, "run-0");
        assert_eq!(spec["process"]["args"][0], crate::spec::INIT_IN_CONTAINER);
        assert_eq!(spec["process"]["terminal"], true);
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(
            spec["process"]["user"]["additionalGids"],
            serde_json::json!([44])
        );
        let env = spec["process"]["env"].to_string();
        for want in [
            "CI_JOB_ID=42",
            "HOME=/home/mesa",
            "TERM=xterm",
            "container=podman",
        ] {
            assert!(env.contains(want), "{want} not in {env}");
        }
        let init = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == crate::spec::INIT_IN_CONTAINER)
            .unwrap()
            .clone();
        assert_eq!(init["source"], "/init");
    }

    #[test]
    fn devices_must_exist_and_u_volumes_are_chowned() {
        let r = run("b2c.run=\"--device /dev/nope a\"", FakeHost::default());
        assert_eq!(r.outcome.status, PipelineStatus::NotStarted);
        assert!(!r.host.calls().iter().any(|c| c.starts_with("run ")));
        let mut host = FakeHost::default();
        host.host_paths.insert("/dev/kvm".into());
        let r = run(
            "b2c.run=\"--device /dev/kvm -u 1000:44 -v cache:/cache:U -v /scratch --tmpfs /t a\"",
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
            .calls()
            .contains(&"chown 1000:44 /storage/volumes/cache".to_string()));
        // The anonymous volume lives in the container's directory.
        assert!(r
            .host
            .calls()
            .contains(&"remove /storage/containers/run-0".to_string()));
        let spec = config(&r.host, "run-0");
        let mounts = spec["mounts"].to_string();
        assert!(
            mounts.contains("/storage/containers/run-0/volume-1"),
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

    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl ContainerHooks for Recorder {
        fn container_start(&self, c: &ContainerPlan) -> Result<(), String> {
            self.0.borrow_mut().push(format!("start {}", c.id));
            if c.id.as_str() == "run-1" {
                return Err("the pull failed".into());
            }
            Ok(())
        }
        fn container_end(&self, c: &ContainerPlan) -> Result<(), String> {
            self.0.borrow_mut().push(format!("end {}", c.id));
            Ok(())
        }
    }

    #[test]
    fn hooks_run_around_runs_and_posts_and_a_failed_start_fails_the_container() {
        let plan = b2c_cmdline::plan("b2c.run_service=s b2c.run=a b2c.run=b b2c.post_container=p")
            .unwrap();
        let images: Vec<Result<PulledImage, PullError>> =
            plan.images.iter().map(|_| Ok(image("/bin/true"))).collect();
        let prepared = Prepared {
            images: &images,
            env_files: &[],
        };
        let host = FakeHost::default();
        let site = Site {
            host: &host,
            etc: Path::new("/etc"),
            hostname: "dut",
        };
        let hooks = Recorder(Default::default());
        let outcome = run_pipeline_with(&plan, &prepared, &site, &hooks);
        assert_eq!(
            *hooks.0.borrow(),
            [
                "start run-0",
                "end run-0",
                "start run-1",
                "start post-0",
                "end post-0"
            ]
        );
        assert!(!host.calls().contains(&"run run-1".to_string()));
        assert_eq!(outcome.status, PipelineStatus::NotStarted);
    }
}
