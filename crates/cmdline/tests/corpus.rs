//! Real boot2container command lines, from public CI templates (see each
//! file's `# source:` line), are accepted and planned as boot2container
//! would run them: each file's `# expect` lines say, for one container
//! (`run-0`, `service-0`, `post-0`…) or for the whole boot (`global`),
//! what boot2container (podman) makes of the line.
//!
//! A file holds the kernel command line, then optionally, after a
//! `--- b2c.extra_args_url ---` line, the text that URL serves.

use std::path::PathBuf;
use std::time::Duration;

use b2c_cmdline::{
    BootPlan, CacheDevice, ContainerPlan, Dns, EnvArg, Namespace, NtpPeer, VolumeSource,
};

const EXTRA: &str = "--- b2c.extra_args_url ---";

struct Entry {
    name: String,
    cmdline: String,
    extra: Option<String>,
    expects: Vec<String>,
    source: Option<String>,
}

fn corpus() -> Vec<Entry> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let (main, extra) = match text.split_once(EXTRA) {
                Some((m, e)) => (m.to_string(), Some(e.to_string())),
                None => (text.clone(), None),
            };
            let comment = |prefix: &str| -> Vec<String> {
                main.lines()
                    .filter_map(|l| l.strip_prefix(prefix))
                    .map(|l| l.trim().to_string())
                    .collect()
            };
            let cmdline = main
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(" ");
            Entry {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                cmdline,
                extra,
                expects: comment("# expect "),
                source: comment("# source: ").into_iter().next(),
            }
        })
        .collect()
}

fn plan(e: &Entry) -> BootPlan {
    let result = match &e.extra {
        Some(extra) => b2c_cmdline::plan_with_extra(&e.cmdline, extra).map(|(p, _)| p),
        None => b2c_cmdline::plan(&e.cmdline),
    };
    result.unwrap_or_else(|err| panic!("{}: not accepted: {err}", e.name))
}

/// `key=value` items, except `command=` and `shutdown=` which take the
/// rest of the line.
fn items(spec: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        for greedy in ["command=", "shutdown="] {
            if let Some(v) = rest.strip_prefix(greedy) {
                out.push((greedy.trim_end_matches('=').to_string(), v.to_string()));
                return out;
            }
        }
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (k, v) = word.split_once('=').unwrap_or((word, ""));
        out.push((k.to_string(), v.to_string()));
        rest = after.trim_start();
    }
    out
}

fn check_container(name: &str, c: &ContainerPlan, spec: &str) {
    let a = &c.args;
    let what = format!("{name}: {}", c.id);
    let mut volumes = Vec::new();
    for (k, v) in items(spec) {
        match k.as_str() {
            "image" => assert_eq!(a.image, v, "{what}"),
            "command" => assert_eq!(format!("{:?}", a.command), v, "{what}"),
            "tty" => assert!(a.tty, "{what}: no -t"),
            "interactive" => assert!(a.interactive, "{what}: no -i"),
            "pid" => {
                assert_eq!(v, "host");
                assert_eq!(a.namespaces.pid, Namespace::Host, "{what}")
            }
            "tls-verify" => assert_eq!(a.tls_verify.to_string(), v, "{what}"),
            "workdir" => assert_eq!(a.workdir.as_deref(), Some(v.as_str()), "{what}"),
            "entrypoint" => assert_eq!(a.entrypoint.as_deref(), Some(v.as_str()), "{what}"),
            "env-file" => assert!(a.env_files.contains(&v), "{what}: {:?}", a.env_files),
            "dns" => {
                assert_eq!(v, "none");
                assert_eq!(a.dns, Some(Dns::None), "{what}")
            }
            "env" => {
                let (key, value) = v.split_once('=').unwrap();
                assert!(
                    a.env
                        .contains(&EnvArg::Set(key.to_string(), value.to_string())),
                    "{what}: {v} not in {:?}",
                    a.env
                );
            }
            "volume" => volumes.push(v),
            _ => panic!("{what}: unknown expectation {k}"),
        }
    }
    // Volumes, in order: SOURCE:DEST[:ro], SOURCE a name or a host path.
    let written: Vec<String> = a
        .volumes
        .iter()
        .map(|m| {
            let source = match &m.source {
                VolumeSource::Named(n) => n.clone(),
                VolumeSource::HostPath(p) => p.clone(),
                other => panic!("{what}: {other:?}"),
            };
            let ro = if m.read_only { ":ro" } else { "" };
            format!("{source}:{}{ro}", m.destination)
        })
        .collect();
    if !volumes.is_empty() || !written.is_empty() {
        assert_eq!(written, volumes, "{what}: volumes");
    }
}

