//! Volumes synced with a real S3 server: s3s-fs (installed by `make deps`,
//! pinned), which checks SigV4 signatures and stores each object as a
//! plain file under `ROOT/BUCKET/KEY`, on 127.0.0.1. No root needed.
//!
//! `$B2C_S3S_FS` names the server binary; else `s3s-fs` on `PATH` or in
//! `~/.cargo/bin`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use b2c_cmdline::{parse_minio, parse_volume, Layout, MinioAlias, Remote, VolumeOptions};
use b2c_net::http::{RetryPolicy, Trust};
use b2c_storage::volume::s3::S3Client;
use b2c_storage::volume::sync::{self, Bucket, PushMode};
use b2c_storage::volume::{self as volume, Reach};

const AK: &str = "b2c-test-access";
const SK: &str = "b2c-test-secret-Xk3pQ9";
const QUICK: RetryPolicy = RetryPolicy {
    attempts: 2,
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(100),
    give_up_after: None,
};

fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("B2C_S3S_FS") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .expect("s3s-fs is not installed: run `make deps` (cargo install s3s-fs --version 0.14.1 --features binary --locked)")
}

/// One s3s-fs on 127.0.0.1, stopped (by its pid) when dropped.
struct Server {
    child: Option<Child>,
    root: tempfile::TempDir,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Server {
            child: None,
            root: tempfile::tempdir().unwrap(),
            port,
        };
        s.resume();
        s
    }

    /// Starts it again on the same port and data.
    fn resume(&mut self) {
        let child = Command::new(server_binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", AK, "--secret-key", SK])
            .arg(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3s-fs did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn alias(&self, secret: &str) -> MinioAlias {
        parse_minio(&format!("gw,{},{AK},{secret}", self.url())).unwrap()
    }

    /// A new bucket: a directory of the server's root.
    fn bucket(&self, name: &str) -> PathBuf {
        let p = self.root.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn client(&self, bucket: &str) -> S3Client {
        S3Client::new(
            &self.alias(SK),
            bucket,
            None,
            &Trust::bundled(),
            &Default::default(),
            QUICK,
        )
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn options(spec: &str) -> VolumeOptions {
    parse_volume(spec).unwrap().0
}

fn remote(s: &str) -> Remote {
    Remote::parse(s).unwrap()
}

/// Deterministic content: `len` bytes from `seed`.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Every regular file below `dir` but s3s-fs's hidden sidecars, by
/// relative path, with its content.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn names(t: &[(String, Vec<u8>)]) -> Vec<&str> {
    t.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_is_byte_identical_with_multipart_for_large_files() {
    let server = Server::start();
    let stored = server.bucket("results");
    let client = server.client("results");
    let vol = tempfile::tempdir().unwrap();
    write(vol.path(), "a.txt", b"hello");
    write(vol.path(), "dir/sub/b.bin", &content(1, 1 << 20));
    write(vol.path(), "empty", b"");
    // Above the multipart threshold: 5 parts.
    let big = content(7, (65 << 20) + 123);
    write(vol.path(), "big.bin", &big);
    let o = options("results,mirror=gw/results/job-1");
    let bucket = Bucket::new(&client, &remote("gw/results/job-1"));
    let r = sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!((r.files, r.removed, r.unchanged), (4, 0, 0), "{r}");
    assert_eq!(r.bytes, (1 << 20) + 5 + big.len() as u64);
    // The objects are the files, byte for byte, under the prefix.
    assert_eq!(tree(&stored.join("job-1")), tree(vol.path()));
    // Nothing changed: nothing moves.
    let again = sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!((again.files, again.unchanged), (0, 4), "{again}");

    let pulled = tempfile::tempdir().unwrap();
    let r = sync::pull(&o, pulled.path(), &bucket).await.unwrap();
    assert_eq!(r.files, 4, "{r}");
    assert_eq!(tree(pulled.path()), tree(vol.path()));
    // A pulled file takes the object's time: pushing it back moves nothing.
    let back = sync::push(&o, pulled.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!((back.files, back.unchanged), (0, 4), "{back}");
    let again = sync::pull(&o, pulled.path(), &bucket).await.unwrap();
    assert_eq!((again.files, again.unchanged), (0, 4), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_remove_and_exclude_against_the_server() {
    let server = Server::start();
    let stored = server.bucket("b2c-job");
    let client = server.client("b2c-job");
    let bucket = Bucket::new(&client, &remote("gw/b2c-job"));
    let vol = tempfile::tempdir().unwrap();
    for (rel, body) in [
        ("keep", &b"keep"[..]),
        ("change", b"v1"),
        ("stale", b"stale"),
        ("install/x", b"x"),
    ] {
        write(vol.path(), rel, body);
    }
    let plain = options("v,mirror=gw/b2c-job");
    sync::push(&plain, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    // The job changes its files.
    write(vol.path(), "change", b"version 2");
    std::fs::remove_file(vol.path().join("stale")).unwrap();
    write(vol.path(), "new", b"new");
    write(vol.path(), "install/y", b"y");
    write(vol.path(), "deep/a.shader_cache", b"cache");

    // Without overwrite nor remove: only what the bucket lacks goes up.
    let excl = "exclude=install/*,exclude=*.shader_cache";
    let o = options(&format!("v,mirror=gw/b2c-job,{excl}"));
    let r = sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!((r.files, r.kept, r.removed), (1, 1, 0), "{r}");
    assert_eq!(std::fs::read(stored.join("change")).unwrap(), b"v1");

    // All three.
    let o = options(&format!("v,mirror=gw/b2c-job,overwrite,remove,{excl}"));
    let r = sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!((r.files, r.removed, r.kept), (1, 1, 0), "{r}");
    assert_eq!(
        names(&tree(&stored)),
        ["change", "install/x", "keep", "new"],
        "stale removed, excluded files neither pushed nor removed"
    );
    assert_eq!(std::fs::read(stored.join("change")).unwrap(), b"version 2");

    // Watch mode never removes.
    std::fs::remove_file(vol.path().join("keep")).unwrap();
    let r = sync::push(&o, vol.path(), &bucket, PushMode::Watch)
        .await
        .unwrap();
    assert_eq!(r.removed, 0);
    assert!(stored.join("keep").exists());

    // Pull with remove: the bucket's view, excluded files left alone.
    let o = options(&format!("v,mirror=gw/b2c-job,overwrite,remove,{excl}"));
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "local-only", b"l");
    write(other.path(), "install/local", b"l");
    let r = sync::pull(&o, other.path(), &bucket).await.unwrap();
    assert_eq!(r.removed, 1, "{r}");
    assert_eq!(
        names(&tree(other.path())),
        ["change", "install/local", "keep", "new"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error_without_the_keys() {
    let server = Server::start();
    server.bucket("b2c-job");
    let wrong = "WRONG-secret-9f8e7d";
    let client = S3Client::new(
        &server.alias(wrong),
        "b2c-job",
        None,
        &Trust::bundled(),
        &Default::default(),
        QUICK,
    )
    .unwrap();
    let vol = tempfile::tempdir().unwrap();
    write(vol.path(), "result", b"precious");
    let o = options("results,mirror=gw/b2c-job");
    let e = sync::push(
        &o,
        vol.path(),
        &Bucket::new(&client, &remote("gw/b2c-job")),
        PushMode::Mirror,
    )
    .await
    .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains("volume results: push to gw/b2c-job on gw (http://127.0.0.1:"),
        "{shown}"
    );
    assert!(shown.contains("403"), "{shown}");
    assert!(!shown.contains(wrong) && !shown.contains(SK), "{shown}");
    assert_eq!(
        std::fs::read(vol.path().join("result")).unwrap(),
        b"precious"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_the_sync_after_its_retries() {
    let mut server = Server::start();
    server.bucket("b2c-job");
    let client = server.client("b2c-job");
    server.stop();
    let vol = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(vol.path(), &format!("f{i}"), b"x");
    }
    let o = options("v,mirror=gw/b2c-job");
    let e = sync::push(
        &o,
        vol.path(),
        &Bucket::new(&client, &remote("gw/b2c-job")),
        PushMode::Mirror,
    )
    .await
    .unwrap_err();
    assert!(e.reason.contains("after 2 attempts"), "{e}");
    assert_eq!(e.partial.files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_keeps_mode_and_mtime_through_the_bucket() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    server.bucket("b2c-job");
    let client = server.client("b2c-job");
    let bucket = Bucket::new(&client, &remote("gw/b2c-job"));
    let vol = tempfile::tempdir().unwrap();
    write(vol.path(), "tool", b"#!/bin/sh\n");
    let path = vol.path().join("tool");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(when))
        .unwrap();
    drop(f);
    let o = options("v,mirror=gw/b2c-job,preserve");
    sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    let pulled = tempfile::tempdir().unwrap();
    sync::pull(&o, pulled.path(), &bucket).await.unwrap();
    let meta = std::fs::metadata(pulled.path().join("tool")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.modified().unwrap(), when);
    // Without preserve: the object's time, the default mode.
    let plain = tempfile::tempdir().unwrap();
    sync::pull(&options("v,mirror=gw/b2c-job"), plain.path(), &bucket)
        .await
        .unwrap();
    let meta = std::fs::metadata(plain.path().join("tool")).unwrap();
    assert!(meta.modified().unwrap() > when);
}

/// SSE-C (`encrypt_key=`). s3s-fs 0.14 ignores its headers: it stores
/// objects in clear and serves them without the key. What this shows is
/// that b2c's requests carrying the key are signed right (a server that
/// checks SigV4 accepts the put, the multipart upload and its parts, and
/// the get, with the SSE-C headers among the signed ones) and that the
/// files come back intact. That a server encrypts with the key and
/// refuses a read without it is untested (README); the last assertions
/// fail the day s3s-fs honours SSE-C, to have that test written then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_requests_are_signed_and_accepted_but_s3s_fs_does_not_encrypt() {
    let server = Server::start();
    let stored = server.bucket("sealed");
    let o = options("v,mirror=gw/sealed,encrypt_key=0123456789abcdef0123456789abcdef");
    let client = S3Client::new(
        &server.alias(SK),
        "sealed",
        o.encrypt_key.as_ref(),
        &Trust::bundled(),
        &Default::default(),
        QUICK,
    )
    .unwrap();
    let bucket = Bucket::new(&client, &remote("gw/sealed"));
    let vol = tempfile::tempdir().unwrap();
    write(vol.path(), "small.txt", b"sealed result");
    // In parts: UploadPart carries the key too.
    write(vol.path(), "big.bin", &content(3, (65 << 20) + 7));
    let r = sync::push(&o, vol.path(), &bucket, PushMode::Mirror)
        .await
        .unwrap();
    assert_eq!(r.files, 2, "{r}");
    let pulled = tempfile::tempdir().unwrap();
    sync::pull(&o, pulled.path(), &bucket).await.unwrap();
    assert_eq!(tree(pulled.path()), tree(vol.path()));

    // What s3s-fs does with SSE-C: nothing.
    assert_eq!(tree(&stored), tree(vol.path()), "stored in clear");
    let without_key = server.client("sealed");
    let plain = tempfile::tempdir().unwrap();
    sync::pull(
        &options("v,mirror=gw/sealed"),
        plain.path(),
        &Bucket::new(&without_key, &remote("gw/sealed")),
    )
    .await
    .expect("s3s-fs serves SSE-C objects without their key");
}

/// A plan whose volumes live under `root` instead of /storage.
fn plan_under(root: &Path, line: &str) -> b2c_cmdline::BootPlan {
    let mut plan = b2c_cmdline::plan(line).unwrap();
    plan.layout = Layout::new(root);
    for v in &mut plan.volumes {
        v.path = plan.layout.volume(v.name());
    }
    plan
}

fn reach() -> (Trust, b2c_cmdline::Proxy) {
    (Trust::bundled(), Default::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_pulls_inputs_pushes_changes_as_they_happen_and_expires() {
    let server = Server::start();
    let stored = server.bucket("job-4242");
    std::fs::write(stored.join("input.txt"), b"from the farm").unwrap();
    let storage = tempfile::tempdir().unwrap();
    let plan = plan_under(
        storage.path(),
        &format!(
            "b2c.minio=gw,{},{AK},{SK} b2c.volume=job-4242-results,mirror=gw/job-4242,\
             pull_on=pipeline_start,push_on=changes,overwrite,expiration=pipeline_end",
            server.url()
        ),
    );
    let (trust, proxy) = reach();
    let reach = Reach {
        trust: &trust,
        proxy: &proxy,
        retry: QUICK,
    };
    let mut set = volume::setup(&plan, &reach).await.unwrap();
    let dir = plan.layout.volume("job-4242-results");
    set.event(b2c_cmdline::SyncEvent::PipelineStart)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dir.join("input.txt")).unwrap(),
        b"from the farm"
    );
    set.start_watchers();
    // The job writes a result mid-run: it reaches the bucket before the
    // end (polled; the bound only keeps a broken watcher from hanging).
    write(&dir, "logs/first.log", b"first result");
    let start = Instant::now();
    while !stored.join("logs/first.log").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the change was never pushed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read(stored.join("logs/first.log")).unwrap(),
        b"first result"
    );
    write(&dir, "last.log", b"written at the very end");
    assert!(set.finish().await);
    assert_eq!(
        std::fs::read(stored.join("last.log")).unwrap(),
        b"written at the very end"
    );
    assert!(!dir.exists(), "expiration=pipeline_end deletes the volume");
    assert!(std::fs::read_dir(plan.layout.volume_state())
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_final_push_keeps_the_volume_and_the_next_boot_pushes_it() {
    let mut server = Server::start();
    let stored = server.bucket("job-7");
    let storage = tempfile::tempdir().unwrap();
    let line = format!(
        "b2c.minio=gw,{},{AK},{SK} b2c.volume=res,mirror=gw/job-7,push_on=pipeline_end,\
         pull_on=pipeline_start,overwrite,expiration=pipeline_end",
        server.url()
    );
    let plan = plan_under(storage.path(), &line);
    let (trust, proxy) = reach();
    let reach = Reach {
        trust: &trust,
        proxy: &proxy,
        retry: QUICK,
    };
    let dir = plan.layout.volume("res");

    // Boot 1: the server goes away before the end.
    let mut set = volume::setup(&plan, &reach).await.unwrap();
    write(&dir, "result.xml", b"<ok/>");
    server.stop();
    assert!(!set.finish().await);
    assert!(
        dir.join("result.xml").exists(),
        "never deleted while a push is owed"
    );

    // Boot 2: a setup that finds an expired volume owing a push keeps it,
    // pushes it before pulling anything, then the job goes on.
    server.resume();
    std::fs::write(stored.join("result.xml"), b"stale server copy").unwrap();
    let mut set = volume::setup(&plan, &reach).await.unwrap();
    assert_eq!(std::fs::read(stored.join("result.xml")).unwrap(), b"<ok/>");
    set.event(b2c_cmdline::SyncEvent::PipelineStart)
        .await
        .unwrap();
    assert!(set.finish().await);
    assert!(!dir.exists());
}
