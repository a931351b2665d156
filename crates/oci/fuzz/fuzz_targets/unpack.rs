//! A layer blob (gzip'd or plain tar) must never panic the unpacker, and
//! nothing it holds may land outside the layer directory: every input is
//! unpacked into `layer/` of a fresh temporary directory, and its sibling
//! `outside` must still be the only other entry, untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"untouched").expect("write outside");
    let _ = b2c_oci::unpack_layer(data, &tmp.path().join("layer"));
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read the temporary directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["layer", "outside"], "something was written beside the layer");
    assert_eq!(std::fs::read(&outside).expect("read outside"), b"untouched");
});