fn check_global(name: &str, p: &BootPlan, spec: &str) {
    for (k, v) in items(spec) {
        match k.as_str() {
            "hostname" => assert_eq!(p.hostname, v, "{name}"),
            "pipefail" => assert!(p.pipefail, "{name}: no b2c.pipefail"),
            "poweroff" => assert_eq!(
                p.end.poweroff_delay,
                Duration::from_secs(v.parse().unwrap()),
                "{name}"
            ),
            "ntp" => {
                let want = match v.as_str() {
                    "auto" => NtpPeer::Auto,
                    "none" => NtpPeer::None,
                    host => NtpPeer::Host(host.into()),
                };
                assert_eq!(p.ntp_peer, want, "{name}")
            }
            "cache" => {
                let want = match v.as_str() {
                    "auto" => CacheDevice::Auto,
                    "none" => CacheDevice::None,
                    "reset" => CacheDevice::Reset,
                    dev => CacheDevice::Device(dev.into()),
                };
                assert_eq!(p.storage.cache_device, want, "{name}")
            }
            "swap" => assert!(p.storage.swap.is_some(), "{name}: no swap"),
            "images" => assert_eq!(p.images.len().to_string(), v, "{name}"),
            "shutdown" => assert_eq!(p.end.shutdown_cmd.as_deref(), Some(v.as_str()), "{name}"),
            _ => panic!("{name}: unknown expectation {k}"),
        }
    }
}

#[test]
fn every_real_line_is_accepted_and_planned_as_boot2container_runs_it() {
    let corpus = corpus();
    assert!(corpus.len() >= 20, "{} lines", corpus.len());
    for e in &corpus {
        assert!(
            e.source.as_deref().is_some_and(|s| !s.is_empty()),
            "{}: no # source: line",
            e.name
        );
        assert!(!e.expects.is_empty(), "{}: no # expect line", e.name);
        let p = plan(e);
        for expect in &e.expects {
            let (target, spec) = expect.split_once(':').unwrap();
            if target == "global" {
                check_global(&e.name, &p, spec);
            } else {
                let c = p
                    .containers
                    .iter()
                    .find(|c| c.id.as_str() == target)
                    .unwrap_or_else(|| panic!("{}: no container {target}", e.name));
                check_container(&e.name, c, spec);
            }
        }
        // Nothing of the line is an error; what has no effect only warns.
        for w in &p.warnings {
            assert!(!w.contains("ERROR"), "{}: {w}", e.name);
        }
    }
}

#[test]
fn the_monitoring_service_of_ci_tron_shares_the_host_pid_namespace() {
    // The line of every CI-tron and Mesa CI-tron job since 2023, which
    // ended the boot with "unknown flag --pid" before.
    let p = b2c_cmdline::plan(
        r#"b2c.run_service="--privileged --tls-verify=false --pid=host docker://10.42.0.1:8002/gfx-ci/ci-tron/telegraf:latest" b2c.hostname=dut-my_farm-1"#,
    )
    .unwrap();
    let telegraf = &p.containers[0];
    assert_eq!(telegraf.args.namespaces.pid, Namespace::Host);
    assert_eq!(p.hostname, "dut-my_farm-1");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
