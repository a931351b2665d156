//! `fetch` against real servers in a network namespace: busybox httpd,
//! `openssl s_server` for HTTPS, and small scripted servers inside the
//! client (5xx then 200, a proxy). 10.97.0.1 is on the namespace's `lo`;
//! 10.97.0.99 is unreachable there, so only a proxy can answer for it.
//!
//! Needs root, iproute2, busybox and openssl.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::Proxy;
use b2c_net::http::{RetryPolicy, Trust};
use b2c_net::{fetch, FetchOptions};
use common::{
    assert_root, child_dir, child_runtime, fetch_error, is_child, ok, scripted, start_child,
    warnings_logged, Daemons, Netns,
};
use tempfile::TempDir;
use tokio::time::Instant;

const ARGS: &str = "b2c.run=docker.io/library/alpine:latest\nb2c.hostname=dut\n";

struct Lab {
    daemons: Daemons,
    ns: Netns,
    dir: TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        assert_root();
        let ns = Netns::new(tag);
        ns.ip(&["addr", "add", "10.97.0.1/32", "dev", "lo"]);
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("www")).unwrap();
        fs::write(dir.path().join("www/args"), ARGS).unwrap();
        fs::write(dir.path().join("httpd.conf"), "").unwrap();
        Lab {
            daemons: Daemons::new(dir.path()),
            ns,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn httpd(&mut self, port: u16) {
        let addr = format!("10.97.0.1:{port}");
        let mut cmd = self.ns.exec("busybox");
        cmd.args(["httpd", "-f", "-v", "-p", &addr, "-h"])
            .arg(self.path("www"))
            // Not the host's /etc/httpd.conf.
            .arg("-c")
            .arg(self.path("httpd.conf"));
        self.daemons.spawn(&format!("httpd-{port}"), cmd);
        self.ns.wait_for_listener(&addr);
    }
}

// ------------------------------------------------------------ HTTP tests

/// 200, 404 (no retry), a server that appears after the first attempt,
/// attempts running out, 5xx then 200, credentials, size limit, proxies.
#[test]
fn fetch_over_http() {
    let mut lab = Lab::new("fetch");
    lab.httpd(8080);
    let mut child = start_child(&lab.ns, lab.dir.path(), "netns_child_http");
    // The first attempt on 8081 failed: now the server appears.
    child.wait_for_log(
        "fetching http://10.97.0.1:8081/args failed",
        Duration::from_secs(20),
    );
    lab.httpd(8081);
    let out = child.finish(Duration::from_secs(60));
    assert!(out.contains("HTTP ok"), "{out}");
    assert!(!child.stderr().contains("secret"), "{}", child.stderr());
    let log = lab.daemons.log("httpd-8081");
    assert!(log.contains("response:200"), "{log}");
}

fn options() -> FetchOptions {
    FetchOptions {
        retry: RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
        ..FetchOptions::default()
    }
}

#[test]
fn netns_child_http() {
    if !is_child("netns_child_http") {
        return;
    }
    child_runtime(async {
        let opts = options();
        let body = fetch("http://10.97.0.1:8080/args", &opts).await.unwrap();
        assert_eq!(body, ARGS.as_bytes());

        // 404: at once, no retry, the URL shown without its credentials.
        let start = Instant::now();
        let warned = warnings_logged();
        let (text, status) =
            fetch_error(fetch("http://user:secret@10.97.0.1:8080/missing", &opts).await);
        assert!(start.elapsed() < Duration::from_secs(1), "{text}");
        assert_eq!(warnings_logged(), warned, "a 404 was retried");
        assert_eq!(status, Some(404));
        assert_eq!(
            text,
            "fetching http://10.97.0.1:8080/missing: HTTP 404 Not Found"
        );

        // Nobody on 8081 until the parent sees the first failure.
        let warned = warnings_logged();
        let body = fetch("http://user:secret@10.97.0.1:8081/args", &opts)
            .await
            .unwrap();
        assert_eq!(body, ARGS.as_bytes());
        assert!(warnings_logged() > warned);

        // Nobody ever: every attempt made, then an error that says why.
        let quick = FetchOptions {
            retry: RetryPolicy {
                attempts: 2,
                first_delay: Duration::from_millis(200),
                ..RetryPolicy::default()
            },
            ..FetchOptions::default()
        };
        let warned = warnings_logged();
        let (text, status) = fetch_error(fetch("http://10.97.0.1:8082/args", &quick).await);
        assert_eq!(warnings_logged(), warned + 1);
        assert_eq!(status, None);
        assert!(
            text.starts_with("fetching http://10.97.0.1:8082/args: ")
                && text.contains("Connection refused")
                && text.ends_with("(after 2 attempts)"),
            "{text}"
        );

        // 503 is retried; the credentials become basic auth.
        let (heads, _) = scripted("10.97.0.1:9000", |n, _| match n {
            0 => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
            _ => ok("late body"),
        })
        .await;
        let body = fetch("http://user:secret@10.97.0.1:9000/x", &quick)
            .await
            .unwrap();
        assert_eq!(body, b"late body");
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 2);
        let head = heads[1].to_ascii_lowercase();
        assert!(
            head.contains("authorization: basic dxnlcjpzzwnyzxq="),
            "{head}"
        );

        // Too big: refused, not retried.
        scripted("10.97.0.1:9001", |_, _| ok(&"x".repeat(100))).await;
        let small = FetchOptions {
            max_size: 10,
            ..quick.clone()
        };
        let warned = warnings_logged();
        let (text, _) = fetch_error(fetch("http://10.97.0.1:9001/big", &small).await);
        assert!(text.ends_with("larger than 10 bytes"), "{text}");
        assert_eq!(warnings_logged(), warned);

        child_proxies().await;
        println!("HTTP ok");
    });
}

