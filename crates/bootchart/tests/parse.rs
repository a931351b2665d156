//! Real console logs (tests/fixtures) read into timelines, and the logs
//! people actually paste: cut short, with several boots, CRLF line ends,
//! lines of a later b2c (layers, services), `dmesg` output.

use b2c_bootchart::{boots, parse, parse_boot, BootTimeline, Kind, ParseError, Span, State};

const LAYERS: &str = include_str!("fixtures/layers.log");
const CACHE: &str = include_str!("fixtures/cache-auto-aarch64.log");
const UNREACHABLE: &str = include_str!("fixtures/unreachable-registry.log");
const MALFORMED: &str = include_str!("fixtures/malformed-run.log");
const FOUR: &str = include_str!("fixtures/cache-service-four-images.log");

/// Top-level spans as (name, start, end, state), times in ms to compare
/// them exactly.
fn top(t: &BootTimeline) -> Vec<(&str, i64, i64, State)> {
    t.spans
        .iter()
        .map(|s| (s.name.as_str(), ms(s.start), ms(s.end), s.state))
        .collect()
}

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

fn span<'a>(t: &'a BootTimeline, name: &str) -> &'a Span {
    t.rows()
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:#?}", t.spans))
}

use State::{Done, Failed, Unfinished};

#[test]
fn a_boot_with_two_images_pulled_at_once() {
    let t = parse(LAYERS).unwrap();
    assert_eq!((t.boot, t.boots), (1, 1));
    assert_eq!(t.version.as_deref(), Some("b2c 0.1.0 (x86_64)"));
    assert_eq!(t.status, Some(0));
    assert_eq!(ms(t.end), 6653);
    assert_eq!(
        top(&t),
        [
            // Until the kernel's `Run /init as init process`.
            ("kernel", 0, 3707, Done),
            ("b2c start", 3707, 3905, Done),
            ("kernel modules", 3905, 4921, Done),
            ("network", 4934, 5061, Done),
            ("clock", 5062, 5072, Done),
            // No news of its own: until the pull's header.
            ("cache", 5075, 5082, Done),
            ("pull", 5082, 5679, Done),
            ("run-0", 5690, 6199, Done),
            ("run-1", 6199, 6631, Done),
            // From the last container's exit: the status line and the
            // power-off.
            ("shutdown", 6631, 6653, Done),
        ]
    );
    let pull = span(&t, "pull");
    let images: Vec<_> = pull
        .children
        .iter()
        .map(|s| (s.name.as_str(), ms(s.start), ms(s.end), s.kind))
        .collect();
    // They overlap: two rows.
    assert_eq!(
        images,
        [
            ("10.99.0.1:5000/b2c/layers:latest", 5121, 5679, Kind::Image),
            (
                "10.99.0.1:5000/b2c/layers-zstd:latest",
                5159,
                5650,
                Kind::Image
            ),
        ]
    );
    assert_eq!(
        pull.children[0].detail,
        "1.1 MB downloaded, 2.0 MB unpacked; 4 layers, 4 downloaded, 0 reused"
    );
    assert_eq!(span(&t, "kernel modules").detail, "10 loaded");
    assert_eq!(
        span(&t, "network").detail,
        "eth0: 10.99.0.41/24 by DHCP from 10.99.0.1"
    );
    assert_eq!(
        span(&t, "run-1").detail,
        "10.99.0.1:5000/b2c/layers-zstd:latest, status 0"
    );
    assert_eq!(t.rows().len(), 12);
}

#[test]
fn four_images_pulled_at_once_with_their_layers_and_a_service() {
    let t = parse(FOUR).unwrap();
    assert_eq!(
        top(&t),
        [
            ("kernel", 0, 5141, Done),
            ("b2c start", 5141, 5358, Done),
            ("kernel modules", 5358, 8072, Done),
            ("network", 8099, 8328, Done),
            ("clock", 8329, 8347, Done),
            ("cache", 8353, 11864, Done),
            ("pull", 11895, 21829, Done),
            ("service-0", 21842, 31440, Done),
            ("run-0", 21973, 23899, Done),
            ("run-1", 23901, 25919, Done),
            ("run-2", 25922, 30873, Done),
            ("shutdown", 31440, 31689, Done),
        ]
    );
    let pull = span(&t, "pull");
    let images: Vec<(&str, i64, i64, usize)> = pull
        .children
        .iter()
        .map(|s| (s.name.as_str(), ms(s.start), ms(s.end), s.children.len()))
        .collect();
    assert_eq!(
        images,
        [
            ("10.99.0.1:5000/b2c/busybox:latest", 11963, 14500, 1),
            ("10.99.0.1:5000/b2c/layers:latest", 12147, 14413, 4),
            ("10.99.0.1:5000/b2c/layers-zstd:latest", 12158, 14470, 4),
            ("10.99.0.1:5000/b2c/big:latest", 12170, 21829, 2),
        ]
    );
    // The big layer: `done: … in 9.006 s` at 21.697.
    let big = &pull.children[3].children[1];
    assert_eq!(
        (big.name.as_str(), ms(big.start), ms(big.end), big.kind),
        ("sha256:e2b47aa651e8", 12691, 21697, Kind::Layer)
    );
    assert_eq!(
        big.detail,
        "62.9 MB downloaded, 62.9 MB unpacked, 2 entries"
    );
    assert_eq!(
        span(&t, "service-0").detail,
        "10.99.0.1:5000/b2c/busybox:latest, stopped, status 143"
    );
    // Its row count: 12 top-level spans, 4 images, 11 layers.
    assert_eq!(t.rows().len(), 27);
}

