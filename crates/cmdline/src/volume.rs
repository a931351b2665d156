//! `b2c.minio` and `b2c.volume`: S3 endpoints and the named volumes synced
//! with them, in boot2container's syntax (which wraps MinIO's `mc mirror`).
//!
//! Keys are [`Secret`]s: their `Debug` and `Display` never show them, so
//! that `b2c cmdline` (which prints the plan) and every error stay clean.
//! [`redact_cmdline`] does the same for the kernel command line as text.

use std::fmt;

/// A key or password from the command line. Shown as `***` by `Debug` and
/// `Display`; [`Secret::expose`] is the only way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for the request signer and the fscrypt ioctl,
    /// never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `b2c.minio="ALIAS,URL,ACCESS_KEY,SECRET_KEY"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinioAlias {
    pub alias: String,
    /// `http://` or `https://`, host, optional port and path.
    pub url: String,
    pub access_key: Secret,
    pub secret_key: Secret,
}

/// `ALIAS/BUCKET[/PREFIX]`: where a volume is mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub alias: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the whole bucket.
    pub prefix: String,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.alias, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl Remote {
    pub fn parse(value: &str) -> Result<Remote, String> {
        let mut parts = value.splitn(3, '/');
        let alias = parts.next().unwrap_or_default();
        let bucket = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_matches('/');
        if alias.is_empty() || bucket.is_empty() {
            return Err(format!(
                "{value:?} is not ALIAS/BUCKET[/PREFIX] (ALIAS from a b2c.minio)"
            ));
        }
        if !valid_bucket(bucket) {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '.' or '-')"
            ));
        }
        if prefix.split('/').any(|c| c == "." || c == "..") {
            return Err(format!(
                "{value:?}: '.' and '..' are not allowed in a prefix"
            ));
        }
        Ok(Remote {
            alias: alias.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// When a volume is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncEvent {
    /// Before the services and the first container.
    PipelineStart,
    /// Before each `b2c.run` and post container.
    ContainerStart,
    /// After each `b2c.run` and post container.
    ContainerEnd,
    /// After the last container and the services stopped.
    PipelineEnd,
}

impl SyncEvent {
    pub fn name(self) -> &'static str {
        match self {
            SyncEvent::PipelineStart => "pipeline_start",
            SyncEvent::ContainerStart => "container_start",
            SyncEvent::ContainerEnd => "container_end",
            SyncEvent::PipelineEnd => "pipeline_end",
        }
    }
}

