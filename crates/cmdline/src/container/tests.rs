use super::*;

fn parse(s: &str) -> ContainerArgs {
    parse_container_args(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `podman run --help` of podman 4.3.1 and the hidden and global flags,
/// kept as data: `[-s, ]--long [TYPE]  description`.
const REFERENCE: &str = include_str!("../podman-run-flags.txt");

/// (short, long, type word): a flag without a type word is a boolean.
fn reference_flags() -> Vec<(Option<char>, String, Option<String>)> {
    REFERENCE
        .lines()
        .filter(|l| !l.starts_with('#') && l.trim_start().starts_with('-'))
        .map(|line| {
            let line = line.trim_start();
            let (short, rest) = match line.strip_prefix('-').and_then(|r| r.split_once(", ")) {
                Some((s, rest)) if s.len() == 1 => (s.chars().next(), rest),
                _ => (None, line),
            };
            let rest = rest.strip_prefix("--").expect("a long flag");
            // The type word follows the name after one space; the
            // description comes after several.
            let (name, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = (!after.starts_with(' ') && !after.is_empty())
                .then(|| after.split(' ').next().unwrap().to_string());
            (short, name.to_string(), kind)
        })
        .collect()
}

/// A value each flag b2c acts on accepts; "x" for the others.
fn sample(long: &str) -> &'static str {
    match long {
        "arch" | "override-arch" => "arm64",
        "os" | "override-os" => "linux",
        "variant" | "override-variant" => "v8",
        "platform" => "linux/arm64/v8",
        "authfile" => "/etc/b2c/auth.json",
        "creds" => "user:pass",
        "blkio-weight" => "500",
        "cap-add" | "cap-drop" => "NET_RAW",
        "cgroup-conf" => "memory.high=1G",
        "cgroupns" | "ipc" | "pid" | "uts" | "network" | "net" => "host",
        "cpu-period" | "cpu-rt-period" => "100000",
        "cpu-quota" | "cpu-rt-runtime" => "50000",
        "cpu-shares" => "512",
        "cpus" => "1.5",
        "cpuset-cpus" | "cpuset-mems" => "0",
        "device" => "/dev/null",
        "device-cgroup-rule" => "c 1:3 rwm",
        "dns" => "10.0.0.53",
        "add-host" => "farm-gw:10.0.0.1",
        "env" => "A=1",
        "env-merge" => "PATH=/opt/bin:${PATH}",
        "entrypoint" => "/bin/sh",
        "group-add" => "video",
        "memory" | "memory-reservation" | "shm-size" => "64m",
        "memory-swap" => "-1",
        "memory-swappiness" => "10",
        "mount" => "type=tmpfs,target=/scratch",
        "oom-score-adj" => "100",
        "personality" => "LINUX32",
        "pids-limit" => "100",
        "pull" => "missing",
        "security-opt" => "no-new-privileges",
        "stop-signal" => "SIGINT",
        "stop-timeout" => "3",
        "sysctl" => "kernel.msgmax=65536",
        "tmpfs" => "/scratch",
        "ulimit" => "nofile=1024:2048",
        "umask" => "0022",
        "user" => "1000",
        "volume" => "job:/job",
        "workdir" => "/job",
        _ => "x",
    }
}

#[test]
fn every_podman_run_flag_parses_with_its_arity() {
    let reference = reference_flags();
    assert!(reference.len() > 160, "{} flags read", reference.len());
    for (short, long, kind) in &reference {
        let flag = podman::long(long).unwrap_or_else(|| panic!("--{long} is unknown"));
        let expected = match kind.as_deref() {
            None => Takes::Bool,
            Some("strings") => Takes::List,
            Some(_) => Takes::Value,
        };
        assert_eq!(flag.takes, expected, "--{long} ({kind:?})");
        if let Some(s) = short {
            assert_eq!(flag.short, Some(*s), "--{long}");
        }
        let value = sample(long);
        let mut forms = Vec::new();
        if expected == Takes::Bool {
            forms.push(format!("--{long} img cmd"));
            forms.push(format!("--{long}=true img cmd"));
            forms.extend(short.map(|s| format!("-{s} img cmd")));
        } else {
            forms.push(format!("--{long} '{value}' img cmd"));
            forms.push(format!("--{long}='{value}' img cmd"));
            forms.extend(short.map(|s| format!("-{s} '{value}' img cmd")));
        }
        for line in forms {
            let a = parse_container_args(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(
                (a.image.as_str(), a.command.as_slice()),
                ("img", &["cmd".to_string()][..]),
                "{line}"
            );
        }
    }
    // And the parser knows no podman flag the reference lacks.
    let names: Vec<&str> = reference.iter().map(|(_, l, _)| l.as_str()).collect();
    for f in podman::FLAGS {
        assert!(
            names.contains(&f.long),
            "--{} is not in podman-run-flags.txt",
            f.long
        );
    }
}

#[test]
fn unknown_flags_are_errors_naming_them() {
    use ContainerArgsError::*;
    assert_eq!(
        parse_container_args("--bogus img"),
        Err(UnknownFlag("--bogus".into()))
    );
    assert_eq!(
        parse_container_args("--bogus=1 img"),
        Err(UnknownFlag("--bogus".into()))
    );
    assert_eq!(
        parse_container_args("-x img"),
        Err(UnknownFlag("-x".into()))
    );
    assert_eq!(
        parse_container_args("-tix img"),
        Err(UnknownFlag("-x".into()))
    );
    let e = parse_container_args("--no-such-flag img")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--no-such-flag"), "{e}");
}

#[test]
fn short_flags_group_as_cobra_does() {
    for s in ["-ti img", "-it img", "-t -i img", "--tty --interactive img"] {
        let a = parse(s);
        assert!(a.tty && a.interactive, "{s}");
    }
    let a = parse("-dit img");
    assert!(a.tty && a.interactive);
    assert_eq!(a.ignored, ["-d"]);
    // A value flag ends the group and takes the rest, or the next word.
    let a = parse("-teA=1 -eB=2 -e C=3 -e=D=4 img");
    assert!(a.tty);
    assert_eq!(
        a.env,
        [
            EnvArg::Set("A".into(), "1".into()),
            EnvArg::Set("B".into(), "2".into()),
            EnvArg::Set("C".into(), "3".into()),
            EnvArg::Set("D".into(), "4".into()),
        ]
    );
    let a = parse("-tv /dev/shm:/shm img");
    assert_eq!(a.volumes[0].destination, "/shm");
    // Booleans never take the next word; `=false` turns them off.
    let a = parse("--tty=false -t=false img");
    assert!(!a.tty);
    assert_eq!(parse("--rm false").image, "false");
    assert_eq!(
        parse_container_args("-e"),
        Err(ContainerArgsError::MissingValue("-e".into()))
    );
    assert_eq!(
        parse_container_args("--env"),
        Err(ContainerArgsError::MissingValue("--env".into()))
    );
}

#[test]
fn image_with_command_and_flags() {
    let a = parse(
        "-ti --tls-verify=false --entrypoint=/bin/sh -e A=1 --env B=x=y -w /job \
         docker://10.42.0.1:8002/infra/reg:latest -c 'echo hi; exit 3'",
    );
    assert_eq!(a.image, "10.42.0.1:8002/infra/reg:latest");
    assert_eq!(a.command, vec!["-c", "echo hi; exit 3"]);
    assert_eq!(a.entrypoint_words(), Some(vec!["/bin/sh".to_string()]));
    assert_eq!(
        a.env,
        vec![
            EnvArg::Set("A".into(), "1".into()),
            EnvArg::Set("B".into(), "x=y".into())
        ]
    );
    assert_eq!(a.workdir.as_deref(), Some("/job"));
    assert!(a.tty && a.interactive && !a.tls_verify);
    assert!(a.ignored.is_empty() && a.warnings.is_empty());
}

#[test]
fn plain_image_keeps_defaults() {
    let a = parse("alpine:3");
    assert_eq!(a.image, "alpine:3");
    assert!(a.command.is_empty() && a.tls_verify && !a.tty && a.http_proxy && a.read_only_tmpfs);
    assert_eq!(a.namespaces, Namespaces::default());
    assert_eq!(a.namespaces.network, Namespace::Host);
}

#[test]
fn flags_after_the_image_belong_to_the_command() {
    let a = parse("img -e X=1 --help");
    assert_eq!(a.command, vec!["-e", "X=1", "--help"]);
    assert!(a.env.is_empty());
    let a = parse("-t -- img --flag");
    assert_eq!(
        (a.image.as_str(), a.command.as_slice()),
        ("img", &["--flag".to_string()][..])
    );
}

#[test]
fn env_from_b2c_and_json_entrypoints() {
    let a = parse("-e VAR -e 'PREFIX_*' -e A= --env-host --http-proxy=false --unsetenv TERM --unsetenv-all --env-merge 'PATH=/opt:${PATH}' img");
    assert_eq!(
        a.env,
        [
            EnvArg::FromHost("VAR".into()),
            EnvArg::FromHost("PREFIX_*".into()),
            EnvArg::Set("A".into(), "".into())
        ]
    );
    assert!(a.env_host && !a.http_proxy && a.unsetenv_all);
    assert_eq!(a.unsetenv, ["TERM"]);
    assert_eq!(
        a.env_merge,
        [("PATH".to_string(), "/opt:${PATH}".to_string())]
    );
    let a = parse(r#"--entrypoint '["/bin/sh", "-c"]' img 'exit 3'"#);
    assert_eq!(
        a.entrypoint_words(),
        Some(vec!["/bin/sh".into(), "-c".into()])
    );
    assert!(matches!(
        parse_container_args("-e =x img"),
        Err(ContainerArgsError::BadValue { .. })
    ));
}

#[test]
fn volumes_with_podman_options() {
    let a = parse(
        "-v tmp:/mnt/tmp -v /dev/shm:/shm:ro --volume=job:/job:rw,z -v /srv:/srv:Z,U,rprivate,noexec,nosuid,nodev \
         -v /scratch -v ./data:/data:bind,shared -v /a:/b:copy img",
    );
    let v = &a.volumes;
    assert_eq!(v[0].source, VolumeSource::Named("tmp".into()));
    assert!(!v[0].read_only && v[0].recursive && v[0].options.is_empty());
    assert_eq!(v[1].source, VolumeSource::HostPath("/dev/shm".into()));
    assert!(v[1].read_only);
    assert_eq!(v[2].source, VolumeSource::Named("job".into()));
    assert!(v[2].options.is_empty(), "z is a no-op without SELinux");
    assert!(v[3].chown);
    assert_eq!(v[3].options, ["rprivate", "noexec", "nosuid", "nodev"]);
    assert_eq!(v[4].source, VolumeSource::Anonymous);
    assert_eq!(v[4].destination, "/scratch");
    assert_eq!(v[5].source, VolumeSource::HostPath("/data".into()));
    assert!(!v[5].recursive);
    assert_eq!(v[5].options, ["shared"]);
    for bad in [
        "-v tmp:relative img",
        "-v tmp:/a:rx img",
        "-v a/b:/c img",
        "-v a:/b:c:d img",
        "-v :/b img",
        "-v /a:/b:O img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn mounts_and_tmpfs() {
    let a = parse(
        "--mount type=bind,source=/dev/shm,target=/shm,readonly,bind-propagation=rslave \
         --mount type=volume,src=cache,dst=/cache --mount type=volume,target=/anon \
         --mount type=tmpfs,target=/run/t,tmpfs-size=64m,tmpfs-mode=1777 \
         --mount type=devpts,target=/dev/pts2 --tmpfs /tmp --tmpfs /run:rw,exec,size=1m \
         --mount type=image,source=x,target=/i img",
    );
    let v = &a.volumes;
    assert_eq!(v.len(), 7);
    assert_eq!(v[0].source, VolumeSource::HostPath("/dev/shm".into()));
    assert!(v[0].read_only);
    assert_eq!(v[0].options, ["rslave"]);
    assert_eq!(v[1].source, VolumeSource::Named("cache".into()));
    assert_eq!(v[2].source, VolumeSource::Anonymous);
    assert_eq!(v[3].source, VolumeSource::Filesystem("tmpfs".into()));
    assert_eq!(v[3].options, ["nosuid", "nodev", "size=64m", "mode=1777"]);
    assert_eq!(v[4].source, VolumeSource::Filesystem("devpts".into()));
    assert_eq!(v[5].destination, "/tmp");
    assert_eq!(v[5].options, ["noexec", "nosuid", "nodev"]);
    assert_eq!(v[6].options, ["nosuid", "nodev", "exec", "size=1m"]);
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    for bad in [
        "--mount target=/x img",
        "--mount type=bind,target=/x img",
        "--mount type=nfs,target=/x img",
        "--tmpfs rel img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn namespaces_devices_capabilities_security() {
    let a = parse(
        "--privileged --pid=host --ipc=host --uts=host --cgroupns=host --network=none \
         --device /dev/kvm --device=/dev/sda:/dev/xvda:r,/dev/dri --device-cgroup-rule='c 226:* rwm' \
         --cap-drop=net_raw,SYS_ADMIN --cap-add all --security-opt seccomp=unconfined \
         --security-opt label=disable --security-opt apparmor=unconfined \
         --security-opt no-new-privileges --security-opt mask=/proc/kcore:/sys/firmware img",
    );
    let ns = &a.namespaces;
    assert_eq!(
        (&ns.pid, &ns.ipc, &ns.uts, &ns.cgroup, &ns.network),
        (
            &Namespace::Host,
            &Namespace::Host,
            &Namespace::Host,
            &Namespace::Host,
            &Namespace::Private
        )
    );
    assert_eq!(
        a.devices,
        [
            DeviceArg {
                host: "/dev/kvm".into(),
                container: "/dev/kvm".into(),
                permissions: "rwm".into()
            },
            DeviceArg {
                host: "/dev/sda".into(),
                container: "/dev/xvda".into(),
                permissions: "r".into()
            },
            DeviceArg {
                host: "/dev/dri".into(),
                container: "/dev/dri".into(),
                permissions: "rwm".into()
            },
        ]
    );
    assert_eq!(
        a.resources.device_rules,
        [DeviceRule {
            kind: 'c',
            major: Some(226),
            minor: None,
            access: "rwm".into()
        }]
    );
    assert_eq!(a.cap_drop, ["CAP_NET_RAW", "CAP_SYS_ADMIN"]);
    assert_eq!(a.cap_add, ["ALL"]);
    assert!(a.security.no_new_privileges);
    assert_eq!(a.security.masked_paths, ["/proc/kcore", "/sys/firmware"]);
    assert!(
        a.ignored.is_empty() && a.warnings.is_empty(),
        "{:?} {:?}",
        a.ignored,
        a.warnings
    );
    assert_eq!(parse("--uts=host --hostname x img").warnings.len(), 1);
    let a = parse("--pid=ns:/proc/1/ns/pid --ipc=container:db --network=bridge img");
    assert_eq!(a.namespaces.pid, Namespace::Path("/proc/1/ns/pid".into()));
    assert_eq!(a.namespaces.ipc, Namespace::Private);
    assert_eq!(a.namespaces.network, Namespace::Host);
    assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
    for bad in [
        "--pid=bogus img",
        "--cap-drop=FLY img",
        "--security-opt bogus img",
        "--device relative img",
        "--device-cgroup-rule='x 1:1 r' img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn resources_limits_and_signals() {
    let a = parse(
        "--memory=512m --memory-reservation 256m --memory-swap=-1 --memory-swappiness=0 \
         --oom-kill-disable --cpus=1.5 --cpu-shares 512 --cpuset-cpus=0-1 --cpuset-mems 0 \
         --pids-limit=100 --blkio-weight 300 --cgroup-conf=memory.high=400M \
         --shm-size=256m --ulimit nofile=1024:2048,core=-1 --sysctl kernel.msgmax=65536 \
         --sysctl=net.ipv4.ping_group_range='0 0' --oom-score-adj=-500 --stop-signal=SIGINT \
         --stop-timeout 3 --read-only --read-only-tmpfs=false --init --umask 0027 img",
    );
    let r = &a.resources;
    assert_eq!(r.memory, Some(512 << 20));
    assert_eq!(r.memory_reservation, Some(256 << 20));
    assert_eq!(r.memory_swap, Some(-1));
    assert_eq!(r.memory_swappiness, Some(0));
    assert!(r.oom_kill_disable);
    assert_eq!((r.cpu_quota, r.cpu_period), (Some(150_000), Some(100_000)));
    assert_eq!(r.cpu_shares, Some(512));
    assert_eq!(r.cpuset_cpus.as_deref(), Some("0-1"));
    assert_eq!(r.pids_limit, Some(100));
    assert_eq!(r.blkio_weight, Some(300));
    assert_eq!(r.unified, [("memory.high".to_string(), "400M".to_string())]);
    assert_eq!(a.shm_size, Some(256 << 20));
    assert_eq!(
        a.ulimits.limits,
        [
            ("RLIMIT_NOFILE".to_string(), 1024, 2048),
            ("RLIMIT_CORE".to_string(), u64::MAX, u64::MAX)
        ]
    );
    assert_eq!(
        a.sysctls,
        [
            ("kernel.msgmax".to_string(), "65536".to_string()),
            ("net.ipv4.ping_group_range".to_string(), "0 0".to_string())
        ]
    );
    assert_eq!(a.oom_score_adj, Some(-500));
    assert_eq!((a.stop_signal, a.stop_timeout), (Some(2), Some(3)));
    assert!(a.read_only && !a.read_only_tmpfs && a.init);
    assert_eq!(a.umask, Some(0o027));
    assert!(parse("--ulimit host img").ulimits.host);
    assert_eq!(parse("--pids-limit=-1 img").resources.pids_limit, Some(-1));
    for bad in [
        "--memory=lots img",
        "--cpus=many img",
        "--pids-limit=x img",
        "--ulimit nofile img",
        "--stop-signal=SIGNOPE img",
        "--sysctl novalue img",
        "--umask 999 img",
        "--blkio-weight 5 img",
        "--cpuset-cpus=a img",
        "--oom-score-adj=5000 img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn network_files_and_identity() {
    let a = parse(
        "--dns=none --dns-search=farm.test,lab.test --dns-option ndots:2 \
         --add-host=gw:10.0.0.1 --add-host 'a;b:fe80::1' --no-hosts --hostname dut \
         -u mesa:video --group-add video,keep-groups,44 -w /job --tz=Europe/Paris img",
    );
    assert_eq!(a.dns, Some(Dns::None));
    assert_eq!(a.dns_search, ["farm.test", "lab.test"]);
    assert_eq!(a.dns_options, ["ndots:2"]);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        a.add_hosts,
        [
            ("gw".to_string(), ip("10.0.0.1")),
            ("a".into(), ip("fe80::1")),
            ("b".into(), ip("fe80::1"))
        ]
    );
    assert!(a.no_hosts);
    assert_eq!(a.hostname.as_deref(), Some("dut"));
    assert_eq!(a.user.as_deref(), Some("mesa:video"));
    assert_eq!(a.group_add, ["video", "44"]);
    assert_eq!(a.tz.as_deref(), Some("Europe/Paris"));
    let b = parse("--dns 1.1.1.1 --dns=9.9.9.9,2620:fe::fe img");
    assert_eq!(
        b.dns,
        Some(Dns::Servers(vec![
            ip("1.1.1.1"),
            ip("9.9.9.9"),
            ip("2620:fe::fe")
        ]))
    );
    for bad in [
        "--dns=dns.example img",
        "--add-host=nocolon img",
        "--add-host=h:notip img",
        "-w relative img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn image_selection_pull_and_credentials() {
    let a = parse("--platform=linux/aarch64/v8 --pull=newer --creds ci:s3cret --authfile https://h/auth.json img");
    assert_eq!(
        a.platform,
        Platform {
            os: Some("linux".into()),
            architecture: Some("arm64".into()),
            variant: Some("v8".into())
        }
    );
    assert_eq!(a.pull, PullPolicy::Always);
    let creds = a.creds.as_ref().unwrap();
    assert_eq!(creds.username, "ci");
    assert_eq!(creds.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(a.authfile.as_deref(), Some("https://h/auth.json"));
    // The password never shows in Debug, so neither in `b2c cmdline`.
    let debug = format!("{a:?}");
    assert!(
        !debug.contains("s3cret") && debug.contains("***"),
        "{debug}"
    );
    let a = parse("--arch=x86_64 --os linux --variant v2 img");
    assert_eq!(a.platform.architecture.as_deref(), Some("amd64"));
    assert_eq!(a.platform.to_string(), "linux/amd64/v2");
    assert_eq!(parse("--pull missing img").pull, PullPolicy::Missing);
    assert_eq!(parse("--pull=never img").pull, PullPolicy::Never);
    assert_eq!(
        parse("--override-arch=arm64 img")
            .platform
            .architecture
            .as_deref(),
        Some("arm64")
    );
    for bad in [
        "--pull=sometimes img",
        "--creds :pw img",
        "--platform=/ img",
    ] {
        assert!(
            matches!(
                parse_container_args(bad),
                Err(ContainerArgsError::BadValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn flags_without_effect_are_recorded_once_without_their_values() {
    let a = parse(
        "--rm --privileged --network=host --name job --label a=1 -l b=2 --annotation x=y \
         --replace --log-driver=none -d -q --restart=always --secret=tok --health-cmd true img",
    );
    assert_eq!(
        a.ignored,
        [
            "--name",
            "--label",
            "-l",
            "--annotation",
            "--replace",
            "--log-driver",
            "-d",
            "-q",
            "--restart",
            "--secret",
            "--health-cmd"
        ]
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let a = parse("--privileged=false img");
    assert_eq!(a.warnings.len(), 1);
}

#[test]
fn env_files() {
    assert_eq!(
        parse_env_file("# comment\n\nA=1\r\n  B=two words\nC=\n").unwrap(),
        vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words".into()),
            ("C".into(), "".into())
        ]
    );
    assert_eq!(
        parse_env_file("A=1\nNOVALUE\n").unwrap_err(),
        "line 2: \"NOVALUE\" is not KEY=VALUE"
    );
}

#[test]
fn errors_name_the_problem() {
    use ContainerArgsError::*;
    assert_eq!(parse_container_args("-ti"), Err(NoImage));
    assert_eq!(parse_container_args(""), Err(NoImage));
    assert_eq!(parse_container_args("--"), Err(NoImage));
    assert_eq!(parse_container_args("docker://"), Err(NoImage));
    assert_eq!(parse_container_args("img 'sh"), Err(Quotes));
    assert!(matches!(
        parse_container_args("--tls-verify=maybe img"),
        Err(BadValue { .. })
    ));
}