async fn child_proxies() {
    let (heads, _) = scripted("10.97.0.1:3128", |_, head| {
        if head.starts_with("CONNECT ") {
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()
        } else {
            ok("via proxy")
        }
    })
    .await;
    let count = || heads.lock().unwrap().len();
    let with_proxy = |proxy: Proxy| FetchOptions {
        proxy,
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        ..FetchOptions::default()
    };

    // Plain HTTP through the proxy, with the proxy's own credentials.
    let opts = with_proxy(Proxy {
        http: Some("http://puser:ppass@10.97.0.1:3128".into()),
        https: None,
        no_proxy: Some("localhost,10.97.0.1".into()),
    });
    let body = fetch("http://10.97.0.99/args", &opts).await.unwrap();
    assert_eq!(body, b"via proxy");
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get http://10.97.0.99/args http/1.1\r\n"),
        "{head}"
    );
    // base64("puser:ppass")
    assert!(
        head.contains("proxy-authorization: basic chvzzxi6chbhc3m="),
        "{head}"
    );

    // no_proxy: straight to the server.
    let body = fetch("http://10.97.0.1:8080/args", &opts).await.unwrap();
    assert_eq!(body, ARGS.as_bytes());
    assert_eq!(count(), 1);

    // An http= proxy is not used for https URLs...
    let (text, _) = fetch_error(fetch("https://10.97.0.99/args", &opts).await);
    assert_eq!(count(), 1, "{text}");
    // ...an https= one is, through CONNECT.
    let opts = with_proxy(Proxy {
        http: None,
        https: Some("http://10.97.0.1:3128".into()),
        no_proxy: None,
    });
    let _ = fetch_error(fetch("https://10.97.0.99/args", &opts).await);
    let head = heads.lock().unwrap()[1].clone();
    assert!(
        head.starts_with("CONNECT 10.97.0.99:443 HTTP/1.1\r\n"),
        "{head}"
    );
}

// ----------------------------------------------------------- HTTPS tests

/// A CA, a server certificate it signed for 10.97.0.1, and an unrelated
/// CA; returns the server's certificate and key.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    qemu_tests::make_ca(dir, "ca", "b2c test CA").unwrap();
    qemu_tests::make_ca(dir, "other", "unrelated CA").unwrap();
    qemu_tests::issue_server_cert_with(dir, dir, "ca", "IP:10.97.0.1").unwrap()
}

/// HTTPS with an extra CA (alone or in a bundle), and without it.
#[test]
fn fetch_over_https() {
    let mut lab = Lab::new("tls");
    let (cert, key) = make_certificates(lab.dir.path());
    let mut cmd = lab.ns.exec("openssl");
    cmd.current_dir(lab.path("www"))
        .args(["s_server", "-WWW", "-accept", "10.97.0.1:8443", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key);
    lab.daemons.spawn("s_server", cmd);
    lab.ns.wait_for_listener("10.97.0.1:8443");
    let out =
        start_child(&lab.ns, lab.dir.path(), "netns_child_https").finish(Duration::from_secs(30));
    assert!(out.contains("HTTPS ok"), "{out}");
}

#[test]
fn netns_child_https() {
    if !is_child("netns_child_https") {
        return;
    }
    child_runtime(async {
        let dir = child_dir();
        let ca = fs::read(dir.join("ca.pem")).unwrap();
        let other = fs::read(dir.join("other.pem")).unwrap();
        let url = "https://10.97.0.1:8443/args";

        let trust = |pem: &[u8]| Trust::bundled().with_pem("ca.pem", pem).unwrap();
        let opts = FetchOptions {
            trust: trust(&ca),
            ..options()
        };
        assert_eq!(fetch(url, &opts).await.unwrap(), ARGS.as_bytes());

        // The CA second in a bundle still counts.
        let bundle = [other.clone(), ca].concat();
        let opts = FetchOptions {
            trust: trust(&bundle),
            ..options()
        };
        assert_eq!(fetch(url, &opts).await.unwrap(), ARGS.as_bytes());

        // Not trusted: a TLS error at once, not retried.
        let opts = FetchOptions {
            trust: trust(&other),
            ..options()
        };
        let start = Instant::now();
        let warned = warnings_logged();
        let (text, _) = fetch_error(fetch(url, &opts).await);
        assert!(start.elapsed() < Duration::from_secs(1), "{text}");
        assert_eq!(warnings_logged(), warned, "{text}");
        assert!(
            text.starts_with("fetching https://10.97.0.1:8443/args: TLS: invalid peer certificate"),
            "{text}"
        );

        let text = Trust::bundled()
            .with_pem("ca.pem", b"not a certificate")
            .unwrap_err()
            .to_string();
        assert!(text.ends_with("holds no PEM certificate"), "{text}");
        println!("HTTPS ok");
    });
}
