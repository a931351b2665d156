//! `bring_up` from command-line options against real links: `b2c.iface`
//! entries (static and DHCP at once), the kernel's `ip=` forms, the default
//! DHCP, `ip=off`, and links that appear late or never.
//!
//! ns `srv`: srv-a 10.96.0.1/24 (a plain gateway) and srv-b 10.98.0.1/24
//! (where dnsmasq runs when a test wants DHCP); ns `cli`: their peers cli-a
//! and cli-b. Needs root, iproute2 and dnsmasq.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use b2c_cmdline::{parse_iface, parse_kernel_ip, IfaceConfig, KernelIp};
use b2c_net::{bring_up, NetworkUp};
use common::{
    assert_root, child_dir, child_runtime, is_child, reported, start_child, ChildRun, Daemons,
    Netns,
};
use tempfile::TempDir;

const DHCP_TIMEOUT: Duration = Duration::from_secs(20);

struct Lab {
    daemons: Daemons,
    cli: Netns,
    srv: Netns,
    dir: TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        assert_root();
        let srv = Netns::new(&format!("{tag}-srv"));
        let cli = Netns::new(&format!("{tag}-cli"));
        for (side, address) in [("a", "10.96.0.1/24"), ("b", "10.98.0.1/24")] {
            let here = format!("srv-{side}");
            let there = format!("cli-{side}");
            srv.ip(&[
                "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &cli.name,
            ]);
            srv.ip(&["link", "set", &here, "up"]);
            srv.ip(&["addr", "add", address, "dev", &here]);
        }
        let dir = tempfile::tempdir().unwrap();
        Lab {
            daemons: Daemons::new(dir.path()),
            cli,
            srv,
            dir,
        }
    }

    fn dnsmasq_b(&mut self) {
        self.daemons.start_dnsmasq(
            &self.srv,
            "dnsmasq-b",
            "srv-b",
            "10.98.0.1",
            "10.98.0.10,10.98.0.50",
        );
    }

    fn dnsmasq_a(&mut self) {
        self.daemons.start_dnsmasq(
            &self.srv,
            "dnsmasq-a",
            "srv-a",
            "10.96.0.1",
            "10.96.0.10,10.96.0.50",
        );
    }

    fn start_child(&self, test: &str) -> ChildRun {
        start_child(&self.cli, self.dir.path(), test)
    }

    fn run_child(&self, test: &str, limit: Duration) -> String {
        self.start_child(test).finish(limit)
    }

    fn addrs(&self, dev: &str) -> String {
        self.cli.ip(&["-4", "addr", "show", "dev", dev])
    }

    fn routes(&self) -> String {
        self.cli.ip(&["-4", "route", "show"])
    }
}

fn ifaces(values: &[&str]) -> Vec<IfaceConfig> {
    values.iter().map(|v| parse_iface(v).unwrap().0).collect()
}

fn kernel_ip(value: &str) -> KernelIp {
    parse_kernel_ip(value).unwrap()
}

fn resolv_path() -> PathBuf {
    child_dir().join("etc/resolv.conf")
}

fn read_resolv() -> String {
    fs::read_to_string(resolv_path()).unwrap()
}

async fn up(ifaces: &[IfaceConfig], kernel_ip: Option<&KernelIp>) -> NetworkUp {
    bring_up(ifaces, kernel_ip, &resolv_path(), DHCP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("bring_up: {e}"))
}

// ------------------------------------------------------------------ tests

/// Two `b2c.iface` entries at once, with an `ip=` that must be ignored:
/// cli-a static (gateway, extra route, nameserver, forward), cli-b by DHCP.
#[test]
fn b2c_iface_static_and_dhcp_together() {
    let mut lab = Lab::new("iface");
    lab.dnsmasq_b();
    let out = lab.run_child("netns_child_iface", Duration::from_secs(60));
    let lease = reported(&out, "LEASE");
    assert!(lease.starts_with("10.98.0."), "{lease}");

    let a = lab.addrs("cli-a");
    assert!(
        a.contains("inet 10.96.0.5/24 ") && a.contains("valid_lft forever"),
        "{a}"
    );
    assert!(!a.contains("10.96.0.99"), "ip= was applied: {a}");
    let b = lab.addrs("cli-b");
    assert!(b.contains(&format!("inet {lease}/24 ")), "{b}");

    let routes = lab.routes();
    for want in [
        // The first entry's gateway holds the default route (metric 0), the
        // lease's router is the fallback.
        "default via 10.96.0.1 dev cli-a proto static \n",
        "default via 10.98.0.1 dev cli-b proto dhcp metric 1 \n",
        "172.16.0.0/12 via 10.96.0.254 dev cli-a proto static \n",
    ] {
        assert!(routes.contains(want), "no {want:?} in:\n{routes}");
    }
    let chosen = lab.cli.ip(&["-4", "route", "get", "192.0.2.1"]);
    assert!(chosen.contains("via 10.96.0.1 dev cli-a"), "{chosen}");

    // `forward` is per namespace: on in the client's, untouched elsewhere.
    assert_eq!(lab.cli.sysctl("/proc/sys/net/ipv4/ip_forward"), "1");
    assert_eq!(lab.srv.sysctl("/proc/sys/net/ipv4/ip_forward"), "0");
}