#[test]
fn a_cache_formatted_on_first_boot_and_the_kernel_lines_after_the_power_off() {
    let t = parse(CACHE).unwrap();
    assert_eq!(t.version.as_deref(), Some("b2c 0.1.0 (aarch64)"));
    let cache = span(&t, "cache");
    assert_eq!((ms(cache.start), ms(cache.end)), (4832, 8137));
    assert_eq!(cache.detail, "/dev/vda1 mounted on /storage (new)");
    // The ext4 modules loaded for the cache are the cache's time, not a
    // second modules phase.
    assert_eq!(
        t.spans
            .iter()
            .filter(|s| s.name == "kernel modules")
            .count(),
        1
    );
    // The kernel's `reboot: Power down` is the last stamp.
    let shutdown = span(&t, "shutdown");
    assert_eq!((ms(shutdown.start), ms(shutdown.end)), (9739, 10032));
    assert_eq!(ms(t.end), 10032);
}

#[test]
fn an_unreachable_registry_fails_the_image_and_its_container() {
    let t = parse(UNREACHABLE).unwrap();
    assert_eq!(t.status, Some(1));
    let image = span(&t, "10.99.0.1:5999/b2c/busybox:latest");
    assert_eq!(
        (ms(image.start), ms(image.end), image.state),
        (4203, 7302, Failed)
    );
    // The pull phase itself did its job: it ended.
    assert_eq!(span(&t, "pull").state, Done);
    let run = span(&t, "run-0");
    assert_eq!(
        (ms(run.start), ms(run.end), run.state),
        (7310, 7313, Failed)
    );
}

#[test]
fn a_boot_that_fails_on_its_command_line_has_no_other_phase() {
    let t = parse(MALFORMED).unwrap();
    assert_eq!(
        top(&t),
        [
            ("kernel", 0, 4051, Done),
            // Until its ERROR line.
            ("b2c start", 4051, 4154, Failed),
            ("shutdown", 4154, 4202, Done),
        ]
    );
}

#[test]
fn a_log_cut_off_mid_pull_ends_its_open_spans_at_the_last_stamp() {
    let cut = &LAYERS[..LAYERS.find("does not speak TLS").unwrap()];
    let t = parse(cut).unwrap();
    assert_eq!(t.status, None);
    assert_eq!(ms(t.end), 5273);
    let pull = span(&t, "pull");
    assert_eq!((ms(pull.end), pull.state), (5273, Unfinished));
    for image in &pull.children {
        assert_eq!(
            (ms(image.end), image.state),
            (5273, Unfinished),
            "{image:?}"
        );
    }
    assert!(!t.spans.iter().any(|s| s.kind == Kind::Shutdown));
    // Cut within the cache's phase, which never printed news: unfinished.
    let t = parse(&LAYERS[..LAYERS.find("pulling").unwrap()]).unwrap();
    assert_eq!(span(&t, "cache").state, Unfinished);
    assert_eq!(span(&t, "clock").state, Done);
}

#[test]
fn several_boots_in_one_log_are_told_apart() {
    let two = format!("{MALFORMED}\n{LAYERS}");
    let all = boots(&two);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, Some(1));
    assert_eq!((all[1].boot, all[1].boots), (2, 2));
    assert_eq!(parse(&two).unwrap(), all[1]);
    assert_eq!(parse_boot(&two, 1).unwrap(), all[0]);
    assert_eq!(
        parse_boot(&two, 3),
        Err(ParseError::NoSuchBoot { asked: 3, boots: 2 })
    );
    // Without the kernel's lines: b2c's banner.
    let b2c_only: String = two
        .lines()
        .filter(|l| l.contains("]: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(boots(&b2c_only), all_but_the_kernel(&all));
    // Without its banner either: its clock going back. Not by a few
    // milliseconds: two threads' lines may come out of order.
    let t = boots("[   50.000]: running run-0: a\n[   49.990]: x\n[    2.000]: running run-0: b\n");
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].spans[0].detail, "b");
}

