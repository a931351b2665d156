//! The client against real servers: dnsmasq (DHCP) and chronyd (NTP) in one
//! network namespace, the client in another, veth pairs between them (see
//! `common` for how the client runs inside its namespace).
//!
//! Needs root, iproute2, dnsmasq and chronyd.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{
    assert_root, child_dir, child_runtime, is_child, reported, start_child, wait_for_file,
    ChildRun, Daemons, Netns,
};
use tempfile::TempDir;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);

/// ns `srv`: veth-srv 10.98.0.1/24, and veth-nosrv with no server behind it.
/// ns `cli`: their peers veth-cli and veth-dead, without addresses.
///
/// Fields drop in order: processes first, then the namespaces they ran in.
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
        for (here, there) in [("veth-srv", "veth-cli"), ("veth-nosrv", "veth-dead")] {
            srv.ip(&[
                "link", "add", here, "type", "veth", "peer", "name", there, "netns", &cli.name,
            ]);
            srv.ip(&["link", "set", here, "up"]);
        }
        srv.ip(&["addr", "add", "10.98.0.1/24", "dev", "veth-srv"]);
        let dir = tempfile::tempdir().unwrap();
        Lab {
            daemons: Daemons::new(dir.path()),
            cli,
            srv,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, name: &str) -> String {
        self.daemons.log(name)
    }

    fn stop(&mut self, name: &str) {
        self.daemons.stop(name);
    }

    /// dnsmasq on veth-srv handing out `range` (`first,last`), always
    /// naming 10.98.0.1 as router, DNS and NTP server.
    fn start_dnsmasq(&mut self, name: &str, range: &str) {
        let server = SERVER.to_string();
        self.daemons
            .start_dnsmasq(&self.srv, name, "veth-srv", &server, range);
    }

    /// chronyd serving its local clock on 10.98.0.1; `-x` keeps it from
    /// touching that clock, which is the host's.
    fn start_chronyd(&mut self) {
        let conf = self.path("chrony.conf");
        let pid_file = self.path("chronyd.pid");
        fs::write(
            &conf,
            format!(
                "local stratum 8\nallow 10.98.0.0/24\nbindaddress 10.98.0.1\ncmdport 0\n\
                 pidfile {}\ndriftfile {}\n",
                pid_file.display(),
                self.path("chrony.drift").display()
            ),
        )
        .unwrap();
        let mut cmd = self.srv.exec("chronyd");
        cmd.args(["-x", "-d", "-u", "root", "-f"]).arg(&conf);
        self.daemons.spawn("chronyd", cmd);
        wait_for_file(&pid_file, "chronyd");
    }

    /// Starts `test` (a `netns_child_*` test of this binary) inside ns
    /// `cli`.
    fn start_child(&self, test: &str) -> ChildRun {
        start_child(&self.cli, self.dir.path(), test)
    }

    /// Runs `test` in ns `cli` to the end and returns its stdout.
    fn run_child(&self, test: &str, limit: Duration) -> String {
        self.start_child(test).finish(limit)
    }
}

// ---------------------------------------------------------- child side

