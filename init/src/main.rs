//! b2c's PID 1. It only sequences the phases of a boot; each phase is a
//! call into the crate that owns it.

mod failure;
mod phases;

use std::time::Duration;

use b2c_runtime::PipelineStatus;
use b2c_system::log::console_line;
use b2c_system::power::{self, FinalAction};
use log::{error, info, warn};

use crate::failure::BootError;

fn main() {
    // Before anything can log: /dev, /proc and friends.
    let early = b2c_system::mounts::mount_early();
    b2c_system::log::init(false);
    std::panic::set_hook(Box::new(|panic| {
        error!("b2c crashed: {panic}");
        shutdown(PipelineStatus::setup_failed(), Duration::ZERO)
    }));
    b2c_system::reaper::start();
    phases::banner();

    let (status, delay) = match early
        .map_err(BootError::Early)
        .and_then(|_| phases::config())
    {
        Err(e) => (fail(e), Duration::ZERO),
        Ok(config) => {
            if config.debug {
                log::set_max_level(log::LevelFilter::Debug);
            }
            for warning in &config.warnings {
                warn!("{warning}");
            }
            let status = match boot(&config) {
                Ok(status) => status,
                Err(e) => fail(e),
            };
            (status, config.poweroff_delay)
        }
    };
    shutdown(status, delay)
}

fn boot(config: &b2c_cmdline::Config) -> Result<PipelineStatus, BootError> {
    phases::load_modules(config)?;
    phases::block_devices();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    runtime.block_on(async {
        // Kept alive for the whole job: a lease must not lapse under a
        // running container.
        let (lease, _renewal) = phases::network(config).await?;
        phases::clock(config, &lease).await;
        let store = phases::storage()?;
        let images = phases::pull(config, &store).await?;
        phases::run_containers(config, &images).await
    })
}

fn fail(e: BootError) -> PipelineStatus {
    error!("{e}");
    PipelineStatus::setup_failed()
}

/// The end of every boot: the lines CI parses, then power off.
fn shutdown(status: PipelineStatus, delay: Duration) -> ! {
    console_line(&status.line());
    console_line("It's now safe to turn off your computer");
    if !delay.is_zero() {
        info!(
            "powering off in {:.1} s (b2c.poweroff_delay)",
            delay.as_secs_f64()
        );
        std::thread::sleep(delay);
    }
    power::finish(FinalAction::PowerOff)
}
