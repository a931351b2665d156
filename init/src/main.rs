//! b2c's PID 1. It only sequences the phases of a boot; each phase is a
//! call into the crate that owns it.

mod crash;
mod end;
mod failure;
mod phases;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use b2c_cmdline::BootPlan;
use b2c_runtime::{Outcome, Prepared, Site};
use b2c_system::signals::{self, StopRequest};
use log::{error, info, warn};

use crate::failure::BootError;

fn main() {
    // Bound into a container by `--init`, b2c is that container's init:
    // nothing of PID 1's duties applies there.
    if let Some(code) = b2c_runtime::container_init::run_if_invoked() {
        std::process::exit(code);
    }
    // Before anything can log: /dev, /proc and friends.
    let early = b2c_system::mounts::mount_early();
    b2c_system::log::init(false);
    crash::install_hook();
    // Before any other thread starts, so that they all inherit the
    // blocked stop signals.
    if let Err(e) = signals::install() {
        warn!("{e}");
    }
    b2c_system::reaper::start();
    let module_index = phases::read_module_index();
    phases::banner();

    let outcome = match early.map_err(BootError::Early).and_then(|_| phases::plan()) {
        Err(e) => fail(e),
        Ok((cmdline, plan)) => {
            end::set_options(&plan.end);
            boot(&cmdline, plan, module_index).unwrap_or_else(fail)
        }
    };
    end::finish(outcome)
}

fn boot(
    cmdline: &str,
    mut plan: BootPlan,
    module_index: phases::ModuleIndexRead,
) -> Result<Outcome, BootError> {
    phases::announce(&plan);
    let mut modules = phases::load_modules(&plan, module_index)?;
    // After the drivers, which keep both CPUs busy; the network mostly
    // waits.
    let crun = phases::prepare_crun();
    // While the network comes up: the first HTTPS client needs them.
    std::thread::spawn(b2c_net::http::Trust::prepare);
    // Its driver is one of the modules just loaded.
    if let Some(timeout) = plan.watchdog {
        b2c_system::watchdog::arm(timeout);
    }
    phases::block_devices();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    let job = async {
        // Kept alive for the whole job: a lease must not lapse under a
        // running container.
        let network = phases::network(&plan).await?;
        // Before any TLS: a board's RTC may read 2000.
        phases::clock(&plan.ntp_peer, &network).await;
        let mut trust = phases::trust(&plan).await?;
        if let Some(url) = plan.extra_args_url.clone() {
            let merged = phases::extra_args(cmdline, &url, &plan, &trust).await?;
            if merged.ntp_peer != plan.ntp_peer {
                phases::clock(&merged.ntp_peer, &network).await;
            }
            if merged.trust.ca_certs != plan.trust.ca_certs {
                trust = phases::trust(&merged).await?;
            }
            plan = merged;
            end::set_options(&plan.end);
            phases::load_asked_modules(&mut modules, &plan)?;
        }
        let hostname = phases::hostname(&plan, &network)?;
        let storage = phases::storage(&plan, &mut modules)?;
        phases::make_room(&plan, &storage);
        let images = phases::pull(&plan, &storage, &trust).await;
        let env_files = phases::env_files(&plan, &trust).await?;
        let mut volumes = phases::volumes(&plan, &trust).await?;
        let prepared = Prepared {
            images: &images,
            env_files: &env_files,
        };
        let site = Site {
            host: &b2c_runtime::System,
            etc: Path::new("/etc"),
            hostname: &hostname,
        };
        let hooks = phases::VolumeHooks {
            set: &volumes,
            runtime: tokio::runtime::Handle::current(),
        };
        // crun and the reaper block: keep them off the async workers, which
        // go on renewing the lease.
        let outcome = tokio::task::block_in_place(|| {
            crun.wait();
            b2c_runtime::run_pipeline_with(&plan, &prepared, &site, &hooks)
        });
        Ok(phases::volumes_end(&mut volumes, outcome).await)
    };
    let outcome = runtime.block_on(async {
        // A stop request during the setup (a DHCP wait, a long pull) ends
        // the boot at once; once the pipeline runs, it stops it itself.
        tokio::select! {
            biased;
            outcome = job => outcome,
            request = stop_requested() => {
                info!("stopped for a {request} before the containers ran");
                Ok(Outcome::setup_failed())
            }
        }
    });
    // Unpacks cut short by a stop request must not hold the end up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// Resolves once a stop signal arrived (at once if one already did).
async fn stop_requested() -> StopRequest {
    let notify = Arc::new(tokio::sync::Notify::new());
    let n = notify.clone();
    // notify_one keeps a permit when nobody waits yet: nothing is lost.
    signals::on_request(move |_| n.notify_one());
    loop {
        if let Some(request) = signals::requested() {
            return request;
        }
        notify.notified().await;
    }
}

fn fail(e: BootError) -> Outcome {
    error!("{e}");
    Outcome::setup_failed()
}