/// Discovery on every ethernet link of ns `cli`; checks the lease and
/// applies it.
async fn child_first_lease(resolv: &Path) -> b2c_net::Lease {
    b2c_net::loopback_up().await.unwrap();
    let links = b2c_net::ethernet_links(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(links, ["veth-cli", "veth-dead"]);

    let lease = b2c_net::dhcp_first_lease(&links, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(lease.iface, "veth-cli");
    let [a, b, c, _] = lease.address.octets();
    assert_eq!([a, b, c], [10, 98, 0], "{lease}");
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(SERVER));
    assert_eq!(lease.ntp, [SERVER]);
    assert_eq!(lease.dns, [SERVER]);
    assert_eq!(lease.domain.as_deref(), Some("lab.test"));
    assert_eq!(lease.server, SERVER);
    assert_eq!(lease.lease_time, Duration::from_secs(120));
    assert_eq!(lease.renew_at, Duration::from_secs(10));
    assert_eq!(lease.rebind_at, Duration::from_secs(20));

    b2c_net::apply_lease(&lease, resolv).await.unwrap();
    let text = fs::read_to_string(resolv).unwrap();
    assert!(
        text.contains("\nsearch lab.test\nnameserver 10.98.0.1\n"),
        "{text}"
    );
    println!("LEASE {}", lease.address);
    lease
}

fn in_range(address: &str, first: u8, last: u8) -> bool {
    let ip: Ipv4Addr = address.parse().unwrap();
    let [a, b, c, d] = ip.octets();
    [a, b, c] == [10, 98, 0] && (first..=last).contains(&d)
}

// --------------------------------------------------------------- tests

/// A lease on the link with a server (racing one without), configured for
/// real, then renewed at T1.
#[test]
fn dhcp_lease_apply_and_renewal() {
    let mut lab = Lab::new("dhcp");
    lab.start_dnsmasq("dnsmasq", "10.98.0.10,10.98.0.50");
    let out = lab.run_child("netns_child_dhcp", Duration::from_secs(60));
    let address = reported(&out, "LEASE");
    assert!(in_range(address, 10, 50), "{address}");

    let addrs = lab.cli.ip(&["-4", "addr", "show", "dev", "veth-cli"]);
    assert!(addrs.contains(&format!("inet {address}/24 ")), "{addrs}");
    // The lease's lifetime, not "forever", so that the kernel drops the
    // address if renewals stop; and moved forward by the renewal at T1 = 10 s
    // (without it, about 110 s would be left of the 120).
    let valid: u64 = addrs
        .split("valid_lft ")
        .nth(1)
        .and_then(|rest| rest.split("sec").next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no finite valid_lft: {addrs}"));
    assert!((115..=120).contains(&valid), "valid_lft {valid}");
    let routes = lab.cli.ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.98.0.1 dev veth-cli proto dhcp"),
        "{routes}"
    );
    // Nothing configured on the link that lost the race.
    let dead = lab.cli.ip(&["-4", "addr", "show", "dev", "veth-dead"]);
    assert!(!dead.contains("inet "), "{dead}");

    let log = lab.log("dnsmasq");
    let acks = log
        .matches(&format!("DHCPACK(veth-srv) {address} "))
        .count();
    assert!(
        acks >= 2,
        "dnsmasq acknowledged {acks} times, want a renewal"
    );
}

#[test]
fn netns_child_dhcp() {
    if !is_child("netns_child_dhcp") {
        return;
    }
    child_runtime(async {
        let resolv = child_dir().join("etc/resolv.conf");
        let lease = child_first_lease(&resolv).await;
        let renewal = b2c_net::spawn_renewal(lease.clone(), &resolv);
        let mut updates = renewal.subscribe();
        tokio::time::timeout(Duration::from_secs(40), updates.changed())
            .await
            .expect("no renewal within 40 s")
            .unwrap();
        let renewed = renewal.current();
        assert_eq!(renewed.address, lease.address);
        assert!(renewed.acquired >= lease.acquired + lease.renew_at);
        println!("RENEWED {}", renewed.address);
    });
}

/// The server is replaced by one serving another range: it refuses the
/// renewal (NAK), and the client drops the address and gets a new lease.
#[test]
fn dhcp_nak_restarts_discovery() {
    let mut lab = Lab::new("nak");
    lab.start_dnsmasq("dnsmasq", "10.98.0.10,10.98.0.50");
    let mut child = lab.start_child("netns_child_nak");
    let old = child.wait_for("LEASE", Duration::from_secs(20));
    lab.stop("dnsmasq");
    lab.start_dnsmasq("dnsmasq2", "10.98.0.60,10.98.0.80");
    let out = child.finish(Duration::from_secs(60));
    let new = reported(&out, "NEWLEASE");
    assert!(
        in_range(&old, 10, 50) && in_range(new, 60, 80),
        "{old} → {new}"
    );

    let addrs = lab.cli.ip(&["-4", "addr", "show", "dev", "veth-cli"]);
    assert!(addrs.contains(&format!("inet {new}/24 ")), "{addrs}");
    assert!(!addrs.contains(&format!("inet {old}/")), "{addrs}");
    let routes = lab.cli.ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.98.0.1 dev veth-cli"),
        "{routes}"
    );
    let log = lab.log("dnsmasq2");
    assert!(log.contains(&format!("DHCPNAK(veth-srv) {old} ")), "no NAK");
}

