//! Read-only image stores of containers-storage: a store written by podman
//! itself (`podman --root DIR --storage-driver overlay pull` from the test
//! registry), found by name, by ID and by short ID, its layers stacked by
//! overlayfs from the store's own `diff` directories (whiteouts as podman
//! wrote them), and read under its locks while a writer holds them. Root,
//! podman, skopeo and docker-registry are needed.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use b2c_cmdline::ImageName;
use b2c_oci::{find_in_stores, ContainersStore, ImageSource, ImageStoreError, Lookup};
use common::registry::{run, Registry};
use qemu_tests::images::{layout, LAYERS_FILES, LAYERS_TREE};

/// The environment variable that makes [`lock_holder`] act, in a child.
const HOLDER: &str = "B2C_TEST_LOCK_HOLDER";

/// A podman store holding the busybox and layers test images, pulled from
/// a registry on loopback, shared by the tests of this file.
struct PodmanStore {
    root: PathBuf,
    registry: String,
    _dir: tempfile::TempDir,
    _registry: Registry,
}

fn podman(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "overlay"])
        .args(args);
    cmd
}

fn store() -> &'static PodmanStore {
    static STORE: OnceLock<PodmanStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let registry = Registry::start(None);
        let layout = layout().unwrap();
        for (name, image) in [("busybox", "b2c/busybox"), ("layers", "b2c/layers")] {
            run(Command::new("skopeo").args([
                "copy".to_string(),
                "--dest-tls-verify=false".into(),
                format!("oci:{}:{name}", layout.display()),
                format!("docker://{}/{image}:latest", registry.host()),
            ]));
        }
        let dir = tempfile::tempdir().unwrap();
        for image in ["b2c/busybox", "b2c/layers"] {
            run(&mut podman(
                dir.path(),
                &[
                    "pull",
                    "--tls-verify=false",
                    &format!("{}/{image}:latest", registry.host()),
                ],
            ));
        }
        PodmanStore {
            root: dir.path().join("root"),
            registry: registry.host(),
            _dir: dir,
            _registry: registry,
        }
    })
}

