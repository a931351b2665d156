//! End-to-end: static network configuration, from `b2c.iface` and from the
//! kernel's `ip=`, on a test network whose dnsmasq does not answer DHCP —
//! so a guest that pulls its image can only have used the static setup.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

mod common;

use common::{assert_verdict, boot_on, opt, options, start_net};
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
