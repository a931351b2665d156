use super::*;
use serde_json::Value;

fn image(json: Value) -> ImageConfiguration {
    serde_json::from_value(json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": json
    }))
    .unwrap()
}

fn host_files() -> HostFiles<'static> {
    HostFiles {
        resolv_conf: Some(Path::new("/etc/resolv.conf")),
        hostname: Path::new("/etc/hostname"),
        hosts: Some(Path::new("/etc/hosts")),
    }
}

fn args(s: &str) -> ContainerArgs {
    b2c_cmdline::parse_container_args(s).unwrap()
}

/// What a container of `line` (its `b2c.run` value) gets, for an image
/// running /bin/sh, with `host_env` as b2c's environment.
struct Case {
    args: ContainerArgs,
    image: ImageConfiguration,
    user: ResolvedUser,
    volumes: Vec<VolumePlan>,
    host_env: Vec<(String, String)>,
    init: Option<PathBuf>,
}

impl Case {
    fn new(line: &str) -> Case {
        Case {
            args: args(line),
            image: image(json!({"Cmd": ["/bin/sh"]})),
            user: ResolvedUser::root(),
            volumes: Vec::new(),
            host_env: Vec::new(),
            init: None,
        }
    }

    fn inputs(&self) -> SpecInputs<'_> {
        SpecInputs {
            args: &self.args,
            image: &self.image,
            rootfs: Path::new("/storage/containers/run-0/rootfs"),
            hostname: "dut-7",
            host_files: host_files(),
            volumes: &self.volumes,
            user: &self.user,
            env_file: &[],
            extra_env: &[],
            host_env: &self.host_env,
            init: self.init.as_deref(),
        }
    }

    fn spec(&self) -> Value {
        serde_json::to_value(runtime_spec(&self.inputs(), "run-0").unwrap()).unwrap()
    }

    fn env(&self) -> Vec<String> {
        process_env(&self.inputs())
    }
}

fn spec(line: &str) -> Value {
    Case::new(line).spec()
}

fn namespace_types(spec: &Value) -> Vec<String> {
    spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect()
}

fn mount_at<'a>(spec: &'a Value, destination: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["destination"] == destination)
}

/// Sorted: the spec keeps capabilities in sets.
fn caps(spec: &Value, set: &str) -> Vec<String> {
    let mut caps: Vec<String> = spec["process"]["capabilities"][set]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    caps.sort();
    caps
}