/// podman's own answer: the full ID of an image.
fn podman_id(s: &PodmanStore, name: &str) -> String {
    let out = podman(
        s.root.parent().unwrap(),
        &["images", "--no-trunc", "--format", "{{.ID}}", name],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    id.strip_prefix("sha256:").unwrap_or(&id).to_string()
}

fn lookup(name: &str) -> Lookup {
    Lookup::of(&ImageName::parse(name).unwrap(), name)
}

fn contents(root: &Path, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir.trim_start_matches('/'))];
    while let Some(path) = stack.pop() {
        let shown = format!("/{}", path.strip_prefix(root).unwrap().display());
        out.push(shown);
        if path.is_dir() && !path.is_symlink() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn podman_images_run_from_the_store_by_name_with_their_whiteouts() {
    common::init_logging();
    let s = store();
    let st = ContainersStore::new("public", &s.root);
    let name = format!("{}/b2c/layers:latest", s.registry);
    let image = st.find(&lookup(&name)).unwrap().expect("found by name");
    assert_eq!(image.source, ImageSource::ImageStore);
    assert_eq!(image.reference, name);
    assert_eq!(image.served_by, "image store public");
    assert_eq!(image.layers.len(), 4, "{:?}", image.layers);
    assert_eq!(image.layer_digests.len(), 4);
    assert_eq!(image.stats.layers_downloaded, 0);
    for dir in &image.layers {
        assert!(dir.starts_with(s.root.join("overlay")), "{}", dir.display());
        assert!(dir.ends_with("diff"), "{}", dir.display());
    }
    // The config podman stored, with the image's command.
    assert!(image.config.config().is_some());

    // Stacked from the store's own directories: podman's whiteouts (0/0
    // character devices) and opaque directories work as lower layers.
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("rootfs");
    b2c_oci::mount_overlay(
        &image.layers,
        &tmp.path().join("upper"),
        &tmp.path().join("work"),
        &target,
    )
    .unwrap();
    let _mounted = Mounted(target.clone());
    assert_eq!(contents(&target, "/data"), LAYERS_TREE);
    for (path, text) in LAYERS_FILES {
        let got = fs::read_to_string(target.join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(got, format!("{text}\n"), "{path}");
    }
    assert!(target.join("bin/busybox").is_file());
}

#[test]
fn images_are_found_by_id_and_short_id() {
    let s = store();
    let st = ContainersStore::new("public", &s.root);
    let busybox = format!("{}/b2c/busybox:latest", s.registry);
    let id = podman_id(s, &busybox);
    assert_eq!(id.len(), 64);
    let stores = [ContainersStore::new("empty", "/nonexistent"), st.clone()];
    for written in [id.clone(), format!("sha256:{id}"), id[..12].to_string()] {
        let found = find_in_stores(&stores, &lookup(&written))
            .unwrap()
            .unwrap_or_else(|| panic!("{written} not found"));
        assert_eq!(found.reference, busybox, "{written}");
        assert_eq!(found.layers.len(), 1);
    }
    // Not there: nothing, and the normal pull runs.
    assert!(st
        .find(&lookup("10.0.0.1:5000/b2c/other:1"))
        .unwrap()
        .is_none());
    let absent = "f".repeat(64);
    assert!(st.find(&lookup(&absent)).unwrap().is_none());
    // Every ID starts with the empty prefix.
    let all = Lookup {
        name: None,
        id: Some(String::new()),
    };
    assert!(matches!(
        st.find(&all),
        Err(ImageStoreError::Ambiguous { count: 2, .. })
    ));
    // A store that cannot be read says so when no other has the image.
    let e = find_in_stores(&stores[..1], &lookup(&id)).unwrap_err();
    assert!(e.to_string().contains("image store empty"), "{e}");
}

/// A writer of the store, in a child process (fcntl locks belong to
/// processes): takes `images.lock` exclusively, says so, adds a name to
/// the busybox image while holding it, and lets go a moment later.
#[test]
fn lock_holder() {
    let Ok(root) = std::env::var(HOLDER) else {
        return;
    };
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(&root).join("overlay-images/images.lock"))
        .unwrap();
    rustix::fs::fcntl_lock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    println!("locked");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let list = Path::new(&root).join("overlay-images/images.json");
    let mut images: serde_json::Value = serde_json::from_slice(&fs::read(&list).unwrap()).unwrap();
    for image in images.as_array_mut().unwrap() {
        let names = image["names"].as_array_mut().unwrap();
        if names
            .iter()
            .any(|n| n.as_str().unwrap().ends_with("/b2c/busybox:latest"))
        {
            names.push("added.test/while/locked:v2".into());
        }
    }
    // As containers-storage writes it: a new file renamed over the list.
    let tmp = list.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(&images).unwrap()).unwrap();
    fs::rename(&tmp, &list).unwrap();
    rustix::fs::fcntl_lock(&lock, rustix::fs::FlockOperation::Unlock).unwrap();
}

#[test]
fn a_store_being_written_is_read_after_the_writer() {
    let s = store();
    // A copy of the lists: the other tests read the shared store.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["overlay-images", "overlay-layers"] {
        fs::create_dir(root.join(sub)).unwrap();
        for e in fs::read_dir(s.root.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), root.join(sub).join(e.file_name())).unwrap();
            } else {
                // Big data: the config.
                let to = root.join(sub).join(e.file_name());
                fs::create_dir(&to).unwrap();
                for f in fs::read_dir(e.path()).unwrap() {
                    let f = f.unwrap();
                    fs::copy(f.path(), to.join(f.file_name())).unwrap();
                }
            }
        }
    }
    std::os::unix::fs::symlink(s.root.join("overlay"), root.join("overlay")).unwrap();
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_holder", "--nocapture", "--test-threads=1"])
        .env(HOLDER, root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().ends_with("locked")),
        "the writer never locked"
    );
    let st = ContainersStore::new("copy", root);
    let found = st
        .find(&lookup("added.test/while/locked:v2"))
        .unwrap()
        .expect("the name the writer added under its lock");
    assert_eq!(found.layers.len(), 1);
    assert!(writer.wait().unwrap().success());
}
