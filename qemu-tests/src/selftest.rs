//! Tests of the harness itself: no kernel needed, only root and the
//! Debian tools. Each checks a service the way the guest will use it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::Digest;

use crate::images::{BIG_IMAGE, BUSYBOX_DOCKER_IMAGE, BUSYBOX_IMAGE, LAYERS_IMAGE};
use crate::net::{in_netns, sntp_query};
use crate::{
    run, NetOptions, TestNet, FILE_SERVER, GATEWAY, REGISTRY_AUTH, REGISTRY_AUTH_PASSWORD,
    REGISTRY_AUTH_USER,
};

#[test]
fn testnet_serves_dhcp_dns_ntp_and_the_registry() {
    let mut net = TestNet::start().unwrap();
    let gateway: Ipv4Addr = GATEWAY.parse().unwrap();

    let offer = in_netns(net.name(), || dhcp_discover(Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    assert!(
        (Ipv4Addr::new(10, 99, 0, 10)..=Ipv4Addr::new(10, 99, 0, 50)).contains(&offer.address),
        "{offer:?}"
    );
    assert_eq!(offer.router, Some(gateway), "{offer:?}");
    assert_eq!(offer.dns, Some(gateway), "{offer:?}");
    assert_eq!(offer.ntp, Some(gateway), "{offer:?}");

    let (rcode, addresses) = in_netns(net.name(), || dns_query("registry.test", 1))
        .unwrap()
        .unwrap();
    assert_eq!((rcode, addresses), (0, vec![gateway]));
    // NODATA, not an error: see the --local comment in net.rs.
    let (rcode, addresses) = in_netns(net.name(), || dns_query("registry.test", 28))
        .unwrap()
        .unwrap();
    assert_eq!((rcode, addresses), (0, vec![]));

    let server_time = in_netns(net.name(), sntp_query).unwrap().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        server_time.abs_diff(now) < 5,
        "NTP says {server_time}, we say {now}"
    );

    let inspect = |image: &str, extra: &[&str]| -> Value {
        let out = run(
            net.command("skopeo")
                .args(["--command-timeout", "60s", "inspect", "--raw"])
                .args(extra)
                .arg(format!("docker://{image}")),
            "skopeo inspect",
        )
        .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let http = |name: &str| format!("{}/{name}", net.registry_http());
    let no_tls = ["--tls-verify=false"];
    // Every image is an index with one image per architecture.
    let platforms = |index: &Value| -> Vec<String> {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
            .collect()
    };
    let index = inspect(&http(LAYERS_IMAGE), &no_tls);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["amd64", "arm64"]);
    for arch in crate::Arch::ALL {
        let digest = crate::images::platform_digest(LAYERS_IMAGE, arch).unwrap();
        let layers = inspect(
            &format!(
                "{}@{digest}",
                http(LAYERS_IMAGE).trim_end_matches(":latest")
            ),
            &no_tls,
        );
        assert_eq!(
            layers["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(layers["layers"].as_array().unwrap().len(), 4);
    }
    // Converted by skopeo on the way: a Docker manifest list and schema-2
    // manifests.
    let list = inspect(&http(BUSYBOX_DOCKER_IMAGE), &no_tls);
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(platforms(&list), ["amd64", "arm64"]);
    let docker = inspect(
        &format!(
            "{}@{}",
            http(BUSYBOX_DOCKER_IMAGE).trim_end_matches(":latest"),
            list["manifests"][0]["digest"].as_str().unwrap()
        ),
        &no_tls,
    );
    assert_eq!(
        docker["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        docker["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        docker["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    // HTTPS, verified against the test CA: a full pull (every blob, digests
    // checked) with Go's verifier by address, then rustls by name, which
    // is what the init uses.
    let certs = net.dir().join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(net.ca_cert_path(), certs.join("ca.crt")).unwrap();
    run(
        net.command("skopeo")
            .args(["--insecure-policy", "--command-timeout", "60s", "copy"])
            .arg(format!("--src-cert-dir={}", certs.display()))
            .arg(format!("docker://{GATEWAY}:5443/{BUSYBOX_IMAGE}"))
            .arg(format!("oci:{}:pulled", net.dir().join("pulled").display())),
        "skopeo copy over https",
    )
    .unwrap();
    let ca = net.ca_cert_path();
    let response = in_netns(net.name(), || rustls_get(ca, "registry.test", "/v2/")).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let log = net.registry_log();
    assert!(
        log.contains("GET /v2/b2c/layers/manifests/latest")
            && log.contains("GET /v2/b2c/busybox/blobs/sha256:"),
        "the registry log records requests and blob downloads:\n{log}"
    );
    net.stop_registry();
    let refused = in_netns(net.name(), || TcpStream::connect((GATEWAY, 5000))).unwrap();
    assert!(
        refused.is_err(),
        "registry still listening after stop_registry"
    );
}

#[test]
fn big_image_is_pushed_on_demand_downloads_are_counted_and_can_be_slowed() {
    let net = TestNet::start().unwrap();
    let big = format!("docker://{}/{BIG_IMAGE}", net.registry_http());
    let inspect = || {
        net.command("skopeo")
            .args(["--command-timeout", "60s", "inspect", "--raw"])
            .args(["--tls-verify=false", &big])
            .output()
            .unwrap()
    };
    assert!(!inspect().status.success(), "pushed without being asked");

    let default_qdisc = net.download_qdisc().unwrap();
    net.limit_download_rate(Some(10_000_000)).unwrap();
    let limited = net.download_qdisc().unwrap();
    assert!(
        limited.starts_with("qdisc tbf") && limited.contains("rate 80Mbit"),
        "{limited}"
    );
    net.limit_download_rate(None).unwrap();
    assert_eq!(net.download_qdisc().unwrap(), default_qdisc);
    net.limit_download_rate(None).unwrap();

    net.push_big_image().unwrap();
    let raw = inspect();
    assert!(raw.status.success(), "{raw:?}");
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout))),
        crate::images::index_digest(BIG_IMAGE).unwrap(),
        "the registry serves the index as built"
    );
    assert_eq!(net.blob_downloads("b2c/big"), 0, "{}", net.registry_log());
    run(
        net.command("skopeo")
            .args(["--insecure-policy", "--command-timeout", "120s", "copy"])
            .args(["--src-tls-verify=false", &big])
            .arg(format!("oci:{}:big", net.dir().join("pulled").display())),
        "skopeo copy",
    )
    .unwrap();
    // The config and two layers of this machine's image, each once.
    assert_eq!(net.blob_downloads("b2c/big"), 3, "{}", net.registry_log());
    assert_eq!(net.blob_downloads("b2c/busybox"), 0);
}

#[test]
fn a_panicking_test_leaves_no_namespace_or_process_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let mut net = TestNet::start().unwrap();
        tx.send((net.name().to_string(), net.pids(), net.dir().to_path_buf()))
            .unwrap();
        panic!("deliberate panic with a TestNet alive");
    })
    .join();
    assert!(result.is_err());
    let (ns, pids, dir) = rx.recv().unwrap();
    assert_eq!(
        pids.len(),
        6,
        "dnsmasq, chronyd, httpd, the HTTPS file server and two registries: {pids:?}"
    );
    assert!(
        !Path::new("/run/netns").join(&ns).exists(),
        "{ns} still exists"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    // Kept for the post-mortem; removed here since this panic was planned.
    for service in [
        "dnsmasq",
        "chronyd",
        "httpd",
        "https-files",
        "registry-http",
        "registry-https",
    ] {
        let kept = crate::output_dir().join(format!("logs/{ns}-{service}.log"));
        assert!(kept.exists(), "{} not kept", kept.display());
        std::fs::remove_file(kept).unwrap();
    }
    for pid in pids {
        // Reaped, so its pid is gone (or reused by something else).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(dir.to_str().unwrap()),
            "pid {pid} survived"
        );
    }
}