#[test]
fn command_follows_podman_rules() {
    let img = image(json!({"Entrypoint": ["/init"], "Cmd": ["--default"]}));
    assert_eq!(process_args(&args("img"), &img), ["/init", "--default"]);
    assert_eq!(process_args(&args("img x y"), &img), ["/init", "x", "y"]);
    assert_eq!(
        process_args(&args("--entrypoint /bin/sh img -c 'exit 3'"), &img),
        ["/bin/sh", "-c", "exit 3"]
    );
    assert_eq!(
        process_args(&args("--entrypoint /bin/sh img"), &img),
        ["/bin/sh"]
    );
    assert_eq!(
        process_args(
            &args(r#"--entrypoint '["/bin/sh","-c"]' img 'exit 3'"#),
            &img
        ),
        ["/bin/sh", "-c", "exit 3"]
    );
}

#[test]
fn init_runs_first_from_its_bind_mount() {
    let mut case = Case::new("--init img echo hi");
    case.init = Some(PathBuf::from("/init"));
    let s = case.spec();
    assert_eq!(
        s["process"]["args"],
        json!([INIT_IN_CONTAINER, "--", "echo", "hi"])
    );
    let m = mount_at(&s, INIT_IN_CONTAINER).unwrap();
    assert_eq!(m["source"], "/init");
    assert_eq!(m["options"], json!(["bind", "ro"]));
    assert!(mount_at(&spec("img"), INIT_IN_CONTAINER).is_none());
}

#[test]
fn the_environment_podman_gives() {
    let mut case = Case::new("img");
    case.image = image(json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/opt/bin:/bin", "A=image"]}));
    case.host_env = vec![
        ("https_proxy".into(), "http://proxy:3128".into()),
        ("SECRET".into(), "b2c".into()),
    ];
    case.user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        home: Some("/home/mesa".into()),
        additional_gids: vec![],
    };
    assert_eq!(
        case.env(),
        [
            "https_proxy=http://proxy:3128",
            "PATH=/opt/bin:/bin",
            "TERM=xterm",
            "container=podman",
            "A=image",
            "HOSTNAME=dut-7",
            "HOME=/home/mesa",
        ]
    );
    // The image's PATH wins over the default; without one, the default.
    let bare = Case::new("img").env();
    assert_eq!(
        bare,
        [
            format!("PATH={DEFAULT_PATH}"),
            "TERM=xterm".into(),
            "container=podman".into(),
            "HOSTNAME=dut-7".into(),
            "HOME=/root".into(),
        ]
    );
}

#[test]
fn dash_e_takes_values_from_b2c_and_drops_unset_ones() {
    let mut case =
        Case::new("-e FROM_B2C -e UNSET_IN_B2C -e 'CI_*' -e HOME=/job -e HOSTNAME=inner img");
    case.host_env = vec![
        ("FROM_B2C".into(), "yes".into()),
        ("CI_JOB_ID".into(), "42".into()),
        ("CI_PROJECT".into(), "mesa".into()),
        ("OTHER".into(), "no".into()),
    ];
    let env = case.env();
    for want in [
        "FROM_B2C=yes",
        "CI_JOB_ID=42",
        "CI_PROJECT=mesa",
        "HOME=/job",
        "HOSTNAME=inner",
    ] {
        assert!(env.contains(&want.to_string()), "{want} not in {env:?}");
    }
    assert!(
        !env.iter()
            .any(|e| e.starts_with("UNSET_IN_B2C") || e.starts_with("OTHER")),
        "{env:?}"
    );
    // --env-host: all of it; --http-proxy=false: not even the proxies.
    let mut host = Case::new("--env-host img");
    host.host_env = vec![
        ("OTHER".into(), "yes".into()),
        ("PATH".into(), "/b2c".into()),
    ];
    let env = host.env();
    assert!(env.contains(&"OTHER=yes".to_string()), "{env:?}");
    assert!(
        env.contains(&format!("PATH={DEFAULT_PATH}")),
        "podman's default wins: {env:?}"
    );
    let mut no_proxy = Case::new("--http-proxy=false img");
    no_proxy.host_env = vec![("http_proxy".into(), "http://p".into())];
    assert!(!no_proxy.env().iter().any(|e| e.starts_with("http_proxy")));
}

#[test]
fn unsetenv_env_merge_tz_and_the_pipeline_last() {
    let mut case = Case::new(
        "--unsetenv TERM --unsetenv HOSTNAME --env-merge 'PATH=/opt:${PATH}' --tz=Europe/Paris -e B2C_PIPELINE_STATUS=user img",
    );
    case.image = image(json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}));
    let extra = [("B2C_PIPELINE_STATUS".to_string(), "0".to_string())];
    let mut inputs = case.inputs();
    inputs.extra_env = &extra;
    let env = process_env(&inputs);
    assert!(env.contains(&"PATH=/opt:/bin".to_string()), "{env:?}");
    assert!(env.contains(&"TZ=Europe/Paris".to_string()), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("TERM=") || e.starts_with("HOSTNAME=")),
        "{env:?}"
    );
    assert!(
        env.contains(&"B2C_PIPELINE_STATUS=0".to_string()),
        "{env:?}"
    );
    let all = Case::new("--unsetenv-all -e KEPT=1 img").env();
    assert_eq!(all, ["KEPT=1"]);
}

