//! The OCI runtime spec of one container, from its image configuration and
//! its `b2c.run` arguments.
//!
//! Containers run privileged on the host network, as with boot2container:
//! the job is hardware testing, so it needs every capability, the host's
//! devices and a writable /sys.

use std::path::{Path, PathBuf};

use b2c_cmdline::{ContainerArgs, VolumePlan};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxDeviceCgroupBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every capability of Linux 6.x; crun drops those the running kernel
/// doesn't know.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The /etc files a container gets from the host.
#[derive(Debug, Clone, Copy)]
pub struct HostFiles<'a> {
    /// `None` with `--dns=none`: the image keeps its own.
    pub resolv_conf: Option<&'a Path>,
    pub hostname: &'a Path,
    pub hosts: &'a Path,
}

/// What the spec is made from.
#[derive(Debug)]
pub struct SpecInputs<'a> {
    pub args: &'a ContainerArgs,
    pub image: &'a ImageConfiguration,
    /// The merged (overlay) root filesystem.
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub host_files: HostFiles<'a>,
    /// Volumes (`-v`), already resolved to host paths.
    pub volumes: &'a [VolumePlan],
    /// The process's `(uid, gid)`, from [`user_spec`] resolved in the image.
    pub user: (u32, u32),
    /// From `--env-file`: after the image's variables, before `-e`.
    pub env_file: &'a [(String, String)],
    /// Set after the image's and the user's variables: the pipeline's.
    pub extra_env: &'a [(String, String)],
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image {0} has no command: give one after the image in b2c.run")]
    NoCommand(String),
    #[error("cannot build the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// The command line, podman's way: `--entrypoint` replaces the image's
/// entrypoint and drops its `Cmd`; a command after the image replaces `Cmd`.
pub fn process_args(args: &ContainerArgs, image: &ImageConfiguration) -> Vec<String> {
    let config = image.config().as_ref();
    let (entrypoint, default_cmd) = match args.entrypoint_words() {
        Some(e) => (e, Vec::new()),
        None => (
            config
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default(),
            config.and_then(|c| c.cmd().clone()).unwrap_or_default(),
        ),
    };
    let cmd = if args.command.is_empty() {
        default_cmd
    } else {
        args.command.clone()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then `--env-file`, then `-e`, then
/// `extra`; later wins.
pub fn process_env(
    args: &ContainerArgs,
    image: &ImageConfiguration,
    env_file: &[(String, String)],
    extra: &[(String, String)],
) -> Vec<String> {
    let mut env: Vec<String> = image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let set: Vec<(String, String)> = args
        .env
        .iter()
        .filter_map(|e| match e {
            b2c_cmdline::EnvArg::Set(k, v) => Some((k.clone(), v.clone())),
            b2c_cmdline::EnvArg::FromHost(_) => None,
        })
        .collect();
    let user = env_file.iter().chain(&set).chain(extra);
    for (key, value) in user {
        let prefix = format!("{key}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{key}={value}"));
    }
    env
}

fn bind(source: impl Into<PathBuf>, destination: &str, recursive: bool, read_only: bool) -> Mount {
    let kind = if recursive { "rbind" } else { "bind" };
    let access = if read_only { "ro" } else { "rw" };
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source.into())
        .options(vec![kind.to_string(), access.to_string()])
        .build()
        .expect("a bind mount has every field")
}

fn mounts(files: &HostFiles, volumes: &[VolumePlan]) -> Vec<Mount> {
    let proc_mount = MountBuilder::default()
        .destination("/proc")
        .typ("proc")
        .source("proc")
        .options(vec!["nosuid".into(), "noexec".into(), "nodev".into()])
        .build()
        .expect("proc mount has every field");
    let mut mounts = vec![
        proc_mount,
        // Privileged: the host's devices, including devpts, shm and mqueue.
        bind("/dev", "/dev", true, false),
        bind("/sys", "/sys", true, false),
        bind(files.hostname, "/etc/hostname", false, false),
        bind(files.hosts, "/etc/hosts", false, false),
    ];
    if let Some(resolv_conf) = files.resolv_conf {
        mounts.push(bind(resolv_conf, "/etc/resolv.conf", false, false));
    }
    // Volumes last: they may sit below any of the above.
    mounts.extend(
        volumes
            .iter()
            .map(|v| bind(&v.source, &v.destination, true, v.read_only)),
    );
    mounts
}

/// `-u`, else the image's `User`: resolved against the image's own files.
pub fn user_spec(args: &ContainerArgs, image: &ImageConfiguration) -> String {
    args.user
        .clone()
        .or_else(|| image.config().as_ref().and_then(|c| c.user().clone()))
        .unwrap_or_default()
}