#[test]
fn netns_child_iface() {
    if !is_child("netns_child_iface") {
        return;
    }
    child_runtime(async {
        let ifaces = ifaces(&[
            "cli-a,address=10.96.0.5/24,gateway=10.96.0.1,nameserver=10.96.0.53,\
             route=172.16.0.0/12:10.96.0.254,forward",
            "cli-b,dhcp",
        ]);
        let ignored = kernel_ip("10.96.0.99::10.96.0.1:255.255.255.0:nope:cli-a:off");
        let up = up(&ifaces, Some(&ignored)).await;
        assert!(up.is_configured());
        assert_eq!(up.hostname, None);
        assert_eq!(up.ntp_servers, [Ipv4Addr::new(10, 98, 0, 1)]);
        let leases = up.leases();
        assert_eq!(leases.len(), 1);
        let lease = &leases[0];
        assert_eq!(lease.iface, "cli-b");
        assert_eq!(
            up.summary,
            [
                "cli-a: 10.96.0.5/24 static, gateway 10.96.0.1, DNS 10.96.0.53, \
                 172.16.0.0/12 via 10.96.0.254"
                    .to_string(),
                format!(
                    "cli-b: {}/24 by DHCP from 10.98.0.1, router 10.98.0.1, DNS 10.98.0.1",
                    lease.address
                ),
            ]
        );
        let merged = "# written by b2c from the static configuration of cli-a, \
                      the DHCP lease on cli-b\n\
                      search lab.test\n\
                      nameserver 10.96.0.53\n\
                      nameserver 10.98.0.1\n";
        assert_eq!(read_resolv(), merged);
        println!("LEASE {}", lease.address);

        // The renewal at T1 (10 s) rewrites resolv.conf: the static
        // interface's name server must survive it.
        let mut updates = up.renewals[0].subscribe();
        tokio::time::timeout(Duration::from_secs(30), updates.changed())
            .await
            .expect("no renewal within 30 s")
            .unwrap();
        // The file is rewritten just before the new lease is published.
        assert_eq!(read_resolv(), merged);
        println!("RENEWED ok");
    });
}

/// `ip=` static, with and without a device.
#[test]
fn kernel_ip_static() {
    let lab = Lab::new("ipstatic");
    let out = lab.run_child("netns_child_ip_static", Duration::from_secs(40));
    assert!(out.contains("STATIC ok"), "{out}");

    let b = lab.addrs("cli-b");
    assert!(b.contains("inet 10.98.0.7/24 "), "{b}");
    // Without a device: the first ethernet link, by name.
    let a = lab.addrs("cli-a");
    assert!(a.contains("inet 10.96.0.8/24 "), "{a}");
    let routes = lab.routes();
    assert!(
        routes.contains("default via 10.96.0.1 dev cli-a proto static"),
        "{routes}"
    );
}

#[test]
fn netns_child_ip_static() {
    if !is_child("netns_child_ip_static") {
        return;
    }
    child_runtime(async {
        let ip = kernel_ip(
            "10.98.0.7::10.98.0.1:255.255.255.0:dut:cli-b:off:10.98.0.53:10.98.0.54:10.98.0.123",
        );
        let up1 = up(&[], Some(&ip)).await;
        assert_eq!(up1.hostname.as_deref(), Some("dut"));
        assert_eq!(up1.ntp_servers, [Ipv4Addr::new(10, 98, 0, 123)]);
        assert!(up1.renewals.is_empty());
        assert_eq!(
            up1.summary,
            ["cli-b: 10.98.0.7/24 static, gateway 10.98.0.1, DNS 10.98.0.53 10.98.0.54"]
        );
        assert_eq!(
            read_resolv(),
            "# written by b2c from the static configuration of cli-b\n\
             nameserver 10.98.0.53\n\
             nameserver 10.98.0.54\n"
        );

        let ip = kernel_ip("10.96.0.8::10.96.0.1:255.255.255.0::::");
        let up2 = up(&[], Some(&ip)).await;
        assert_eq!(up2.hostname, None);
        assert!(up2.ntp_servers.is_empty());
        assert_eq!(
            up2.summary,
            ["cli-a: 10.96.0.8/24 static, gateway 10.96.0.1"]
        );
        println!("STATIC ok");
    });
}

/// `ip=:::::cli-b:dhcp`: DHCP on that link only, although a server also
/// answers on the other one.
#[test]
fn kernel_ip_dhcp_on_one_device() {
    let mut lab = Lab::new("ipdhcp");
    lab.dnsmasq_a();
    lab.dnsmasq_b();
    let out = lab.run_child("netns_child_ip_dhcp", Duration::from_secs(40));
    let lease = reported(&out, "LEASE");
    assert!(lease.starts_with("10.98.0."), "{lease}");
    assert!(
        !lab.addrs("cli-a").contains("inet "),
        "{}",
        lab.addrs("cli-a")
    );
    let log = lab.daemons.log("dnsmasq-a");
    assert!(
        !log.contains("DHCPDISCOVER"),
        "DHCP was tried on cli-a:\n{log}"
    );
}

