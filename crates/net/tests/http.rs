//! The HTTP layer against a real server: a small HTTP/1.1 server on
//! 127.0.0.1 (tokio, in the test) that answers from a script. No
//! privileges needed.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use b2c_net::fetch;
use b2c_net::http::RetryPolicy;
use b2c_net::FetchOptions;
use common::{fetch_error, ok, scripted};

/// Every log line of the process since the first call.
fn logged() -> Vec<String> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let line = format!("{}: {}", record.level(), record.args());
            LINES.get_or_init(Mutex::default).lock().unwrap().push(line);
        }
        fn flush(&self) {}
    }
    if log::set_boxed_logger(Box::new(Capture)).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    LINES.get_or_init(Mutex::default).lock().unwrap().clone()
}

/// Retries the tests would notice: a backoff far longer than they wait.
fn slow_backoff(attempts: u32) -> FetchOptions {
    FetchOptions {
        retry: RetryPolicy {
            attempts,
            first_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        },
        ..FetchOptions::default()
    }
}

/// Fetches from a server whose first answer is `first` and whose second
/// is a 200; returns how long that took and the retry warnings.
async fn retried_once(first: &'static str) -> (Duration, Vec<String>) {
    let (heads, port) = scripted("127.0.0.1:0", move |n, _| match n {
        0 => first.into(),
        _ => ok("at last"),
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/x");
    logged();
    let start = Instant::now();
    let body = fetch(&url, &slow_backoff(2)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(body, b"at last");
    assert_eq!(heads.lock().unwrap().len(), 2);
    let warnings = logged()
        .into_iter()
        .filter(|l| l.starts_with("WARN") && l.contains(&url))
        .collect();
    (waited, warnings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_is_retried_after_the_servers_delay() {
    let (waited, warnings) = retried_once(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    // The server's second, not the policy's 30.
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("/x failed (HTTP 429 Too Many Requests); retrying in 1.0 s (attempt 2/2)"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_with_a_past_date_is_retried_at_once() {
    let (waited, warnings) = retried_once(
        "HTTP/1.1 503 Service Unavailable\r\n\
         Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(warnings[0].contains("retrying in 0.0 s"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_for_good_says_so() {
    let (heads, port) = scripted("127.0.0.1:0", |_, _| {
        "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".into()
    })
    .await;
    let opts = FetchOptions {
        retry: RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..FetchOptions::default()
    };
    let url = format!("http://127.0.0.1:{port}/x");
    let (text, status) = fetch_error(fetch(&url, &opts).await);
    assert_eq!(status, Some(429));
    assert_eq!(heads.lock().unwrap().len(), 3);
    assert_eq!(
        text,
        format!("fetching {url}: HTTP 429 Too Many Requests (after 3 attempts)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused() {
    let small = FetchOptions {
        max_size: 10,
        ..slow_backoff(3)
    };
    let chunked = |chunks: &[&str]| {
        let mut answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                          Connection: close\r\n\r\n"
            .to_string();
        for c in chunks {
            answer.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
        }
        answer + "0\r\n\r\n"
    };
    let big = chunked(&["yyyyyyyy"; 4]);
    let fits = chunked(&["hello", "world"]);
    for (answer, what) in [
        (ok(&"x".repeat(100)), "announced by Content-Length"),
        (big, "chunked: nothing announced, found out while reading"),
    ] {
        let (heads, port) = scripted("127.0.0.1:0", move |_, _| answer.clone()).await;
        let (text, _) = fetch_error(fetch(&format!("http://127.0.0.1:{port}/"), &small).await);
        assert!(
            text.ends_with("the body is larger than 10 bytes"),
            "{what}: {text}"
        );
        assert_eq!(heads.lock().unwrap().len(), 1, "{what}: retried");
    }
    let (_, port) = scripted("127.0.0.1:0", move |_, _| fits.clone()).await;
    let body = fetch(&format!("http://127.0.0.1:{port}/"), &small)
        .await
        .unwrap();
    assert_eq!(body, b"helloworld");
}
