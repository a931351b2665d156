//! `b2c cmdline "LINE"`: check an APPEND line before booting it.

use b2c_cmdline::{Config, ContainerArgs, NtpPeer};

use crate::Failure;

/// `b2c cmdline`'s arguments: the words of a kernel command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel command line, in one or more words (joined by spaces;
    /// /proc/cmdline when none are given). Words may start with `-`: after
    /// the first word, everything is part of the line
    #[arg(
        value_name = "LINE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let line = if args.words.is_empty() {
        std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| Failure(format!("/proc/cmdline: {e}")))?
    } else {
        args.words.join(" ")
    };
    // The same message, with the same prefix, as the console of a boot.
    let config = b2c_cmdline::parse(&line).map_err(Failure::error)?;
    for warning in &config.warnings {
        eprintln!("WARNING: {warning}");
    }
    print!("{}", plan(&config));
    Ok(())
}

/// What a boot with this configuration does, in order, then every parsed
/// option (the `Debug` form, which never lags behind the parser).
pub fn plan(c: &Config) -> String {
    let mut out = String::from("plan:\n");
    let mut step = |text: String| out.push_str(&format!("  - {text}\n"));
    if !c.modules.is_empty() {
        step(format!("load kernel modules {}", c.modules.join(", ")));
    }
    step(if !c.ifaces.is_empty() {
        let names: Vec<&str> = c.ifaces.iter().map(|i| i.name.as_str()).collect();
        format!("network: b2c.iface {}", names.join(", "))
    } else if let Some(ip) = &c.kernel_ip {
        format!("network: kernel ip= {ip:?}")
    } else {
        "network: DHCP on every ethernet link, first lease wins".to_string()
    });
    if let Some(url) = &c.extra_args_url {
        step(format!("fetch more options from {url}"));
    }
    step(format!("host name {}", c.hostname));
    step(match &c.ntp_peer {
        NtpPeer::None => "clock: left alone".to_string(),
        NtpPeer::Auto => "clock: SNTP from the DHCP NTP server, else pool.ntp.org".to_string(),
        NtpPeer::Host(h) => format!("clock: SNTP from {h}"),
    });
    let all: Vec<&ContainerArgs> = c
        .services
        .iter()
        .chain(&c.containers)
        .chain(&c.post_containers)
        .collect();
    let mut images: Vec<&str> = all.iter().map(|a| a.image.as_str()).collect();
    images.dedup();
    if images.is_empty() {
        step("no container to run".to_string());
    } else {
        step(format!("pull {}", images.join(", ")));
    }
    for (kind, list) in [
        ("start service", &c.services),
        ("run", &c.containers),
        ("run post container", &c.post_containers),
    ] {
        for args in list {
            step(format!("{kind} {}", describe(args)));
        }
    }
    if c.pipefail {
        step("b2c.pipefail: the first failing b2c.run container skips the rest".to_string());
    }
    step("print the pipeline status".to_string());
    step(match (&c.shutdown_cmd, c.poweroff_delay.is_zero()) {
        (Some(cmd), _) => format!("run the shutdown command {cmd:?}"),
        (None, true) => "power off".to_string(),
        (None, false) => format!("power off after {:?}", c.poweroff_delay),
    });
    out.push_str(&format!("\noptions:\n{c:#?}\n"));
    out
}

fn describe(args: &ContainerArgs) -> String {
    let mut s = args.image.clone();
    if let Some(e) = &args.entrypoint {
        s.push_str(&format!(" (entrypoint {e})"));
    }
    if !args.command.is_empty() {
        s.push_str(&format!(" {:?}", args.command));
    }
    if !args.tls_verify {
        s.push_str(" [--tls-verify=false]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmdline {
        #[command(flatten)]
        args: Args,
    }

    fn words(argv: &[&str]) -> Vec<String> {
        Cmdline::try_parse_from(std::iter::once("cmdline").chain(argv.iter().copied()))
            .unwrap()
            .args
            .words
    }

    /// A kernel line's words may start with `-`, and its `--` (the init's
    /// arguments follow) is part of it: once the line has begun, nothing
    /// is read as an option.
    #[test]
    fn words_are_kept_verbatim() {
        for argv in [
            &["b2c.run=alpine:3", "b2c.pipefail"][..],
            &["console=ttyS0", "--", "init-arg"],
            &["-ti", "--tls-verify=false"],
            &["b2c.run=alpine", "--help"],
            &["-", "x"],
        ] {
            assert_eq!(words(argv), argv, "{argv:?}");
        }
        assert!(words(&[]).is_empty());
    }

    #[test]
    fn plan_lists_the_pipeline_in_order() {
        let c = b2c_cmdline::parse(
            r#"b2c.run_service="svc:1" b2c.run="docker://alpine:3 echo hi" b2c.post_container=post:2 b2c.ntp_peer=none"#,
        )
        .unwrap();
        let p = plan(&c);
        let svc = p.find("start service svc:1").unwrap();
        let run = p.find(r#"run alpine:3 ["echo", "hi"]"#).unwrap();
        let post = p.find("run post container post:2").unwrap();
        assert!(svc < run && run < post, "{p}");
        assert!(p.contains("clock: left alone"), "{p}");
        assert!(p.contains("options:\nConfig {"), "{p}");
    }
}
