//! `b2c volume push|pull DIR VOLUME`: one sync of a directory with its
//! bucket, as a boot syncs a `b2c.volume` (the same planner, client,
//! concurrency and console lines).

use std::path::PathBuf;

use b2c_cmdline::{parse_minio, parse_volume, MinioAlias, Remote};
use b2c_storage::volume::s3::S3Client;
use b2c_storage::volume::sync::{self, Bucket, PushMode};
use b2c_storage::volume::RETRY;
use clap::ValueEnum;

use crate::Failure;

/// `b2c volume`'s arguments.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// push: DIR to the bucket; pull: the bucket into DIR
    #[arg(value_enum)]
    direction: Direction,
    /// The directory: the volume's content
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// A `b2c.volume` value: NAME,mirror=ALIAS/BUCKET[/PREFIX] (or
    /// pull_from=/push_to=) and the mirror flags (overwrite, remove,
    /// exclude=PATTERN, preserve, encrypt_key=KEY); the events are ignored
    #[arg(value_name = "VOLUME")]
    volume: String,
    /// A `b2c.minio` value, ALIAS,URL,ACCESS_KEY,SECRET_KEY (repeatable).
    /// Other users of this machine can read a command's arguments: the
    /// B2C_MINIO environment variable (values separated by spaces) is
    /// read instead when there is no --minio
    #[arg(long, value_name = "ALIAS,URL,ACCESS_KEY,SECRET_KEY")]
    minio: Vec<String>,
    /// Also trust the CA(s) in this PEM file (repeatable)
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
    /// Also show the libraries' messages
    #[arg(long)]
    debug: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Direction {
    Push,
    Pull,
}

pub fn run(args: Args) -> Result<(), Failure> {
    crate::init_logging(args.debug);
    let (options, warnings) =
        parse_volume(&args.volume).map_err(|e| Failure(format!("VOLUME: {e}")))?;
    for w in warnings {
        eprintln!("WARNING: {w}");
    }
    let remote = match args.direction {
        Direction::Push => options.push_to.as_ref(),
        Direction::Pull => options.pull_from.as_ref(),
    }
    .ok_or_else(|| {
        Failure(format!(
            "VOLUME: {} has nowhere to {} (mirror=, push_to= or pull_from=)",
            options.name,
            match args.direction {
                Direction::Push => "push to",
                Direction::Pull => "pull from",
            }
        ))
    })?;
    let endpoints = endpoints(&args.minio)?;
    let endpoint = find_endpoint(&endpoints, remote)?;
    let trust = crate::pull::trust_with(&args.ca_certs)?;
    let client = S3Client::new(
        endpoint,
        &remote.bucket,
        options.encrypt_key.as_ref(),
        &trust,
        &Default::default(),
        RETRY,
    )
    .map_err(Failure::error)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))?;
    let bucket = Bucket::new(&client, remote);
    let report = runtime.block_on(async {
        match args.direction {
            Direction::Push => sync::push(&options, &args.dir, &bucket, PushMode::Mirror).await,
            Direction::Pull => {
                std::fs::create_dir_all(&args.dir)
                    .map_err(|e| Failure(format!("{}: {e}", args.dir.display())))?;
                sync::pull(&options, &args.dir, &bucket).await
            }
        }
        .map_err(Failure::error)
    })?;
    println!("{report}");
    Ok(())
}

/// `--minio`, else `$B2C_MINIO`; never shown back, keys included.
fn endpoints(given: &[String]) -> Result<Vec<MinioAlias>, Failure> {
    let from_env;
    let values: Vec<&str> = if given.is_empty() {
        from_env = std::env::var("B2C_MINIO").unwrap_or_default();
        from_env.split_whitespace().collect()
    } else {
        given.iter().map(String::as_str).collect()
    };
    values
        .iter()
        .map(|v| parse_minio(v).map_err(|e| Failure(format!("--minio: {e}"))))
        .collect()
}

fn find_endpoint<'a>(
    endpoints: &'a [MinioAlias],
    remote: &Remote,
) -> Result<&'a MinioAlias, Failure> {
    endpoints
        .iter()
        .find(|m| m.alias == remote.alias)
        .ok_or_else(|| {
            Failure(format!(
                "no --minio (or B2C_MINIO) declares the alias {}",
                remote.alias
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_arguments_and_errors_hide_the_keys() {
        let given = vec!["gw,http://127.0.0.1:9000,AK,SECRET-42".to_string()];
        let e = endpoints(&given).unwrap();
        let remote = Remote::parse("gw/bucket/p").unwrap();
        assert_eq!(
            find_endpoint(&e, &remote).unwrap().url,
            "http://127.0.0.1:9000"
        );
        let other = Remote::parse("elsewhere/bucket").unwrap();
        let err = find_endpoint(&e, &other).unwrap_err().0;
        assert!(
            err.contains("elsewhere") && !err.contains("SECRET-42"),
            "{err}"
        );
        let bad = endpoints(&["gw,ftp://x,AK,SECRET-42".to_string()])
            .unwrap_err()
            .0;
        assert!(!bad.contains("SECRET-42"), "{bad}");
    }
}
