//! The test CA (made with openssl) and the registry's server certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{run, Context, Result};

/// Names the server certificate is valid for: the registry's DNS name
/// (dnsmasq resolves it) and its address.
const SERVER_SAN: &str = "DNS:registry.test,IP:10.99.0.1";

/// The PEM of the test CA. The same file for the whole process (and
/// reused by later processes), because it is baked into the initramfs
/// that [`crate::initramfs_with_ca`] builds.
pub fn ca_cert_path() -> Result<PathBuf> {
    Ok(ca_dir()?.join("ca.pem"))
}

fn ca_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::output_dir().join("ca");
        if !dir.join("ca.pem").exists() || !dir.join("ca.key").exists() {
            create_ca(&dir)?;
        }
        Ok(dir)
    })
    .clone()
}

/// Built beside the final place and renamed into it, so that concurrent
/// test processes never see half a CA; the loser of a race uses the
/// winner's.
fn create_ca(dir: &Path) -> Result<()> {
    let parent = dir.parent().expect("ca dir has a parent");
    std::fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("ca.tmp")
        .tempdir_in(parent)
        .context(|| format!("temp dir in {}", parent.display()))?;
    make_ca(tmp.path(), "ca", "b2c qemu-tests CA")?;
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// Issues a server certificate for the registry into `dir`, signed by the
/// shared test CA; returns the certificate and key paths.
pub(crate) fn issue_server_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    issue_server_cert_with(dir, &ca_dir()?, "ca", SERVER_SAN)
}

/// Makes a self-signed CA in `dir`: `<name>.pem` and `<name>.key` (EC
/// P-256), with the subject `/CN=<cn>`. For tests of other crates too.
pub fn make_ca(dir: &Path, name: &str, cn: &str) -> Result<PathBuf> {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-new", "-nodes"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-keyout", &key, "-out", &pem, "-days", "3650"])
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .args(["-addext", "subjectKeyIdentifier=hash"]),
        "openssl: create a test CA",
    )?;
    Ok(dir.join(pem))
}

/// Issues a server certificate for `san` (e.g. `IP:127.0.0.1,DNS:localhost`)
/// into `dir` as `server.pem` and `server.key`, signed by the CA
/// `<ca_dir>/<ca_name>.{pem,key}` that [`make_ca`] made; returns their paths.
pub fn issue_server_cert_with(
    dir: &Path,
    ca_dir: &Path,
    ca_name: &str,
    san: &str,
) -> Result<(PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName={san}\n\
             subjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid\n"
        ),
    )
    .context(|| format!("write {}/server.ext", dir.display()))?;
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-new", "-nodes"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", "/CN=b2c test server"]),
        "openssl: server certificate request",
    )?;
    // -set_serial rather than -CAcreateserial: the serial file would live
    // in the CA's dir, shared between TestNets, and race.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let serial = format!("0x{:x}{:08x}", nanos, std::process::id());
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-req", "-in", "server.csr", "-CA"])
            .arg(ca_dir.join(format!("{ca_name}.pem")))
            .arg("-CAkey")
            .arg(ca_dir.join(format!("{ca_name}.key")))
            .args(["-set_serial", &serial, "-days", "825"])
            .args(["-extfile", "server.ext", "-out", "server.pem"]),
        "openssl: sign the server certificate",
    )?;
    Ok((dir.join("server.pem"), dir.join("server.key")))
}
