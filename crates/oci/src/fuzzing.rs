//! Entry points for the fuzz targets of `crates/oci/fuzz` (feature
//! `fuzzing`): every parser that reads what a registry sends, in the order
//! a pull runs them. None may panic, whatever the bytes.

use oci_spec::image::{ImageConfiguration, ImageIndex};

/// A manifest, an index, a config, a token answer, an error body and a
/// `WWW-Authenticate` value, all made of `data`.
pub fn registry_documents(data: &[u8]) {
    // What a manifest answer goes through.
    if let Ok((manifest, _)) = crate::images::parse_manifest(data) {
        for layer in manifest.layers() {
            let _ = crate::pull::check_layer("fuzz", layer);
        }
        let _ = manifest.config().size();
    }
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        let _ = crate::pull::platform_manifest(&index, &b2c_cmdline::Platform::default());
    }
    let _ = ImageConfiguration::from_reader(data);
    let text = String::from_utf8_lossy(data);
    let _ = crate::client::parse_bearer(&text);
    let _ = crate::client::parse_error_body(data);
    let _ = crate::client::parse_token(data);
}