impl fmt::Display for SyncEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `expiration=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiration {
    /// Kept on the cache across boots.
    #[default]
    Never,
    /// Deleted after the final push (never when that push failed).
    PipelineEnd,
}

/// The 64 bytes of an fscrypt v2 master key (`fscrypt_key=BASE64`).
#[derive(Clone, PartialEq, Eq)]
pub struct FscryptKey(Box<[u8; 64]>);

impl FscryptKey {
    pub fn expose(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for FscryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FscryptKey(***)")
    }
}

/// `encrypt_key=`: an SSE-C key (`mc mirror --encrypt-key`), 32 bytes,
/// written raw or in base64, optionally as `ALIAS/BUCKET[/PREFIX]=KEY`
/// (mc's own form).
#[derive(Clone, PartialEq, Eq)]
pub struct SseKey(Box<[u8; 32]>);

impl SseKey {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SseKey(***)")
    }
}

/// One `b2c.volume` as written: [`crate::plan::derive`] checks its aliases
/// and filesystem and resolves its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    pub name: String,
    pub pull_from: Option<Remote>,
    pub push_to: Option<Remote>,
    pub pull_on: Vec<SyncEvent>,
    pub push_on: Vec<SyncEvent>,
    /// `push_on=changes`: pushed as files change, then at pipeline end.
    pub push_on_changes: bool,
    /// Replace what differs at the destination (`mc mirror --overwrite`).
    pub overwrite: bool,
    /// Delete at the destination what the source lacks (`--remove`).
    pub remove: bool,
    /// Shell patterns relative to the volume root (`--exclude`).
    pub exclude: Vec<String>,
    /// Mode, owner and mtime kept as object metadata (`-a`).
    pub preserve: bool,
    pub encrypt_key: Option<SseKey>,
    pub expiration: Expiration,
    pub fscrypt_key: Option<FscryptKey>,
    pub fscrypt_reset_key: bool,
    /// The `b2c.filesystem` mounted on the volume's directory.
    pub filesystem: Option<String>,
}

impl VolumeOptions {
    fn new(name: &str) -> VolumeOptions {
        VolumeOptions {
            name: name.into(),
            pull_from: None,
            push_to: None,
            pull_on: Vec::new(),
            push_on: Vec::new(),
            push_on_changes: false,
            overwrite: false,
            remove: false,
            exclude: Vec::new(),
            preserve: false,
            encrypt_key: None,
            expiration: Expiration::Never,
            fscrypt_key: None,
            fscrypt_reset_key: false,
            filesystem: None,
        }
    }
}

/// Podman's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `b2c.minio`. Errors never hold the keys.
pub fn parse_minio(value: &str) -> Result<MinioAlias, String> {
    let fields: Vec<&str> = value.split(',').collect();
    let [alias, url, access, secret] = fields[..] else {
        return Err(format!(
            "expected ALIAS,URL,ACCESS_KEY,SECRET_KEY (4 fields, found {})",
            fields.len()
        ));
    };
    if alias.is_empty() || alias.contains('/') {
        return Err("the alias must be a name without '/'".into());
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "alias {alias}: the URL must start with http:// or https://"
        ));
    }
    if url.contains('@') {
        return Err(format!(
            "alias {alias}: the URL must not hold credentials (they are the 3rd and 4th fields)"
        ));
    }
    Ok(MinioAlias {
        alias: alias.into(),
        url: url.trim_end_matches('/').into(),
        access_key: Secret::new(access),
        secret_key: Secret::new(secret),
    })
}

/// `b2c.volume`: the options and the warnings (unknown parameters and
/// events, as boot2container warns). Errors never hold the keys.
pub fn parse_volume(value: &str) -> Result<(VolumeOptions, Vec<String>), String> {
    let mut parts = value.split(',');
    let name = parts.next().unwrap_or_default();
    if !valid_volume_name(name) {
        return Err(format!(
            "{:?} is not a volume name (a letter or digit, then letters, digits, '_', '.' or '-')",
            name
        ));
    }
    let mut v = VolumeOptions::new(name);
    let mut warnings = Vec::new();
    let mut pull_on = None;
    let mut push_on = None;
    for part in parts.filter(|p| !p.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        match (key, val) {
            ("mirror", Some(r)) => {
                let remote = Remote::parse(r)?;
                v.pull_from = Some(remote.clone());
                v.push_to = Some(remote);
            }
            ("pull_from", Some(r)) => v.pull_from = Some(Remote::parse(r)?),
            ("push_to", Some(r)) => v.push_to = Some(Remote::parse(r)?),
            ("pull_on", Some(evs)) => pull_on = Some(evs),
            ("push_on", Some(evs)) => push_on = Some(evs),
            ("overwrite", None) => v.overwrite = true,
            ("remove", None) => v.remove = true,
            ("preserve", None) => v.preserve = true,
            ("fscrypt_reset_key", None) => v.fscrypt_reset_key = true,
            ("exclude", Some(p)) if !p.is_empty() => v.exclude.push(p.into()),
            ("expiration", Some("never")) => v.expiration = Expiration::Never,
            ("expiration", Some("pipeline_end")) => v.expiration = Expiration::PipelineEnd,
            ("expiration", Some(other)) => {
                return Err(format!(
                    "volume {name}: expiration={other:?}: expected never or pipeline_end"
                ))
            }
            ("encrypt_key", Some(k)) => v.encrypt_key = Some(parse_sse_key(name, k)?),
            ("fscrypt_key", Some(k)) => {
                let bytes = base64_decode(k)
                    .ok_or_else(|| format!("volume {name}: fscrypt_key is not valid base64"))?;
                let key: Box<[u8; 64]> =
                    bytes
                        .into_boxed_slice()
                        .try_into()
                        .map_err(|b: Box<[u8]>| {
                            format!(
                                "volume {name}: fscrypt_key must be the base64 of 64 bytes, not {}",
                                b.len()
                            )
                        })?;
                v.fscrypt_key = Some(FscryptKey(key));
            }
            ("filesystem", Some(f)) if !f.is_empty() => v.filesystem = Some(f.into()),
            _ => warnings.push(format!(
                "b2c.volume={name}: unknown parameter {:?} is ignored",
                // The value of an unknown parameter might be a key.
                key
            )),
        }
    }
    if let Some(evs) = pull_on {
        let (events, changes) = parse_events(name, "pull_on", evs, &mut warnings);
        if changes {
            warnings.push(format!(
                "b2c.volume={name}: pull_on=changes is not supported (only pushes follow changes); ignored"
            ));
        }
        v.pull_on = events;
    }
    if let Some(evs) = push_on {
        let (events, changes) = parse_events(name, "push_on", evs, &mut warnings);
        if changes && !events.is_empty() {
            warnings.push(format!(
                "b2c.volume={name}: with push_on=changes, the other push events are ignored \
                 (changes are pushed as they happen, and once more at pipeline_end)"
            ));
        }
        v.push_on_changes = changes;
        v.push_on = if changes { Vec::new() } else { events };
    }
    Ok((v, warnings))
}

fn parse_events(
    name: &str,
    key: &str,
    value: &str,
    warnings: &mut Vec<String>,
) -> (Vec<SyncEvent>, bool) {
    let mut events = Vec::new();
    let mut changes = false;
    for ev in value.split('|').filter(|e| !e.is_empty()) {
        let event = match ev {
            "pipeline_start" => SyncEvent::PipelineStart,
            "container_start" => SyncEvent::ContainerStart,
            "container_end" => SyncEvent::ContainerEnd,
            "pipeline_end" => SyncEvent::PipelineEnd,
            "changes" => {
                changes = true;
                continue;
            }
            other => {
                warnings.push(format!(
                    "b2c.volume={name}: {key}: unknown event {other:?} is ignored"
                ));
                continue;
            }
        };
        if !events.contains(&event) {
            events.push(event);
        }
    }
    (events, changes)
}

fn parse_sse_key(name: &str, value: &str) -> Result<SseKey, String> {
    let decode = |key: &str| -> Option<Box<[u8; 32]>> {
        let bytes = if key.len() == 32 {
            key.as_bytes().to_vec()
        } else {
            base64_decode(key)?
        };
        bytes.into_boxed_slice().try_into().ok()
    };
    // The key alone, or mc's own form ALIAS/BUCKET[/PREFIX]=KEY (base64
    // may hold '/' and '=' too: the whole value is tried first).
    let key = decode(value).or_else(|| {
        let (target, key) = value.split_once('=')?;
        target.contains('/').then(|| decode(key))?
    });
    key.map(SseKey).ok_or_else(|| {
        format!("volume {name}: encrypt_key must be 32 characters, or the base64 of 32 bytes")
    })
}

/// Standard base64 with or without padding.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A lone 6-bit tail is not valid base64.
    (bits < 6).then_some(out)
}

const HIDDEN: &str = "***";

/// The kernel command line as it may be shown: the keys of `b2c.minio` and
/// the `encrypt_key=` / `fscrypt_key=` of `b2c.volume` replaced by `***`,
/// everything else (spacing, quotes) as it was.
pub fn redact_cmdline(cmdline: &str) -> String {
    let mut out = String::with_capacity(cmdline.len());
    let mut rest = cmdline;
    while !rest.is_empty() {
        // Whitespace between words is copied as is.
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..word_start]);
        rest = &rest[word_start..];
        if rest.is_empty() {
            break;
        }
        // A word runs to whitespace outside double quotes.
        let mut quoted = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&redact_word(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

fn redact_word(word: &str) -> String {
    let Some((key, value)) = word.split_once('=') else {
        return word.to_string();
    };
    // Quotes may be anywhere in the word; they do not change what it means.
    let key_plain = key.replace('"', "");
    let quoted = value.starts_with('"');
    let inner = value.trim_matches('"');
    let redacted = match key_plain.as_str() {
        "b2c.minio" => {
            let fields: Vec<&str> = inner.splitn(4, ',').collect();
            match fields[..] {
                [alias, url, _, _] => format!("{alias},{url},{HIDDEN},{HIDDEN}"),
                // Not the 4 fields: it may still hold keys; show none of it
                // but the alias.
                [alias, ..] => format!("{alias},{HIDDEN}"),
                [] => return word.to_string(),
            }
        }
        "b2c.volume" => inner
            .split(',')
            .map(|p| match p.split_once('=') {
                Some((k @ ("encrypt_key" | "fscrypt_key"), _)) => format!("{k}={HIDDEN}"),
                _ => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return word.to_string(),
    };
    if quoted {
        format!("{key}=\"{redacted}\"")
    } else {
        format!("{key}={redacted}")
    }
}

/// The value of an option as an error may show it: [`redact_cmdline`]'s
/// rule applied to one option.
pub fn redact_value(key: &str, value: &str) -> String {
    let word = redact_word(&format!("{key}={value}"));
    word[key.len() + 1..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY64: &str =
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

    #[test]
    fn minio_aliases_keep_their_keys_secret() {
        let m = parse_minio("gateway,http://10.42.0.1:9000/,job-4242-dut,Xk3pQ9sLr2Tz").unwrap();
        assert_eq!(m.alias, "gateway");
        assert_eq!(m.url, "http://10.42.0.1:9000");
        assert_eq!(m.access_key.expose(), "job-4242-dut");
        assert_eq!(m.secret_key.expose(), "Xk3pQ9sLr2Tz");
        let shown = format!("{m:?} {} {}", m.access_key, m.secret_key);
        assert!(
            !shown.contains("Xk3pQ9sLr2Tz") && !shown.contains("job-4242-dut"),
            "{shown}"
        );
        for bad in [
            "gateway,http://h:9000,key",
            "gateway,ftp://h,a,b",
            ",http://h,a,b",
            "a/b,http://h,a,b",
            "gw,http://u:p@h,a,b",
            "gw,http://h,a,b,c",
        ] {
            let e = parse_minio(bad).unwrap_err();
            assert!(!e.contains("Xk3p"), "{e}");
        }
    }

    #[test]
    fn the_real_line_shape() {
        let (v, w) = parse_volume(
            "job-4242-results,mirror=gateway/job-4242,pull_on=pipeline_start,push_on=changes,\
             overwrite,exclude=install/*,exclude=*.shader_cache,remove,expiration=pipeline_end,preserve",
        )
        .unwrap();
        assert_eq!(v.name, "job-4242-results");
        let remote = Remote {
            alias: "gateway".into(),
            bucket: "job-4242".into(),
            prefix: String::new(),
        };
        assert_eq!(v.pull_from.as_ref(), Some(&remote));
        assert_eq!(v.push_to.as_ref(), Some(&remote));
        assert_eq!(v.pull_on, [SyncEvent::PipelineStart]);
        assert!(v.push_on.is_empty() && v.push_on_changes);
        assert!(v.overwrite && v.remove && v.preserve);
        assert_eq!(v.exclude, ["install/*", "*.shader_cache"]);
        assert_eq!(v.expiration, Expiration::PipelineEnd);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn every_parameter() {
        let (v, w) = parse_volume(&format!(
            "traces,pull_from=gw/traces/mesa/,push_to=gw/out/a/b,pull_on=pipeline_start|container_start,\
             push_on=container_end|pipeline_end|container_end,fscrypt_key={KEY64},fscrypt_reset_key,\
             filesystem=nfs,encrypt_key=gw/out=0123456789abcdef0123456789abcdef,expiration=never"
        ))
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(v.pull_from.unwrap().to_string(), "gw/traces/mesa");
        assert_eq!(v.push_to.unwrap().prefix, "a/b");
        assert_eq!(
            v.pull_on,
            [SyncEvent::PipelineStart, SyncEvent::ContainerStart]
        );
        assert_eq!(v.push_on, [SyncEvent::ContainerEnd, SyncEvent::PipelineEnd]);
        let key = v.fscrypt_key.unwrap();
        assert_eq!(key.expose()[..4], [0, 1, 2, 3]);
        assert_eq!(key.expose()[63], 63);
        assert!(v.fscrypt_reset_key);
        assert_eq!(v.filesystem.as_deref(), Some("nfs"));
        assert_eq!(
            v.encrypt_key.unwrap().expose(),
            b"0123456789abcdef0123456789abcdef"
        );
        assert_eq!(v.expiration, Expiration::Never);
        // A plain declaration.
        let (v, w) = parse_volume("cache").unwrap();
        assert_eq!(v, VolumeOptions::new("cache"));
        assert!(w.is_empty());
    }

    #[test]
    fn lenient_where_boot2container_was_and_strict_where_it_failed() {
        let (v, w) =
            parse_volume("v,frob=1,push_on=changes|pipeline_end|later,pull_on=changes").unwrap();
        assert!(v.push_on_changes && v.push_on.is_empty() && v.pull_on.is_empty());
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("\"frob\""), "{w:?}");
        for (bad, why) in [
            ("", "not a volume name"),
            ("-v", "not a volume name"),
            ("v,expiration=1d", "expiration"),
            ("v,mirror=gw", "ALIAS/BUCKET"),
            ("v,mirror=gw/UPPER", "bucket name"),
            ("v,mirror=gw/bkt/../x", "'..'"),
            ("v,fscrypt_key=AAAA", "64 bytes, not 3"),
            ("v,fscrypt_key=!!", "base64"),
            ("v,encrypt_key=short", "32"),
        ] {
            let e = parse_volume(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // The key never shows in an error about it.
        let e = parse_volume("v,fscrypt_key=c2VjcmV0LWtleQ").unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn base64_both_alphabets_with_or_without_padding() {
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a b").is_none());
        assert_eq!(base64_decode(KEY64).unwrap(), (0..64).collect::<Vec<u8>>());
    }

    #[test]
    fn the_command_line_is_shown_without_keys() {
        let line = "console=ttyS0  b2c.minio=\"gateway,http://10.42.0.1:9000,job-4242-dut,Xk3pQ9sLr2Tz\" \
                    b2c.volume=\"r,mirror=gateway/bkt,fscrypt_key=c2VjcmV0,encrypt_key=gw/bkt=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,overwrite\" \
                    b2c.minio=other,https://s3.example,AK,SK b2c.minio=\"bad,only\" b2c.run=\"-e X=Xk3p img\"\n";
        let shown = redact_cmdline(line);
        assert_eq!(
            shown,
            "console=ttyS0  b2c.minio=\"gateway,http://10.42.0.1:9000,***,***\" \
             b2c.volume=\"r,mirror=gateway/bkt,fscrypt_key=***,encrypt_key=***,overwrite\" \
             b2c.minio=other,https://s3.example,***,*** b2c.minio=\"bad,***\" b2c.run=\"-e X=Xk3p img\"\n"
        );
        assert_eq!(
            redact_value("b2c.minio", "a,http://h,k,s"),
            "a,http://h,***,***"
        );
        assert_eq!(redact_value("b2c.run", "img"), "img");
    }
}
