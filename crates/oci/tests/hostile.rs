//! Pulls from a hostile registry (tests/common/hostile.rs): crafted
//! layers, manifests and tokens, and the faults of a bad network. Each
//! test is an attack or a fault that once got through; what b2c promises
//! about them is in the README's "Threat model and guarantees".
//!
//! The file descriptor limit of this test process is PID 1's (1024), so
//! that whatever runs out of descriptors at boot runs out here too.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use b2c_oci::{parse_reference, pull, LayerError, LayerStore, PullError, PullPolicy};
use b2c_oci::{RegistryOptions, RetryPolicy};
use common::hostile::{Content, Hostile, Script};
use common::{gzip, init_logging, Tb};
use tar::{EntryType, Header};

/// PID 1's default limit: RLIMIT_NOFILE 1024.
fn pid1_fd_limit() {
    let limit = rustix::process::Rlimit {
        current: Some(1024),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        tls_verify: false,
        retry: RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..RegistryOptions::default()
    }
}

fn no_script() -> Script {
    Arc::new(|_| None)
}

/// Names in the store's `layers/` that are not committed layers.
fn leftovers(store: &LayerStore) -> Vec<String> {
    fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("sha256-"))
        .collect()
}

/// A file `levels` directories deep (GNU long names).
fn deep_tree(levels: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(4);
    h.set_mtime(common::MTIME);
    b.append_data(&mut h, format!("{}deep", "d/".repeat(levels)), &b"deep"[..])
        .unwrap();
    b.into_inner().unwrap()
}

/// Problem 1: a layer 1,100 levels deep with a wrong digest. Its cleanup
/// must not need a descriptor per level: with PID 1's 1,024 it failed,
/// left a `.tmp-*` behind, and every later `LayerStore::new` (every later
/// boot on that cache disk) failed. Eviction removes layers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_tree_never_poisons_the_store() {
    init_logging();
    pid1_fd_limit();
    let deep = gzip(&deep_tree(1100));
    let mut content = Content::default();
    // The manifest names a digest the blob does not have.
    let liar = format!("sha256:{}", "1".repeat(64));
    let lying = content.image_with_blobs("lying", std::slice::from_ref(&deep), |m| {
        m["layers"][0]["digest"] = liar.clone().into();
    });
    content.add(
        &lying.blob_path(&liar),
        "application/octet-stream",
        deep.clone(),
    );
    let honest = content.image("honest", &[deep_tree(1100)]);
    let server = Hostile::start(content, no_script());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = LayerStore::new(&root).unwrap();

    let r = parse_reference(&format!("{}/lying:v1", server.host())).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.is_digest_mismatch(), "{err}");
    assert_eq!(leftovers(&store), Vec::<String>::new());
    // The next boot opens the store and pulls.
    let store = LayerStore::new(&root).unwrap();
    let r = parse_reference(&format!("{}/honest:v1", server.host())).unwrap();
    let pulled = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    let bottom = pulled.layers[0].join(format!("{}deep", "d/".repeat(1100)));
    assert!(fs::symlink_metadata(bottom).is_ok());

    // Evicting it (everything, nothing kept) removes it whole.
    let stats = store.evict(u64::MAX, &[]).unwrap();
    assert_eq!(stats.evicted.len(), 1);
    assert!(stats.bytes_freed > 0);
    assert_eq!(leftovers(&store), Vec::<String>::new());
    assert!(!store.contains(&honest.layer_digests[0].parse().unwrap()));
    LayerStore::new(&root).unwrap();
}

/// Problem 8: verify, then judge. A corrupt layer whose first member
/// "escapes" is a corrupt layer: the digest mismatch is what is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_reported_as_a_digest_mismatch() {
    init_logging();
    let evil = gzip(
        &Tb::new()
            .file("../escape", b"x")
            .file("big", &[7u8; 100_000])
            .finish(),
    );
    let mut content = Content::default();
    let liar = format!("sha256:{}", "2".repeat(64));
    let image = content.image_with_blobs("evil", std::slice::from_ref(&evil), |m| {
        m["layers"][0]["digest"] = liar.clone().into();
    });
    content.add(&image.blob_path(&liar), "application/octet-stream", evil);
    let server = Hostile::start(content, no_script());
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{}/evil:v1", server.host())).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PullError::Layer {
                source: LayerError::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("escape"), "{err}");
    assert_eq!(leftovers(&store), Vec::<String>::new());
}
