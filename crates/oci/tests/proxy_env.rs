//! Without `b2c.proxy`, the proxy variables of the environment are ignored:
//! the kernel hands init the words of its command line it does not know as
//! environment variables, and reqwest would otherwise obey `HTTPS_PROXY`
//! and friends. Its own binary: it changes the process environment.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use b2c_oci::{
    parse_reference, pull, LayerStore, PullError, PullPolicy, RegistryOptions, RetryPolicy,
};
use common::init_logging;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_are_ignored() {
    init_logging();
    // A would-be proxy that must never be connected to.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://127.0.0.1:{}", trap.local_addr().unwrap().port());
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        // The only test of this binary: no other thread reads the
        // environment meanwhile.
        std::env::set_var(var, &url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = parse_reference(&format!("127.0.0.1:{dead}/test/x:v1")).unwrap();
    let store = LayerStore::new(tempfile::tempdir().unwrap().path().join("s")).unwrap();
    for tls_verify in [true, false] {
        let opts = RegistryOptions {
            tls_verify,
            retry: RetryPolicy {
                attempts: 1,
                first_delay: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            ..RegistryOptions::default()
        };
        let err = pull(&r, &opts, &store, PullPolicy::Always)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(!err.to_string().contains("proxy"), "{err}");
    }
    assert!(trap.accept().is_err(), "the environment's proxy was used");
}
