//! b2c's PID 1. It only sequences the phases of a boot; each phase is a
//! call into the crate that owns it.

mod end;
mod failure;
mod phases;
mod pipeline;

use b2c_cmdline::Config;
use log::error;

use crate::end::{EndOptions, Outcome};
use crate::failure::BootError;

fn main() {
    // Before anything can log: /dev, /proc and friends.
    let early = b2c_system::mounts::mount_early();
    b2c_system::log::init(false);
    std::panic::set_hook(Box::new(|panic| {
        error!("b2c crashed: {panic}");
        end::finish(Outcome::setup_failed(), &EndOptions::default())
    }));
    b2c_system::reaper::start();
    phases::banner();

    let mut end = EndOptions::default();
    let outcome = match early
        .map_err(BootError::Early)
        .and_then(|_| phases::config())
    {
        Err(e) => fail(e),
        Ok((cmdline, config)) => {
            end = EndOptions::from(&config);
            boot(&cmdline, config, &mut end).unwrap_or_else(fail)
        }
    };
    end::finish(outcome, &end)
}

fn boot(cmdline: &str, mut config: Config, end: &mut EndOptions) -> Result<Outcome, BootError> {
    phases::announce(&config);
    let mut modules = phases::load_modules(&config)?;
    phases::block_devices();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    runtime.block_on(async {
        // Kept alive for the whole job: a lease must not lapse under a
        // running container.
        let network = phases::network(&config).await?;
        // b2c.ca_cert, read once: here if the extra args need it, else
        // after the clock is set.
        let mut trust = None;
        if let Some(url) = config.extra_args_url.clone() {
            let early = phases::trust(&config).await?;
            let merged = phases::extra_args(cmdline, &url, &config, &early).await?;
            trust = (merged.ca_certs == config.ca_certs).then_some(early);
            config = merged;
            *end = EndOptions::from(&config);
            phases::load_asked_modules(&mut modules, &config)?;
        }
        phases::hostname(&config, &network)?;
        phases::clock(&config, &network).await;
        let storage = phases::storage(&config, &mut modules)?;
        phases::make_room(&config, &storage);
        let trust = match trust {
            Some(trust) => trust,
            None => phases::trust(&config).await?,
        };
        let images = phases::pull(&config, &storage.store, &trust).await?;
        let env_files = phases::env_files(&config, &trust).await?;
        let prepared = pipeline::Prepared {
            images: &images,
            env_files: &env_files,
        };
        let storage = phases::STORAGE;
        // crun and the reaper block: keep them off the async workers, which
        // go on renewing the lease.
        tokio::task::block_in_place(|| Ok(pipeline::run(&config, storage.as_ref(), &prepared)))
    })
}

fn fail(e: BootError) -> Outcome {
    error!("{e}");
    Outcome::setup_failed()
}