#[test]
fn privileged_host_network_spec() {
    let mut case = Case::new("-w /job img");
    case.image = image(json!({"Cmd": ["/bin/sh"], "WorkingDir": "/work", "User": "0:0"}));
    case.volumes = vec![VolumePlan {
        source: "/storage/volumes/job".into(),
        destination: "/job".into(),
        read_only: true,
        named: true,
        filesystem: None,
        options: Vec::new(),
        recursive: true,
        chown: false,
    }];
    let s = case.spec();
    assert_eq!(s["process"]["cwd"], "/job");
    assert_eq!(s["process"]["terminal"], false);
    assert_eq!(s["hostname"], "dut-7");
    assert_eq!(s["process"]["noNewPrivileges"], false);
    let bounding = caps(&s, "bounding");
    assert!(bounding.contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(bounding.len(), CAPABILITIES.len());
    assert_eq!(
        namespace_types(&s),
        ["mount", "pid", "ipc", "uts", "cgroup"],
        "no network namespace: the host's network"
    );
    assert!(s["linux"].get("seccomp").is_none());
    assert_eq!(s["root"]["readonly"], false);
    assert!(mount_at(&s, "/dev").is_some() && mount_at(&s, "/etc/resolv.conf").is_some());
    // The container reads its own cgroup limits at /sys/fs/cgroup.
    assert_eq!(mount_at(&s, "/sys/fs/cgroup").unwrap()["type"], "cgroup");
    let job = s["mounts"].as_array().unwrap().last().unwrap();
    assert_eq!(job["destination"], "/job");
    assert_eq!(job["source"], "/storage/volumes/job");
    assert_eq!(job["options"], json!(["rbind", "ro"]));
    assert_eq!(
        s["process"]["rlimits"],
        json!([{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}])
    );
    assert_eq!(
        s["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
}

#[test]
fn the_host_files_follow_dns_none_and_no_hosts() {
    let mut case = Case::new("img");
    let mut inputs = case.inputs();
    inputs.host_files.resolv_conf = None;
    inputs.host_files.hosts = None;
    let s = serde_json::to_value(runtime_spec(&inputs, "run-0").unwrap()).unwrap();
    assert!(mount_at(&s, "/etc/resolv.conf").is_none());
    assert!(mount_at(&s, "/etc/hosts").is_none());
    assert!(mount_at(&s, "/etc/hostname").is_some());
    case.args = args("--tty img");
    assert_eq!(case.spec()["process"]["terminal"], true);
}

#[test]
fn host_namespaces_are_left_out_and_paths_joined() {
    let s = spec("--pid=host --ipc=host --uts=host --cgroupns=host img");
    assert_eq!(namespace_types(&s), ["mount"]);
    // A host name needs a UTS namespace: the host's own name then.
    assert!(s.get("hostname").is_none(), "{s}");
    let s = spec("--network=none --pid=ns:/proc/1/ns/pid img");
    assert_eq!(
        namespace_types(&s),
        ["mount", "pid", "ipc", "uts", "cgroup", "network"]
    );
    assert_eq!(s["linux"]["namespaces"][1]["path"], "/proc/1/ns/pid");
}

#[test]
fn dropped_capabilities_are_gone_from_every_set() {
    let s = spec("--cap-drop=NET_RAW,sys_admin img");
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        let c = caps(&s, set);
        assert!(
            !c.contains(&"CAP_NET_RAW".into()) && !c.contains(&"CAP_SYS_ADMIN".into()),
            "{set}"
        );
        assert_eq!(c.len(), CAPABILITIES.len() - 2, "{set}");
    }
    let s = spec("--cap-drop=ALL --cap-add=CHOWN,NET_ADMIN img");
    assert_eq!(caps(&s, "effective"), ["CAP_CHOWN", "CAP_NET_ADMIN"]);
    assert!(
        caps(&s, "ambient").is_empty(),
        "ambient ones must be permitted"
    );
    let s = spec("--cap-drop=KILL img");
    assert_eq!(
        caps(&s, "ambient"),
        ["CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"]
    );
    let s = spec("--cap-add=ALL --cap-drop=MKNOD img");
    assert_eq!(caps(&s, "effective").len(), CAPABILITIES.len() - 1);
    assert_eq!(
        caps(&spec("--cap-add=NET_ADMIN img"), "effective").len(),
        CAPABILITIES.len()
    );
}

#[test]
fn security_options() {
    let s = spec(
        "--security-opt seccomp=unconfined --security-opt label=disable \
         --security-opt apparmor=unconfined --security-opt no-new-privileges \
         --security-opt mask=/proc/kcore:/sys/firmware img",
    );
    assert_eq!(s["process"]["noNewPrivileges"], true);
    assert!(s["linux"].get("seccomp").is_none());
    assert!(s["process"].get("apparmorProfile").is_none());
    assert!(s["process"].get("selinuxLabel").is_none());
    assert_eq!(
        s["linux"]["maskedPaths"],
        json!(["/proc/kcore", "/sys/firmware"])
    );
}

#[test]
fn shm_tmpfs_mounts_devices_and_a_read_only_root() {
    let mut case = Case::new(
        "--shm-size=256m --read-only --device /dev/kvm --device /dev/sda:/dev/xvda:r \
         --device-cgroup-rule='c 226:* rwm' img",
    );
    case.volumes = vec![
        VolumePlan {
            source: "tmpfs".into(),
            destination: "/scratch".into(),
            read_only: false,
            named: false,
            filesystem: Some("tmpfs".into()),
            options: vec!["noexec".into(), "size=64m".into()],
            recursive: false,
            chown: false,
        },
        VolumePlan {
            source: "/srv".into(),
            destination: "/srv".into(),
            read_only: false,
            named: false,
            filesystem: None,
            options: vec!["rprivate".into(), "nosuid".into()],
            recursive: false,
            chown: false,
        },
    ];
    let s = case.spec();
    let shm = mount_at(&s, "/dev/shm").unwrap();
    assert_eq!(shm["type"], "tmpfs");
    assert!(shm["options"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("size={}", 256 << 20))));
    assert_eq!(s["root"]["readonly"], true);
    for dir in ["/run", "/tmp", "/var/tmp"] {
        assert_eq!(mount_at(&s, dir).unwrap()["type"], "tmpfs", "{dir}");
    }
    let xvda = mount_at(&s, "/dev/xvda").unwrap();
    assert_eq!(xvda["source"], "/dev/sda");
    assert_eq!(xvda["options"], json!(["rbind", "ro"]));
    assert!(
        mount_at(&s, "/dev/kvm").is_none(),
        "in the host's /dev already"
    );
    assert_eq!(
        s["linux"]["resources"]["devices"][1],
        json!({"allow": true, "type": "c", "major": 226, "access": "rwm"})
    );
    let scratch = mount_at(&s, "/scratch").unwrap();
    assert_eq!(scratch["type"], "tmpfs");
    assert_eq!(scratch["options"], json!(["rw", "noexec", "size=64m"]));
    assert_eq!(
        mount_at(&s, "/srv").unwrap()["options"],
        json!(["bind", "rw", "rprivate", "nosuid"])
    );
    // Without --shm-size, the host's /dev/shm; without --read-only, none.
    let plain = spec("--read-only --read-only-tmpfs=false img");
    assert!(mount_at(&plain, "/dev/shm").is_none() && mount_at(&plain, "/tmp").is_none());
}

#[test]
fn limits_sysctls_and_process_settings() {
    let mut case = Case::new(
        "--memory=512m --memory-swap=-1 --cpus=1.5 --cpuset-cpus=0 --pids-limit=100 \
         --blkio-weight=300 --cgroup-conf=memory.high=400M --oom-kill-disable \
         --ulimit nofile=1024:2048 --ulimit core=-1 --sysctl kernel.msgmax=65536 \
         --oom-score-adj=100 --umask=0027 --personality=LINUX32 img",
    );
    case.user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        home: None,
        additional_gids: vec![44, 105],
    };
    let s = case.spec();
    let r = &s["linux"]["resources"];
    assert_eq!(
        r["memory"],
        json!({"limit": 512 << 20, "swap": -1, "disableOOMKiller": true})
    );
    assert_eq!(
        r["cpu"],
        json!({"quota": 150000, "period": 100000, "cpus": "0"})
    );
    assert_eq!(r["pids"], json!({"limit": 100}));
    assert_eq!(r["blockIO"], json!({"weight": 300}));
    assert_eq!(r["unified"], json!({"memory.high": "400M"}));
    assert_eq!(
        s["process"]["rlimits"],
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
            {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX}
        ])
    );
    assert_eq!(s["linux"]["sysctl"], json!({"kernel.msgmax": "65536"}));
    assert_eq!(s["process"]["oomScoreAdj"], 100);
    assert_eq!(s["process"]["user"]["umask"], 0o027);
    assert_eq!(s["process"]["user"]["additionalGids"], json!([44, 105]));
    assert_eq!(s["linux"]["personality"]["domain"], "LINUX32");
    // --ulimit host: none set, b2c's own pass on.
    assert!(spec("--ulimit host img")["process"]
        .get("rlimits")
        .is_none_or(|r| r == &json!([])));
}

#[test]
fn no_command_at_all_is_an_error() {
    let mut case = Case::new("scratch-image");
    case.image = image(json!({}));
    let e = runtime_spec(&case.inputs(), "c0").unwrap_err();
    assert!(e.to_string().contains("b2c.run"), "{e}");
}