/// Builds the runtime spec (config.json) of one container.
pub fn runtime_spec(plan: &SpecInputs, id: &str) -> Result<Spec, SpecError> {
    let args = process_args(plan.args, plan.image);
    if args.is_empty() {
        return Err(SpecError::NoCommand(plan.args.image.clone()));
    }
    let image_config = plan.image.config().as_ref();
    let cwd = plan
        .args
        .workdir
        .clone()
        .or_else(|| image_config.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let (uid, gid) = plan.user;

    let caps: Capabilities = serde_json::from_value(serde_json::json!(ALL_CAPABILITIES))
        .expect("capability names are valid");
    let capabilities = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(caps)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(process_env(
            plan.args,
            plan.image,
            plan.env_file,
            plan.extra_env,
        ))
        .cwd(cwd)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .capabilities(capabilities)
        .no_new_privileges(false)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(1_048_576u64)
            .hard(1_048_576u64)
            .build()?])
        .build()?;

    // No network namespace: containers share the host network.
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let all_devices = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![all_devices])
                .build()?,
        )
        .cgroups_path(PathBuf::from(format!("/b2c/{id}")))
        .masked_paths(Vec::<String>::new())
        .readonly_paths(Vec::<String>::new())
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(plan.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(plan.hostname)
        .mounts(mounts(&plan.host_files, plan.volumes))
        .process(process)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
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
            hosts: Path::new("/etc/hosts"),
        }
    }

    fn args(s: &str) -> ContainerArgs {
        b2c_cmdline::parse_container_args(s).unwrap()
    }

    #[test]
    fn command_follows_podman_rules() {
        let img = image(serde_json::json!({"Entrypoint": ["/init"], "Cmd": ["--default"]}));
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
    }

    #[test]
    fn environment_is_layered() {
        let img = image(serde_json::json!({"Env": ["PATH=/bin", "A=image", "B=image"]}));
        let env = process_env(
            &args("-e A=user -e C=user img"),
            &img,
            &[("B".into(), "file".into()), ("C".into(), "file".into())],
            &[("B2C_PIPELINE_STATUS".into(), "0".into())],
        );
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "B=file",
                "A=user",
                "C=user",
                "B2C_PIPELINE_STATUS=0"
            ]
        );
        let bare = process_env(&args("img"), &image(serde_json::json!({})), &[], &[]);
        assert_eq!(bare, [DEFAULT_PATH]);
    }

    #[test]
    fn privileged_host_network_spec() {
        let root = tempfile::tempdir().unwrap();
        let img =
            image(serde_json::json!({"Cmd": ["/bin/sh"], "WorkingDir": "/work", "User": "0:0"}));
        let a = args("-w /job img");
        let plan = SpecInputs {
            args: &a,
            image: &img,
            rootfs: root.path(),
            hostname: "dut-7",
            host_files: host_files(),
            volumes: &[VolumePlan {
                source: "/storage/volumes/job".into(),
                destination: "/job".into(),
                read_only: true,
                named: true,
                filesystem: None,
                options: Vec::new(),
                recursive: true,
                chown: false,
            }],
            user: (0, 0),
            env_file: &[],
            extra_env: &[],
        };
        let spec = runtime_spec(&plan, "c0").unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["cwd"], "/job");
        assert_eq!(json["hostname"], "dut-7");
        assert_eq!(json["process"]["noNewPrivileges"], false);
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&serde_json::json!("CAP_SYS_ADMIN")));
        assert_eq!(caps.len(), ALL_CAPABILITIES.len());
        let ns: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "{ns:?}");
        assert!(json["linux"].get("seccomp").is_none());
        let dests: Vec<_> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(dests.contains(&"/dev") && dests.contains(&"/etc/resolv.conf"));
        let job = &json["mounts"].as_array().unwrap().last().unwrap();
        assert_eq!(job["destination"], "/job");
        assert_eq!(job["source"], "/storage/volumes/job");
        assert_eq!(job["options"], serde_json::json!(["rbind", "ro"]));
        let no_dns = HostFiles {
            resolv_conf: None,
            ..host_files()
        };
        assert!(!mounts(&no_dns, &[])
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
    }

    #[test]
    fn no_command_at_all_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let img = image(serde_json::json!({}));
        let a = args("scratch-image");
        let plan = SpecInputs {
            args: &a,
            image: &img,
            rootfs: root.path(),
            hostname: "h",
            host_files: host_files(),
            volumes: &[],
            user: (0, 0),
            env_file: &[],
            extra_env: &[],
        };
        let e = runtime_spec(&plan, "c0").unwrap_err();
        assert!(e.to_string().contains("b2c.run"), "{e}");
    }
}
