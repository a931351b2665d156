//! b2c's PID 1. It only sequences the phases of a boot; each phase is a
//! call into the crate that owns it.

mod end;
mod failure;
mod phases;

use b2c_cmdline::{BootPlan, EndPlan};
use b2c_runtime::{Outcome, Prepared, Site};
use log::error;

use crate::failure::BootError;

fn main() {
    // Before anything can log: /dev, /proc and friends.
    let early = b2c_system::mounts::mount_early();
    b2c_system::log::init(false);
    std::panic::set_hook(Box::new(|panic| {
        error!("b2c crashed: {panic}");
        end::finish(Outcome::setup_failed(), &EndPlan::default())
    }));
    b2c_system::reaper::start();
    phases::banner();

    let mut end = EndPlan::default();
    let outcome = match early.map_err(BootError::Early).and_then(|_| phases::plan()) {
        Err(e) => fail(e),
        Ok((cmdline, plan)) => {
            end = plan.end.clone();
            boot(&cmdline, plan, &mut end).unwrap_or_else(fail)
        }
    };
    end::finish(outcome, &end)
}

fn boot(cmdline: &str, mut plan: BootPlan, end: &mut EndPlan) -> Result<Outcome, BootError> {
    phases::announce(&plan);
    let mut modules = phases::load_modules(&plan)?;
    phases::block_devices();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    runtime.block_on(async {
        // Kept alive for the whole job: a lease must not lapse under a
        // running container.
        let network = phases::network(&plan).await?;
        // Before any TLS: a board's RTC may read 2000.
        phases::clock(&plan.ntp_peer, &network).await;
        let mut ca_certs = phases::ca_certs(&plan).await?;
        if let Some(url) = plan.extra_args_url.clone() {
            let merged = phases::extra_args(cmdline, &url, &plan, &ca_certs).await?;
            if merged.ntp_peer != plan.ntp_peer {
                phases::clock(&merged.ntp_peer, &network).await;
            }
            if merged.trust.ca_certs != plan.trust.ca_certs {
                ca_certs = phases::ca_certs(&merged).await?;
            }
            plan = merged;
            *end = plan.end.clone();
            phases::load_asked_modules(&mut modules, &plan)?;
        }
        let hostname = phases::hostname(&plan, &network)?;
        let storage = phases::storage(&plan, &mut modules)?;
        phases::make_room(&plan, &storage);
        let images = phases::pull(&plan, &storage.store, &ca_certs).await?;
        let env_files = phases::env_files(&plan, &ca_certs).await?;
        let prepared = Prepared {
            images: &images,
            env_files: &env_files,
        };
        let site = Site {
            host: &b2c_runtime::System,
            etc: std::path::Path::new("/etc"),
            hostname: &hostname,
        };
        // crun and the reaper block: keep them off the async workers, which
        // go on renewing the lease.
        Ok(tokio::task::block_in_place(|| {
            b2c_runtime::run_pipeline(&plan, &prepared, &site)
        }))
    })
}

fn fail(e: BootError) -> Outcome {
    error!("{e}");
    Outcome::setup_failed()
}
