//! `fscrypt_key=`: a volume directory encrypted with an fscrypt v2 policy
//! (the kernel's native file encryption: names and contents), as
//! boot2container does with `fscryptctl add_key` and `set_policy`. The
//! cache is formatted with ext4's `encrypt` feature for this.
//!
//! The ioctls are the kernel's `linux/fscrypt.h` UAPI.

use std::os::fd::AsRawFd;
use std::path::Path;

use b2c_cmdline::{FscryptKey, NamedVolume};

/// The algorithms of the policy below (AES-256-XTS for contents,
/// AES-256-CTS for names, HKDF-SHA512 for the keys) that Debian's kernels
/// build as modules (`CONFIG_FS_ENCRYPTION_ALGS=m`): the kernel would ask a
/// modprobe helper for them, which the initramfs does not have, and adding
/// the key fails with ENOENT. AES itself, CBC and HMAC are built in.
const MODULES: &[&str] = &["sha512_generic", "ecb", "xts", "cts"];
/// Faster versions of the same, for CPUs that have the instructions (a
/// module that finds none refuses to load, which is fine).
const FAST_MODULES: &[&str] = &["aesni_intel", "sha512_ssse3"];

/// The kernel modules to load before `volumes` are set up: fscrypt's
/// algorithms when one of them is encrypted, then their faster variants.
pub fn kernel_modules(volumes: &[NamedVolume]) -> (Vec<String>, Vec<String>) {
    if !volumes.iter().any(|v| v.options.fscrypt_key.is_some()) {
        return (Vec::new(), Vec::new());
    }
    let names = |list: &[&str]| list.iter().map(|m| m.to_string()).collect();
    (names(MODULES), names(FAST_MODULES))
}

const FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const FSCRYPT_POLICY_V2: u8 = 2;
const FSCRYPT_MODE_AES_256_XTS: u8 = 1;
const FSCRYPT_MODE_AES_256_CTS: u8 = 4;
/// Names padded to 32 bytes, as fscryptctl does by default.
const FSCRYPT_POLICY_FLAGS_PAD_32: u8 = 0x03;

#[repr(C)]
struct AddKeyArg {
    // struct fscrypt_key_specifier
    spec_type: u32,
    spec_reserved: u32,
    identifier: [u8; 32],
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; 64],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PolicyV2 {
    version: u8,
    contents_mode: u8,
    filenames_mode: u8,
    flags: u8,
    reserved: [u8; 4],
    identifier: [u8; 16],
}

#[repr(C)]
struct GetPolicyExArg {
    policy_size: u64,
    policy: [u8; 24],
}

// _IOWR('f', 23, struct fscrypt_add_key_arg) with its 80-byte header.
nix::ioctl_readwrite_bad!(
    add_key,
    nix::request_code_readwrite!(b'f', 23, 80),
    AddKeyArg
);
// _IOR('f', 19, struct fscrypt_policy_v1): the v2 policy goes through the
// same number.
nix::ioctl_write_ptr_bad!(set_policy, nix::request_code_read!(b'f', 19, 12), PolicyV2);
// _IOWR('f', 22, __u8[9]).
nix::ioctl_readwrite_bad!(
    get_policy_ex,
    nix::request_code_readwrite!(b'f', 22, 9),
    GetPolicyExArg
);

/// What became of the volume directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    /// It was encrypted under this key already: its files are readable.
    AsBefore,
    /// Empty and new: encrypted from now on.
    New,
    /// It held files encrypted under another key, or unencrypted ones:
    /// they were deleted (`fscrypt_reset_key`, or an unencrypted volume
    /// that gets a key, as boot2container does).
    Emptied,
}

#[derive(Debug, thiserror::Error)]
pub enum FscryptError {
    #[error(
        "{0} is encrypted under another fscrypt key (add fscrypt_reset_key to empty it and start over)"
    )]
    OtherKey(String),
    #[error("{0} is encrypted, and no fscrypt_key was given")]
    NoKey(String),
    #[error("{path}: {what}: {errno}{hint}")]
    Kernel {
        path: String,
        what: &'static str,
        errno: nix::errno::Errno,
        hint: &'static str,
    },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The policy of `dir`, `None` when it is not encrypted.