#[test]
fn netns_child_nak() {
    if !is_child("netns_child_nak") {
        return;
    }
    child_runtime(async {
        let resolv = child_dir().join("etc/resolv.conf");
        let lease = child_first_lease(&resolv).await;
        let renewal = b2c_net::spawn_renewal(lease.clone(), &resolv);
        let mut updates = renewal.subscribe();
        let new = tokio::time::timeout(
            Duration::from_secs(45),
            updates.wait_for(|l| l.address != lease.address),
        )
        .await
        .expect("no new lease within 45 s")
        .unwrap()
        .clone();
        println!("NEWLEASE {}", new.address);
    });
}

/// The server that granted the lease goes silent and another one takes
/// over at another address: unicast renewals (T1) go unanswered, the
/// broadcast rebinding (T2) gets the lease extended by the new server.
#[test]
fn dhcp_rebinds_with_another_server() {
    let mut lab = Lab::new("rebind");
    lab.start_dnsmasq("dnsmasq", "10.98.0.10,10.98.0.50");
    let mut child = lab.start_child("netns_child_rebind");
    let address = child.wait_for("LEASE", Duration::from_secs(20));
    lab.stop("dnsmasq");
    lab.srv
        .ip(&["addr", "del", "10.98.0.1/24", "dev", "veth-srv"]);
    lab.srv
        .ip(&["addr", "add", "10.98.0.2/24", "dev", "veth-srv"]);
    lab.start_dnsmasq("dnsmasq2", "10.98.0.10,10.98.0.50");
    let out = child.finish(Duration::from_secs(60));
    assert_eq!(reported(&out, "REBOUND"), address);
    let log = lab.log("dnsmasq2");
    assert!(
        log.contains(&format!("DHCPACK(veth-srv) {address} ")),
        "no ACK"
    );
}

#[test]
fn netns_child_rebind() {
    if !is_child("netns_child_rebind") {
        return;
    }
    child_runtime(async {
        let resolv = child_dir().join("etc/resolv.conf");
        let lease = child_first_lease(&resolv).await;
        let renewal = b2c_net::spawn_renewal(lease.clone(), &resolv);
        let mut updates = renewal.subscribe();
        let rebound = tokio::time::timeout(
            Duration::from_secs(45),
            updates.wait_for(|l| l.acquired > lease.acquired),
        )
        .await
        .expect("no rebinding within 45 s")
        .unwrap()
        .clone();
        assert_eq!(rebound.server, Ipv4Addr::new(10, 98, 0, 2));
        // Not before T2: until then only the old server was asked.
        assert!(rebound.acquired >= lease.acquired + lease.rebind_at);
        println!("REBOUND {}", rebound.address);
    });
}

/// A server that starts answering only once the client has been waiting
/// (a switch port still in spanning tree's listening state, a DHCP server
/// that boots with the rack): the client keeps discovering, says every
/// few seconds what it waits for and until when, and takes the lease.
#[test]
fn a_server_that_answers_late_still_gives_the_first_lease() {
    let mut lab = Lab::new("late");
    let mut child = lab.start_child("netns_child_late_server");
    child.wait_for_log(
        "DHCP: waiting for a lease on veth-cli (attempt ",
        Duration::from_secs(30),
    );
    lab.start_dnsmasq("dnsmasq", "10.98.0.10,10.98.0.50");
    let out = child.finish(Duration::from_secs(60));
    assert!(in_range(reported(&out, "LEASE"), 10, 50), "{out}");
    let log = child.stderr();
    assert!(
        log.contains("s of up to 40 s, b2c.dhcp_timeout)"),
        "the progress lines should say how long DHCP may still take:\n{log}"
    );
}

