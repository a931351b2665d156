//! Runs the pipeline: services in the background, the `b2c.run`
//! containers in order, then the post containers, then the services stop.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use b2c_cmdline::{Config, ContainerArgs, DebugPanic};
use b2c_oci::PulledImage;
use b2c_runtime::{Container, Engine, Pipeline, Service, Stage};
use b2c_system::signals;
use log::{error, info};

use crate::end::Outcome;

/// How long a service gets between SIGTERM and SIGKILL.
const SERVICE_GRACE: Duration = Duration::from_secs(5);

/// Everything a container needs that was fetched before the pipeline.
pub struct Prepared<'a> {
    pub images: &'a HashMap<String, PulledImage>,
    /// `--env-file` contents, by the value written in the option.
    pub env_files: &'a HashMap<String, Vec<(String, String)>>,
}

impl Prepared<'_> {
    fn container<'b>(&'b self, id: String, args: &'b ContainerArgs) -> Container<'b> {
        Container {
            id,
            args,
            image: &self.images[&args.image],
            env_file: args
                .env_files
                .iter()
                .flat_map(|f| self.env_files[f].iter().cloned())
                .collect(),
        }
    }
}

pub fn run(config: &Config, storage: &Path, prepared: &Prepared) -> Outcome {
    let engine = Engine::new(storage, Path::new("/etc"), &config.hostname);
    let mut pipeline = Pipeline::new(config.pipefail);

    let mut services: Vec<Service> = Vec::new();
    for (i, args) in config.services.iter().enumerate() {
        let c = prepared.container(format!("service-{i}"), args);
        // After a stop request nothing starts (the engine stops whatever
        // runs).
        if let Some(request) = signals::requested() {
            info!("not starting {}: stopping for a {request}", c.id);
            continue;
        }
        info!("starting service {}: {}", c.id, args.image);
        match engine.start(&c, &pipeline.env()) {
            Ok(service) => services.push(service),
            // The job may not need it: say so loudly and go on.
            Err(e) => error!("cannot start service {}: {e}", args.image),
        }
    }

    if config.debug_panic == Some(DebugPanic::Pipeline) {
        panic!("b2c.debug_panic=pipeline: crashing on purpose, before the first container");
    }

    let stages = [
        (Stage::Run, "run", &config.containers),
        (Stage::Post, "post", &config.post_containers),
    ];
    for (stage, prefix, list) in stages {
        for (i, args) in list.iter().enumerate() {
            let c = prepared.container(format!("{prefix}-{i}"), args);
            if let Some(request) = signals::requested() {
                info!("not running {}: stopping for a {request}", c.id);
                continue;
            }
            if pipeline.skip(stage) {
                info!(
                    "skipping {}: {} (b2c.pipefail and an earlier container failed)",
                    c.id, args.image
                );
                continue;
            }
            info!("running {}: {}", c.id, args.image);
            let code = match engine.run(&c, &pipeline.env()) {
                Ok(code) => code,
                Err(e) => {
                    error!("cannot run {}: {e}", args.image);
                    b2c_runtime::pipeline::SETUP_FAILED
                }
            };
            info!("{} exited with status {code}", c.id);
            pipeline.record(stage, &args.image, code);
        }
    }

    for service in services {
        let id = service.id().to_string();
        let code = service.stop(SERVICE_GRACE);
        info!("stopped service {id} (status {})", code.0);
    }
    if pipeline.shutdown() == b2c_runtime::ShutdownMode::Reboot {
        info!("a container asked for a reboot: rebooting at the end");
    }
    Outcome {
        status: pipeline.status(),
        mode: pipeline.shutdown(),
    }
}