#[test]
fn dhcp_can_be_blocked_and_the_auth_registry_wants_its_password() {
    let mut net = TestNet::start().unwrap();
    net.block_dhcp(true).unwrap();
    let offer = in_netns(net.name(), || dhcp_discover(Duration::from_secs(3))).unwrap();
    assert!(offer.is_err(), "DHCP answered through the block: {offer:?}");
    assert!(net.dhcp_packets_dropped().unwrap() > 0);
    net.block_dhcp(false).unwrap();
    assert_eq!(net.dhcp_packets_dropped().unwrap(), 0);
    let offer = in_netns(net.name(), || dhcp_discover(Duration::from_secs(3))).unwrap();
    assert!(offer.is_ok(), "no offer once unblocked: {offer:?}");

    net.start_auth_registry().unwrap();
    let image = format!("docker://{REGISTRY_AUTH}/{BUSYBOX_IMAGE}");
    let inspect = |creds: Option<String>| {
        let mut cmd = net.command("skopeo");
        cmd.args([
            "--command-timeout",
            "60s",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ]);
        match creds {
            Some(creds) => cmd.args(["--creds", &creds]),
            None => cmd.arg("--no-creds"),
        };
        cmd.arg(&image).output().unwrap()
    };
    let anonymous = inspect(None);
    assert!(!anonymous.status.success(), "served without a password");
    let wrong = inspect(Some(format!("{REGISTRY_AUTH_USER}:wrong")));
    assert!(!wrong.status.success(), "served with a wrong password");
    let right = inspect(Some(format!(
        "{REGISTRY_AUTH_USER}:{REGISTRY_AUTH_PASSWORD}"
    )));
    assert!(right.status.success(), "{right:?}\n{}", net.registry_log());
}

