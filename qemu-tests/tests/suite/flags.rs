//! End-to-end: podman's `run` flags as boot2container lines use them,
//! seen from inside the containers (namespaces shared with the host,
//! capabilities really dropped, limits read back from cgroup v2, mounts,
//! the environment podman gives, a pty with `-t`, `--init`), and values
//! boot2container takes without a fuss (a host name with `_`, an empty
//! NTP peer, `sleep`'s syntax). One boot, many containers.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.
//! Values of `b2c.run` cannot hold `"` (the kernel's quoting), hence the
//! shell tricks. The containers come from `b2c.extra_args_url`, as CI
//! farms give them: the kernel takes 2048 bytes of command line.

use crate::common;

use common::{assert_verdict, boot_on, img, opt, options, start_net};
use qemu_tests::NetOptions;

fn run(flags: &str, script: &str) -> String {
    opt("b2c.run", &format!("{flags} {} sh -c '{script}'", img()))
}

/// The namespace ids a container printed: (kind, its own, PID 1's).
fn namespaces<'a>(lines: &[&'a str], who: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(who))
        .map(|l| {
            let mut f = l.split_whitespace().collect::<Vec<_>>();
            f.resize(3, "");
            (f[0], f[1], f[2])
        })
        .collect()
}

#[test]
fn podman_flags_take_effect_inside_the_containers() {
    let ns_loop = "for n in ipc uts cgroup pid; do echo NS-$((2+2)):WHO $n $(readlink /proc/self/ns/$n) $(readlink /proc/1/ns/$n); done";
    let extra = [
        opt(
            "b2c.run_service",
            &format!(
                "--stop-signal=SIGUSR1 --stop-timeout=3 {} sh -c 'trap exit\\ 0 USR1; while :; do sleep 1; done'",
                img()
            ),
        ),
        run(
            "--pid=host --ipc=host --uts=host --cgroupns=host",
            &format!(
                "echo HOSTPID-$((1+1)):$(readlink /proc/1/exe):$(hostname); \
                 echo CRUNRO-$(grep -c /usr/bin/crun.ro. /proc/1/mountinfo); \
                 echo CRUNEXE-$((1+4)):$(readlink /proc/$PPID/exe); {}",
                ns_loop.replace("WHO", "host")
            ),
        ),
        run(
            "",
            &format!(
                "echo OWNPID-$((1+2)):$(readlink /proc/1/exe); {}",
                ns_loop.replace("WHO", "own")
            ),
        ),
        run(
            "--cap-drop=NET_RAW,SYS_ADMIN",
            "c=$(grep CapEff /proc/self/status | cut -f2); echo CAPS-$((3+4)):$(( 0x$c >> 13 & 1 )):$(( 0x$c >> 21 & 1 )):$(( 0x$c >> 12 & 1 )); mount -t tmpfs none /tmp 2>/dev/null && echo MOUNT-$((4+4)):yes || echo MOUNT-$((4+4)):denied",
        ),
        run(
            "--security-opt no-new-privileges --security-opt seccomp=unconfined --security-opt label=disable --security-opt apparmor=unconfined",
            "echo NNP-$((5+4)):$(grep NoNewPrivs /proc/self/status | cut -f2):$(grep Seccomp: /proc/self/status | cut -f2)",
        ),
        run(
            "--read-only --tmpfs /scratch:size=1m --shm-size=8m --mount type=tmpfs,target=/t2,tmpfs-size=2m -v /etc:/hostetc:ro,z",
            "touch /rootfile 2>/dev/null && r=rw || r=ro; touch /tmp/x && t=tmp; touch /hostetc/x 2>/dev/null && e=rw || e=ro; set -- $(df -k /dev/shm | tail -n1); s=$2; set -- $(df -k /scratch | tail -n1); k=$2; set -- $(df -k /t2 | tail -n1); echo RO-$((5+5)):$r:$t:$e:$s:$k:$2",
        ),
        run(
            "--ulimit nofile=1024:2048 --sysctl kernel.msgmax=12345",
            "echo LIMITS-$((6+5)):$(ulimit -n):$(ulimit -Hn):$(cat /proc/sys/kernel/msgmax)",
        ),
        run(
            "--memory=64m --cpus=0.5 --pids-limit=50",
            "cd /sys/fs/cgroup; echo CGROUP-$((6+6)):$(cat memory.max):$(cat cpu.max):$(cat pids.max)",
        ),
        run(
            "--device /dev/null:/dev/b2cnull --add-host farm-gw:10.99.0.254 --dns-search farm.test --dns-option ndots:3 --hostname inner -w /tmp -u 1000:1000 --group-add 44",
            "[ -c /dev/b2cnull ] && d=chardev; echo IDENT-$((7+6)):$d:$(grep farm-gw /etc/hosts | cut -f1):$(grep search /etc/resolv.conf):$(grep options /etc/resolv.conf):$(hostname):$(pwd):$(id -u):$(id -G):$HOME",
        ),
        run(
            "-e B2CTESTVAR -e B2C_UNSET_VAR -e A=1",
            "echo ENV-$((7+7)):$B2CTESTVAR:${B2C_UNSET_VAR-unset}:$A:$TERM:$container:$HOME:$HOSTNAME",
        ),
        // $$: the shell's own stdout, not that of the $(…) around it.
        run(
            "-t",
            "[ -t 1 ] && t=tty; echo TTY-$((8+7)):$t:$(readlink /proc/$$/fd/1):$TERM",
        ),
        run(
            "",
            "[ -t 1 ] && echo NOTTY-$((8+8)):tty || echo NOTTY-$((8+8)):pipe",
        ),
        run("-ti", "echo ASK-$((9+8)); read x; echo GOT-$((9+9)):$x"),
        run("--init", "echo INIT-$((10+9)):$(readlink /proc/1/exe)"),
    ]
    .join("\n");
    let net = start_net(&NetOptions::default());
    let url = net.serve_file("flags-args", &extra).unwrap();
    // b2c's own environment has what the kernel passes to init
    // (B2CTESTVAR); the lenient values are on the kernel's line.
    let mut opts = options(
        "podman-flags",
        &format!(
            "B2CTESTVAR=hello b2c.hostname=dut-my_farm-1 b2c.ntp_peer= b2c.poweroff_delay=1s \
             b2c.extra_args_url={url}"
        ),
    );
    opts.answer = Some(("ASK-17".into(), "typed\n".into()));
    let boot = boot_on(&net, &opts);
    let one = |marker: &str| -> String {
        let found = boot.after_marker(marker);
        assert_eq!(found.len(), 1, "{marker}: {found:?}\n{boot}");
        found[0].to_string()
    };

    // --pid=host: the container sees b2c as PID 1; the other namespaces
    // are the host's too, and a container without the flags has its own.
    assert_eq!(one("HOSTPID-2:"), "/init:dut-my_farm-1");
    assert_eq!(one("OWNPID-3:"), "/bin/busybox");
    // b2c's crun is read-only where it lies, so that it does not copy and
    // execute itself again before each container: the container's parent,
    // `crun run`, runs from /usr/bin/crun, not from a memfd.
    assert_eq!(one("CRUNRO-"), "1");
    assert_eq!(one("CRUNEXE-5:"), "/usr/bin/crun");
    let lines: Vec<&str> = boot.after_marker("NS-4:");
    let host = namespaces(&lines, "host ");
    let own = namespaces(&lines, "own ");
    assert_eq!(host.len(), 4, "{lines:?}\n{boot}");
    for ((kind, mine, pid1), (_, theirs, _)) in host.iter().zip(&own) {
        assert_eq!(mine, pid1, "--{kind}=host: not b2c's namespace\n{boot}");
        assert_ne!(
            mine, theirs,
            "{kind}: a default container shares it\n{boot}"
        );
    }
    // A dropped capability is really gone; the others stay.
    assert_eq!(one("CAPS-7:"), "0:0:1");
    assert_eq!(one("MOUNT-8:"), "denied");
    assert_eq!(one("NNP-9:"), "1:0");
    // --read-only, its tmpfs, --shm-size, --tmpfs, --mount, -v …:ro,z.
    assert_eq!(one("RO-10:"), "ro:tmp:ro:8192:1024:2048");
    assert_eq!(one("LIMITS-11:"), "1024:2048:12345");
    // cgroup v2 limits, read back by the container in its own cgroup.
    assert_eq!(one("CGROUP-12:"), "67108864:50000 100000:50");
    assert_eq!(
        one("IDENT-13:"),
        "chardev:10.99.0.254:search farm.test:options ndots:3:inner:/tmp:1000:1000 44:/"
    );
    // -e VAR takes b2c's value, or nothing; podman's defaults are there.
    assert_eq!(
        one("ENV-14:"),
        "hello:unset:1:xterm:podman:/root:dut-my_farm-1"
    );
    // -t: a pty; without: a pipe, as under podman.
    let tty = one("TTY-15:");
    assert!(
        tty.starts_with("tty:/dev/pts/") && tty.ends_with(":xterm"),
        "{tty}\n{boot}"
    );
    assert_eq!(one("NOTTY-16:"), "pipe");
    // -ti: what is typed on the console reaches the container.
    assert_eq!(one("GOT-18:"), "typed");
    // --init: the init is PID 1, the command its child.
    assert_eq!(one("INIT-19:"), "/run/podman-init");
    // --stop-signal: the service trapped SIGUSR1 and exited 0.
    assert!(
        boot.has_line("stopped service service-0 (status 0)"),
        "the service was not stopped with its --stop-signal\n{boot}"
    );
    // The lenient values warn, and nothing else does but the unused cache.
    let warnings: Vec<&str> = boot.lines_containing("WARNING: ").collect();
    assert!(
        warnings.iter().any(|w| w.contains("b2c.ntp_peer")),
        "{warnings:#?}\n{boot}"
    );
    assert!(boot.error_lines().is_empty(), "{boot}");
    assert_verdict(&boot, 0);
}