#[test]
fn netns_child_ip_dhcp() {
    if !is_child("netns_child_ip_dhcp") {
        return;
    }
    child_runtime(async {
        let up = up(&[], Some(&kernel_ip(":::::cli-b:dhcp"))).await;
        let leases = up.leases();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].iface, "cli-b");
        assert_eq!(up.ntp_servers, [Ipv4Addr::new(10, 98, 0, 1)]);
        assert!(read_resolv().ends_with("search lab.test\nnameserver 10.98.0.1\n"));
        println!("LEASE {}", leases[0].address);
    });
}

/// No option at all: DHCP races on every ethernet link; only cli-b has a
/// server.
#[test]
fn no_option_is_dhcp_everywhere() {
    let mut lab = Lab::new("default");
    lab.dnsmasq_b();
    let out = lab.run_child("netns_child_default", Duration::from_secs(40));
    let lease = reported(&out, "LEASE");
    assert!(lab.addrs("cli-b").contains(&format!("inet {lease}/24 ")));
    let routes = lab.routes();
    assert!(
        routes.contains("default via 10.98.0.1 dev cli-b proto dhcp"),
        "{routes}"
    );
}

#[test]
fn netns_child_default() {
    if !is_child("netns_child_default") {
        return;
    }
    child_runtime(async {
        let up = up(&[], None).await;
        let leases = up.leases();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].iface, "cli-b");
        println!("LEASE {}", leases[0].address);
    });
}

/// `ip=off`: Ok, nothing configured but `lo`, no resolv.conf.
#[test]
fn ip_off_configures_nothing() {
    let lab = Lab::new("ipoff");
    lab.cli.ip(&["link", "set", "lo", "down"]);
    lab.run_child("netns_child_ip_off", Duration::from_secs(20));
    let lo = lab.cli.ip(&["link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    for dev in ["cli-a", "cli-b"] {
        assert!(!lab.addrs(dev).contains("inet "), "{}", lab.addrs(dev));
    }
    assert!(!lab.dir.path().join("etc/resolv.conf").exists());
}

#[test]
fn netns_child_ip_off() {
    if !is_child("netns_child_ip_off") {
        return;
    }
    child_runtime(async {
        let up = up(&[], Some(&KernelIp::Off)).await;
        assert!(!up.is_configured());
        assert!(up.renewals.is_empty() && up.ntp_servers.is_empty());
    });
}

/// A named link that appears a second late is waited for; one that never
/// appears fails after ~10 s with an error naming it and the option.
#[test]
fn named_links_late_and_missing() {
    let lab = Lab::new("late");
    let mut child = lab.start_child("netns_child_late");
    child.wait_for("STARTED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    lab.srv.ip(&[
        "link",
        "add",
        "late-srv",
        "type",
        "veth",
        "peer",
        "name",
        "late0",
        "netns",
        &lab.cli.name,
    ]);
    lab.srv.ip(&["link", "set", "late-srv", "up"]);
    let out = child.finish(Duration::from_secs(40));
    assert!(out.contains("MISSING ok"), "{out}");
    let late = lab.addrs("late0");
    assert!(late.contains("inet 10.95.0.2/24 "), "{late}");
}

#[test]
fn netns_child_late() {
    if !is_child("netns_child_late") {
        return;
    }
    child_runtime(async {
        println!("STARTED now");
        let start = tokio::time::Instant::now();
        let up = up(&ifaces(&["late0,address=10.95.0.2/24"]), None).await;
        assert!(start.elapsed() >= Duration::from_millis(900));
        assert_eq!(up.summary, ["late0: 10.95.0.2/24 static"]);

        let start = tokio::time::Instant::now();
        let missing_iface = ifaces(&["cli-a,address=10.96.0.5/24", "nosuch0,dhcp"]);
        let missing_ip = kernel_ip("10.96.0.9:::::nosuch1:off");
        let resolv = resolv_path();
        let (by_iface, by_ip) = tokio::join!(
            bring_up(&missing_iface, None, &resolv, DHCP_TIMEOUT),
            bring_up(&[], Some(&missing_ip), &resolv, DHCP_TIMEOUT),
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(12),
            "{took:?}"
        );
        let by_iface = by_iface.err().expect("nosuch0 configured?").to_string();
        assert_eq!(
            by_iface,
            "b2c.iface=nosuch0: network link nosuch0 did not appear within 10 s"
        );
        let by_ip = by_ip.err().expect("nosuch1 configured?").to_string();
        assert_eq!(
            by_ip,
            "ip= on nosuch1: network link nosuch1 did not appear within 10 s"
        );
        println!("MISSING ok");
    });
}