#[test]
fn without_dhcp_there_is_no_offer_but_dns_and_files_are_served() {
    let net = TestNet::start_with(&NetOptions {
        dhcp: false,
        ..Default::default()
    })
    .unwrap();
    // With DHCP the offer comes within 0.2 s of the first discover.
    let offer = in_netns(net.name(), || dhcp_discover(Duration::from_secs(3))).unwrap();
    assert!(offer.is_err(), "DHCP answered: {offer:?}");
    let (rcode, addresses) = in_netns(net.name(), || dns_query("registry.test", 1))
        .unwrap()
        .unwrap();
    assert_eq!((rcode, addresses), (0, vec![GATEWAY.parse().unwrap()]));

    let url = net
        .serve_file("args", "b2c.hostname=x\nb2c.pipefail\n")
        .unwrap();
    assert_eq!(url, format!("http://{FILE_SERVER}/args"));
    let response = in_netns(net.name(), || http_get("/args")).unwrap();
    assert!(
        response.starts_with("HTTP/1.") && response.contains(" 200 "),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\nb2c.hostname=x\nb2c.pipefail\n"),
        "{response}"
    );
    let missing = in_netns(net.name(), || http_get("/nothing-here")).unwrap();
    assert!(missing.contains(" 404 "), "{missing}");
    let log = net.file_server_log();
    assert!(log.contains("/args"), "httpd logs requests:\n{log}");
    assert!(net.serve_file("../escape", "").is_err());
}

#[test]
fn boot_without_a_kernel_says_how_to_build_one() {
    let net = TestNet::start().unwrap();
    let mut opts = crate::BootOptions::new("selftest-no-kernel", "");
    opts.kernel = net.dir().join("no-such-vmlinux");
    let err = net.boot(&opts).unwrap_err().to_string();
    assert!(err.contains("make initramfs"), "{err}");
}

#[derive(Debug)]
struct Offer {
    address: Ipv4Addr,
    router: Option<Ipv4Addr>,
    dns: Option<Ipv4Addr>,
    ntp: Option<Ipv4Addr>,
}