/// The boots as read without the kernel's lines: the kernel's span ends
/// at b2c's banner, and the end is b2c's last line.
fn all_but_the_kernel(all: &[BootTimeline]) -> Vec<BootTimeline> {
    let b2c_only: Vec<String> = [MALFORMED, LAYERS]
        .iter()
        .map(|log| {
            log.lines()
                .filter(|l| l.contains("]: "))
                .map(|l| format!("{l}\n"))
                .collect()
        })
        .collect();
    let mut out: Vec<BootTimeline> = b2c_only.iter().map(|l| parse(l).unwrap()).collect();
    for (i, b) in out.iter_mut().enumerate() {
        (b.boot, b.boots) = (all[i].boot, all[i].boots);
    }
    out
}

#[test]
fn crlf_line_ends_change_nothing() {
    let crlf = LAYERS.replace('\n', "\r\n");
    assert_eq!(parse(&crlf).unwrap(), parse(LAYERS).unwrap());
}

#[test]
fn a_log_without_b2c_lines_is_an_error() {
    assert_eq!(
        parse("[    0.000000] Linux version 6.1\nhello\n"),
        Err(ParseError::NoB2cLines)
    );
    assert_eq!(parse(""), Err(ParseError::NoB2cLines));
}

/// Lines of today's b2c that the fixtures predate: a layer per line with
/// its own time, a service, a mirror falling back, a pull from the store.
const LATER: &str = "\
[    0.000000] Linux version 6.1.0-57-amd64
[    1.500000] Run /init as init process
[    1.600]: b2c 0.1.0 (x86_64), kernel Linux 6.1.0-57-amd64
[    1.650]: kernel command line: console=ttyS0 b2c.run=…
[    2.000]: block devices: none
\x1b[0Ksection_start:1:b2c_network[collapsed=true]\r\x1b[0K[    2.010]: setting up the network
[    2.400]: network: eth0: 10.0.0.2/24 by DHCP from 10.0.0.1, router 10.0.0.1
[    2.401]: network: eth1: 10.1.0.2/24 by DHCP from 10.1.0.1
[    2.405]: setting the clock from pool.ntp.org
[   12.405]: WARNING: cannot get the time from pool.ntp.org: timed out (check b2c.ntp_peer)
[   12.900]: options from b2c.extra_args_url: b2c.run
[   12.910]: setting up the storage (b2c.cache_device=auto)
[   13.000]: kernel modules: loaded ext4
[   13.200]: cache: /dev/sda1 mounted on /storage
[   13.300]: pulling reg/a:1, reg/b:2, reg/c:3
[   13.310]: pulling reg/a:1 from mirror m:5000 (of reg)
[   13.320]: using the stored image reg/c:3 (sha256:1, pulled 2026-11-24 10:00:00 UTC; --pull=missing): 2 layers reused from the store, none downloaded
[   13.330]: pulling reg/b:2 from reg
[   13.500]: WARNING: mirror m:5000 (of reg) failed: reg/a:1: HTTP 500; falling back to the registry reg
[   13.510]: pulling reg/a:1 from reg
[   15.330]: pulling reg/a:1: 40.0 / 120.0 MB
[   15.600]: reg/b:2: layer sha256:bbbbbbbbbbbb done: 10.0 MB downloaded, 30.0 MB unpacked, 800 entries, in 2.200 s
[   16.000]: reg/b:2 (sha256:b2) from reg is up to date: 3 layers reused from the store, none downloaded
[   17.010]: reg/a:1: layer sha256:aaaaaaaaaaa1 done: 60.0 MB downloaded, 200.0 MB unpacked, 4000 entries, in 3.500 s
[   17.330]: pulling reg/a:1: 100.0 / 120.0 MB
[   17.900]: reg/a:1: layer sha256:aaaaaaaaaaa2 done: 60.0 MB downloaded, 190.0 MB unpacked, 3000 entries, in 4.380 s
[   17.950]: pulled reg/a:1 (sha256:a1) from reg: 2 layers, 2 downloaded, 0 reused from the store; 120.0 MB downloaded, 390.0 MB unpacked, in 4.6 s (26.1 MB/s)
[   18.000]: starting the services
[   18.000]: starting service service-0: reg/c:3
[   18.200]: running run-0: reg/a:1
hello from the job
[   19.200]: run-0 exited with status 3
[   19.250]: running post-0: reg/b:2
[   19.300]: ERROR: cannot run post-0 (reg/b:2): crun failed
[   19.300]: post-0 exited with status 1
[   19.400]: stopped service service-0 (status 143)
[   19.500]: Execution is over, pipeline status: 3
[   19.500]: Rebooting the computer
[   19.600000] reboot: Restarting system
";

#[test]
fn layers_services_mirrors_and_stored_images() {
    let t = parse(LATER).unwrap();
    assert_eq!(
        top(&t),
        [
            ("kernel", 0, 1500, Done),
            ("b2c start", 1500, 1650, Done),
            ("kernel modules", 1650, 2000, Done),
            // Until its last interface's line.
            ("network", 2010, 2401, Done),
            // A warning: the clock was not set.
            ("clock", 2405, 12405, Failed),
            // No header: from the end of the clock's phase.
            ("extra args", 12405, 12900, Done),
            ("cache", 12910, 13200, Done),
            ("pull", 13300, 17950, Done),
            ("service-0", 18000, 19400, Done),
            ("run-0", 18200, 19200, Failed),
            ("post-0", 19250, 19300, Failed),
            ("shutdown", 19400, 19600, Done),
        ]
    );
    let pull = span(&t, "pull");
    assert_eq!(pull.detail, "3 images");
    let images: Vec<_> = pull
        .children
        .iter()
        .map(|s| (s.name.as_str(), ms(s.start), ms(s.end), s.detail.as_str()))
        .collect();
    assert_eq!(
        images,
        [
            // The mirror's attempt and the registry's are one pull.
            (
                "reg/a:1",
                13310,
                17950,
                "120.0 MB downloaded, 390.0 MB unpacked; 2 layers, 2 downloaded, 0 reused"
            ),
            ("reg/c:3", 13320, 13320, "the stored copy"),
            ("reg/b:2", 13330, 16000, "up to date"),
        ]
    );
    let layers: Vec<_> = pull.children[0]
        .children
        .iter()
        .map(|s| (s.name.as_str(), ms(s.start), ms(s.end), s.kind))
        .collect();
    // Each from its own time: they ran at once.
    assert_eq!(
        layers,
        [
            ("sha256:aaaaaaaaaaa1", 13510, 17010, Kind::Layer),
            ("sha256:aaaaaaaaaaa2", 13520, 17900, Kind::Layer),
        ]
    );
    assert_eq!(
        pull.children[0].children[0].detail,
        "60.0 MB downloaded, 200.0 MB unpacked, 4000 entries"
    );
    assert_eq!(span(&t, "run-0").detail, "reg/a:1, status 3");
    assert_eq!(span(&t, "post-0").detail, "reg/b:2, status 1");
    assert_eq!(span(&t, "service-0").detail, "reg/c:3, stopped, status 143");
    assert_eq!(t.status, Some(3));
}

#[test]
fn an_image_cut_off_keeps_its_progress_and_finished_layers() {
    let cut = &LATER[..LATER.find("[   17.900]").unwrap()];
    let t = parse(cut).unwrap();
    let a = span(&t, "reg/a:1");
    assert_eq!((ms(a.end), a.state), (17330, Unfinished));
    assert_eq!(a.detail, "100.0 / 120.0 MB");
    assert_eq!(a.children.len(), 1);
    assert_eq!(span(&t, "reg/b:2").state, Done);
}

#[test]
fn a_dmesg_of_a_running_b2c_is_read_from_its_b2c_lines() {
    let dmesg = "\
[    0.000000] Linux version 6.1.0
[    1.500000] Run /init as init process
[    1.600100] b2c: b2c 0.1.0 (x86_64), kernel Linux 6.1.0
[    1.650200] b2c: kernel command line: console=ttyS0
[    2.010300] b2c: setting up the network
[    2.400400] b2c: network: eth0: 10.0.0.2/24 by DHCP from 10.0.0.1
[    2.500000] b2c: running run-0: reg/a:1
";
    let t = parse(dmesg).unwrap();
    assert_eq!(
        top(&t),
        [
            ("kernel", 0, 1500, Done),
            ("b2c start", 1500, 1650, Done),
            ("network", 2010, 2400, Done),
            ("run-0", 2500, 2500, Unfinished),
        ]
    );
    // With b2c's own lines there too, the kernel's copies are not read
    // twice.
    let both = format!("{dmesg}[    2.600]: running run-1: reg/b:2\n");
    let t = parse(&both).unwrap();
    assert_eq!(top(&t), [("run-1", 2600, 2600, Unfinished)]);
}