fn policy(dir: &std::fs::File, path: &Path) -> Result<Option<PolicyV2>, FscryptError> {
    let mut arg = GetPolicyExArg {
        policy_size: 24,
        policy: [0; 24],
    };
    // SAFETY: arg is a valid, writable fscrypt_get_policy_ex_arg.
    match unsafe { get_policy_ex(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => {
            let p = &arg.policy;
            let mut identifier = [0u8; 16];
            identifier.copy_from_slice(&p[8..24]);
            Ok(Some(PolicyV2 {
                version: p[0],
                contents_mode: p[1],
                filenames_mode: p[2],
                flags: p[3],
                reserved: [0; 4],
                identifier,
            }))
        }
        Err(nix::errno::Errno::ENODATA) => Ok(None),
        Err(errno) => Err(kernel(path, "reading its encryption policy", errno)),
    }
}

fn kernel(path: &Path, what: &'static str, errno: nix::errno::Errno) -> FscryptError {
    FscryptError::Kernel {
        path: path.display().to_string(),
        what,
        errno,
        hint: match errno {
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOTTY => {
                " (the filesystem lacks the encrypt feature: b2c.cache_device=reset formats one that has it)"
            }
            _ => "",
        },
    }
}

/// Whether `dir` is encrypted (for a volume declared without a key).
pub fn is_encrypted(dir: &Path) -> Result<bool, FscryptError> {
    let f = open_dir(dir)?;
    Ok(policy(&f, dir)?.is_some())
}

fn open_dir(dir: &Path) -> Result<std::fs::File, FscryptError> {
    std::fs::File::open(dir).map_err(|e| FscryptError::Io(dir.display().to_string(), e))
}

/// Gives the kernel `key` and makes `dir` (which exists) encrypted under
/// it, as boot2container does: an unencrypted directory is emptied first
/// (a policy needs an empty one), one under another key only with
/// `reset`.
pub fn encrypt_dir(dir: &Path, key: &FscryptKey, reset: bool) -> Result<Encrypted, FscryptError> {
    let f = open_dir(dir)?;
    let mut arg = AddKeyArg {
        spec_type: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER,
        spec_reserved: 0,
        identifier: [0; 32],
        raw_size: 64,
        key_id: 0,
        reserved: [0; 8],
        raw: *key.expose(),
    };
    // SAFETY: arg is a valid fscrypt_add_key_arg followed by its 64 raw
    // bytes.
    let added = unsafe { add_key(f.as_raw_fd(), &mut arg) };
    // The key's bytes are no longer needed here.
    arg.raw = [0; 64];
    added.map_err(|errno| kernel(dir, "adding the fscrypt key", errno))?;
    let mut identifier = [0u8; 16];
    identifier.copy_from_slice(&arg.identifier[..16]);
    let wanted = PolicyV2 {
        version: FSCRYPT_POLICY_V2,
        contents_mode: FSCRYPT_MODE_AES_256_XTS,
        filenames_mode: FSCRYPT_MODE_AES_256_CTS,
        flags: FSCRYPT_POLICY_FLAGS_PAD_32,
        reserved: [0; 4],
        identifier,
    };
    let current = policy(&f, dir)?;
    let outcome = match current {
        Some(p) if p.identifier == identifier => return Ok(Encrypted::AsBefore),
        Some(_) if !reset => return Err(FscryptError::OtherKey(dir.display().to_string())),
        Some(_) => Encrypted::Emptied,
        None if empty(dir)? => Encrypted::New,
        None => Encrypted::Emptied,
    };
    drop(f);
    if outcome == Encrypted::Emptied {
        std::fs::remove_dir_all(dir).map_err(|e| FscryptError::Io(dir.display().to_string(), e))?;
        std::fs::create_dir(dir).map_err(|e| FscryptError::Io(dir.display().to_string(), e))?;
    }
    let f = open_dir(dir)?;
    // SAFETY: wanted is a valid fscrypt_policy_v2.
    unsafe { set_policy(f.as_raw_fd(), &wanted) }
        .map_err(|errno| kernel(dir, "setting the fscrypt policy", errno))?;
    Ok(outcome)
}

fn empty(dir: &Path) -> Result<bool, FscryptError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| FscryptError::Io(dir.display().to_string(), e))?;
    Ok(entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uapi_structures_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<AddKeyArg>(), 80 + 64);
        assert_eq!(std::mem::size_of::<PolicyV2>(), 24);
        assert_eq!(std::mem::size_of::<GetPolicyExArg>(), 32);
        // The ioctl numbers: _IOWR('f', 23, 80 bytes), _IOR('f', 19, 12),
        // _IOWR('f', 22, 9).
        let ioc =
            |dir: u32, nr: u32, size: u32| (dir << 30) | (size << 16) | (u32::from(b'f') << 8) | nr;
        assert_eq!(ioc(3, 23, 80), 0xc050_6617);
        assert_eq!(ioc(2, 19, 12), 0x800c_6613);
        assert_eq!(ioc(3, 22, 9), 0xc009_6616);
    }
}