/// Plays a DHCP client on the far end of tap0, where QEMU will be: the
/// frames we write are what dnsmasq receives on tap0.
fn dhcp_discover(wait: Duration) -> std::io::Result<Offer> {
    let tap = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut ifreq = [0u8; 40];
    ifreq[..4].copy_from_slice(b"tap0");
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let xid = 0x62326321u32;

    let mut bootp = vec![0u8; 240];
    bootp[..3].copy_from_slice(&[1, 1, 6]); // request, ethernet, 6-byte address
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[10] = 0x80; // broadcast the reply: we have no address yet
    bootp[28..34].copy_from_slice(&mac);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend([53, 1, 1]); // DHCPDISCOVER
    bootp.extend([55, 3, 3, 6, 42]); // ask for router, DNS, NTP
    bootp.push(255);
    bootp.resize(300, 0);
    let udp_len = (8 + bootp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend((20 + udp_len).to_be_bytes());
    ip.extend([0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
    let sum = ip
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![0xff; 6];
    frame.extend(mac);
    frame.extend([0x08, 0x00]);
    frame.extend(ip);
    frame.extend(68u16.to_be_bytes());
    frame.extend(67u16.to_be_bytes());
    frame.extend(udp_len.to_be_bytes());
    frame.extend([0, 0]); // no UDP checksum
    frame.extend(bootp);
    let discover = frame;

    let deadline = Instant::now() + wait;
    let mut resend = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // Resent like a real client does: until the kernel's link watch
        // notices our carrier (up to a second), its replies are dropped.
        if Instant::now() >= resend {
            (&tap).write_all(&discover)?;
            resend += Duration::from_secs(1);
        }
        let mut pollfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pollfd, 1, 100) } <= 0 {
            continue;
        }
        let n = (&tap).read(&mut buf)?;
        let frame = &buf[..n];
        if n < 14 + 20 + 8 + 240 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue;
        }
        let udp = 14 + (frame[14] as usize & 15) * 4;
        let bootp = &frame[udp + 8..];
        if frame[udp + 2..udp + 4] != 68u16.to_be_bytes()
            || bootp[0] != 2
            || bootp[4..8] != xid.to_be_bytes()
        {
            continue;
        }
        let ip_at = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let mut offer = Offer {
            address: ip_at(&bootp[16..20]),
            router: None,
            dns: None,
            ntp: None,
        };
        let mut message_type = 0;
        let mut options = &bootp[240..];
        while let [code, len, rest @ ..] = options {
            let value = &rest[..(*len as usize).min(rest.len())];
            match code {
                53 => message_type = value[0],
                3 => offer.router = Some(ip_at(value)),
                6 => offer.dns = Some(ip_at(value)),
                42 => offer.ntp = Some(ip_at(value)),
                _ => {}
            }
            options = &rest[value.len()..];
            if options.first() == Some(&255) {
                break;
            }
        }
        if message_type == 2 {
            return Ok(offer);
        }
    }
    Err(std::io::Error::other(format!(
        "no DHCPOFFER within {wait:?}"
    )))
}

/// Returns the response code and the IPv4 addresses answered.
fn dns_query(name: &str, qtype: u16) -> std::io::Result<(u8, Vec<Ipv4Addr>)> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend(label.as_bytes());
    }
    query.push(0);
    query.extend(qtype.to_be_bytes());
    query.extend(1u16.to_be_bytes());
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(&query, (GATEWAY, 53))?;
    let mut reply = [0u8; 512];
    let n = socket.recv(&mut reply)?;
    let reply = &reply[..n];
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = query.len();
    let mut addresses = Vec::new();
    for _ in 0..answers {
        // dnsmasq names each answer by a pointer to the question.
        assert_eq!(reply[at] & 0xc0, 0xc0, "uncompressed answer name");
        let rtype = u16::from_be_bytes([reply[at + 2], reply[at + 3]]);
        let len = u16::from_be_bytes([reply[at + 10], reply[at + 11]]) as usize;
        let data = &reply[at + 12..at + 12 + len];
        if rtype == 1 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 12 + len;
    }
    Ok((reply[3] & 15, addresses))
}

/// A plain HTTP/1.0 GET from the file server: the whole response.
fn http_get(path: &str) -> String {
    let mut tcp = TcpStream::connect(FILE_SERVER).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
}

/// An HTTP GET over TLS verified like the init does: rustls with ring,
/// trusting only `ca`.
fn rustls_get(ca: &Path, host: &str, path: &str) -> String {
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect((GATEWAY, 5443)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    // The registry may close without close_notify; what was read counts.
    let _ = tls.read_to_string(&mut response);
    response
}
