//! End-to-end: static network configuration, from `b2c.iface` and from the
//! kernel's `ip=`, on a test network whose dnsmasq does not answer DHCP —
//! so a guest that pulls its image can only have used the static setup.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_error_about, assert_verdict, boot_on, opt, options, run_img, start_net};
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::{Boot, NetOptions};

/// Boots with DHCP off. The image is pulled by name: `registry.test`
/// resolves only through the configured nameserver (dnsmasq). The
/// container prints eth0's address, the routes and resolv.conf, each on
/// one line after a `NET-77` marker.
fn boot_static(name: &str, network_options: &str) -> Boot {
    let show = "sh -c 'echo NET-$((7*11)):ADDR: $(ip -4 -o addr show dev eth0); \
                echo NET-$((7*11)):ROUTES: $(ip route); \
                echo NET-$((7*11)):DNS: $(grep nameserver /etc/resolv.conf)'";
    let run = opt(
        "b2c.run",
        &format!("--tls-verify=false docker://registry.test:5000/{BUSYBOX_IMAGE} {show}"),
    );
    // No NTP: without DHCP, `auto` would mean pool.ntp.org, beside the point.
    let append = format!("{network_options} b2c.ntp_peer=none {run}");
    let net = start_net(&NetOptions {
        dhcp: false,
        ..Default::default()
    });
    boot_on(&net, &options(name, &append))
}

/// The one `NET-77:<what>:` line's contents.
fn shown<'a>(boot: &'a Boot, what: &str) -> &'a str {
    let lines = boot.after_marker(&format!("NET-77:{what}:"));
    assert_eq!(lines.len(), 1, "one {what} line expected\n{boot}");
    lines[0].trim_start()
}

fn assert_static_setup(boot: &Boot, address: &str) {
    assert_verdict(boot, 0);
    let addr = shown(boot, "ADDR");
    assert!(
        addr.contains(&format!("inet {address}/24 ")),
        "eth0 should have {address}/24: {addr}\n{boot}"
    );
    let routes = shown(boot, "ROUTES");
    assert!(
        routes.contains("default via 10.99.0.1 dev eth0"),
        "no default route via the gateway: {routes}\n{boot}"
    );
    let dns = shown(boot, "DNS");
    assert_eq!(dns, "nameserver 10.99.0.1", "resolv.conf\n{boot}");
}

#[test]
fn b2c_iface_static_address() {
    let boot = boot_static(
        "iface-static",
        "b2c.iface=eth0,address=10.99.0.77/24,gateway=10.99.0.1,nameserver=10.99.0.1",
    );
    assert_static_setup(&boot, "10.99.0.77");
}

#[test]
fn kernel_ip_static_address() {
    let boot = boot_static(
        "kernel-ip-static",
        "ip=10.99.0.78::10.99.0.1:255.255.255.0::eth0:off:10.99.0.1",
    );
    assert_static_setup(&boot, "10.99.0.78");
}

/// DHCP patience, as boot2container's: a switch port running spanning
/// tree forwards nothing for 30 s and more. Here the DHCP server hears
/// nothing until 20 s after b2c's first DISCOVER; the boot still gets its
/// lease (70 s by default), saying meanwhile what it waits for. A bound
/// shorter than the outage (`b2c.dhcp_timeout=3`) fails the boot, naming
/// the option (that boot also has `b2c.gitlab_sections=0`).
#[test]
fn dhcp_waits_for_a_late_server_within_b2c_dhcp_timeout() {
    let net = start_net(&NetOptions::default());
    let append = run_img("sh -c 'echo DHCP-$((6*7))'");
    net.block_dhcp(true).unwrap_or_else(|e| panic!("{e}"));

    let short = boot_on(
        &net,
        &options(
            "dhcp-timeout-short",
            &format!("b2c.dhcp_timeout=3 b2c.gitlab_sections=0 {append}"),
        ),
    );
    assert_verdict(&short, 1);
    assert_error_about(&short, &["b2c.dhcp_timeout"]);
    // b2c.gitlab_sections=0: no marker, the headers as plain lines.
    assert!(
        short.lines_containing("section_").next().is_none()
            && short.has_line("]: setting up the network"),
        "{short}"
    );

    // A fresh rule: its counter tells what the next boot sent meanwhile.
    net.block_dhcp(false).unwrap_or_else(|e| panic!("{e}"));
    net.block_dhcp(true).unwrap_or_else(|e| panic!("{e}"));
    let name = "dhcp-late-server";
    let log = qemu_tests::output_dir()
        .join("logs")
        .join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    let (boot, dropped) = std::thread::scope(|scope| {
        let unblock = scope.spawn(|| {
            let start = Instant::now();
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("DHCP: discovering on ")
                && start.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(20));
            let dropped = net.dhcp_packets_dropped();
            net.block_dhcp(false).map(|()| dropped)
        });
        let mut opts = options(name, &append);
        // 20 s of its boot wait for the server.
        opts.waits = true;
        let boot = boot_on(&net, &opts);
        let dropped = unblock.join().expect("the unblocking thread panicked");
        (boot, dropped)
    });
    let dropped = dropped.and_then(|d| d).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dropped > 0,
        "no DHCP packet reached the blocked server: this boot did not wait\n{boot}"
    );
    assert_eq!(boot.after_marker("DHCP-42"), [""], "{boot}");
    assert_verdict(&boot, 0);
    let waiting: Vec<&str> = boot
        .lines_containing("DHCP: waiting for a lease on eth0 (attempt ")
        .collect();
    assert!(
        waiting.len() >= 2 && waiting.iter().all(|l| l.contains("of up to 70 s")),
        "b2c should say every few seconds what it waits for, and for how long: \
         {waiting:#?}\n{boot}"
    );
}