#[test]
fn netns_child_late_server() {
    if !is_child("netns_child_late_server") {
        return;
    }
    child_runtime(async {
        let links = vec!["veth-cli".to_string()];
        let lease = b2c_net::dhcp_first_lease(&links, Duration::from_secs(40))
            .await
            .unwrap();
        println!("LEASE {}", lease.address);
    });
}

/// No server: an error within the bound that names every link tried.
#[test]
fn dhcp_without_server_times_out() {
    let lab = Lab::new("nodhcp");
    lab.run_child("netns_child_no_server", Duration::from_secs(30));
}

#[test]
fn netns_child_no_server() {
    if !is_child("netns_child_no_server") {
        return;
    }
    child_runtime(async {
        let links = vec!["veth-cli".to_string(), "veth-dead".to_string()];
        let bound = Duration::from_secs(6);
        let start = tokio::time::Instant::now();
        let err = b2c_net::dhcp_first_lease(&links, bound).await.unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, b2c_net::NetError::DhcpTimeout { .. }),
            "{err}"
        );
        assert!(
            took >= bound && took < bound + Duration::from_secs(1),
            "{took:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("veth-cli") && text.contains("veth-dead"),
            "{text}"
        );
    });
}

/// SNTP against chronyd, whose clock is the host's, over a static
/// configuration: a /32 address whose router is outside its subnet.
#[test]
fn static_config_and_sntp_against_chronyd() {
    let mut lab = Lab::new("ntp");
    lab.start_chronyd();
    let out = lab.run_child("netns_child_sntp", Duration::from_secs(40));
    assert!(out.contains("SNTP ok"), "{out}");

    let addrs = lab.cli.ip(&["-4", "addr", "show", "dev", "veth-cli"]);
    assert!(addrs.contains("inet 10.98.0.2/32 "), "{addrs}");
    assert!(addrs.contains("valid_lft forever"), "{addrs}");
    let routes = lab.cli.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.98.0.1 dev veth-cli proto static")
            && routes.contains("10.98.0.1 dev veth-cli proto static scope link"),
        "{routes}"
    );
}

#[test]
fn netns_child_sntp() {
    if !is_child("netns_child_sntp") {
        return;
    }
    child_runtime(async {
        let config = b2c_net::StaticIpv4 {
            iface: "veth-cli".into(),
            address: Ipv4Addr::new(10, 98, 0, 2),
            prefix_len: 32,
            router: Some(SERVER),
            dns: vec![SERVER],
            search: vec![],
        };
        b2c_net::link_up("veth-cli").await.unwrap();
        let resolv = child_dir().join("resolv.conf");
        b2c_net::apply_static(&config, &resolv).await.unwrap();
        let text = fs::read_to_string(&resolv).unwrap();
        assert!(text.ends_with("\nnameserver 10.98.0.1\n"), "{text}");

        for server in ["10.98.0.1", "10.98.0.1:123"] {
            let time = b2c_net::sntp_time(server, Duration::from_secs(10))
                .await
                .unwrap();
            let now = SystemTime::now();
            let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
            assert!(skew < Duration::from_secs(2), "{server}: off by {skew:?}");
        }
        // Nobody listens there: an error within the bound.
        let start = tokio::time::Instant::now();
        let err = b2c_net::sntp_time("10.98.0.1:124", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(2500), "{err}");
        assert!(err.to_string().contains("10.98.0.1:124"), "{err}");
        println!("SNTP ok");
    });
}
