//! What a sync does, as `mc mirror` decides it: a pure comparison of two
//! listings (the source's and the destination's files, by path relative
//! to the volume root or to the bucket prefix).
//!
//! `mc mirror`'s rules (MinIO client, `cmd/mirror-url.go` and
//! `cmd/difference.go`):
//!
//! - a file only at the source is copied;
//! - a file at both ends differs when the sizes differ, or when the
//!   source's modification time is later than the destination's; it is
//!   then replaced with `overwrite`, and otherwise left alone (mc reports
//!   "overwrite not allowed" and goes on);
//! - a file only at the destination is deleted with `remove`;
//! - `exclude` patterns are matched against the relative path of both
//!   ends, MinIO's way: `*` matches any run of characters, `/` included,
//!   and `?` one character; an excluded file is neither copied nor
//!   deleted;
//! - `--watch` (our `push_on=changes`) never deletes.

use std::time::SystemTime;

/// A file of one end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, no leading `/`.
    pub path: String,
    pub size: u64,
    /// The file's mtime, or the object's `Last-Modified`.
    pub mtime: SystemTime,
}

/// The `mc mirror` flags a volume gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorFlags<'a> {
    pub overwrite: bool,
    pub remove: bool,
    pub exclude: &'a [String],
}

/// What to do, by path, each list sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorPlan {
    /// Only at the source: copied.
    pub copy: Vec<Entry>,
    /// Differ, and `overwrite`: copied over the destination's.
    pub overwrite: Vec<Entry>,
    /// Differ, without `overwrite`: left as they are.
    pub differ_kept: Vec<String>,
    /// Only at the destination, and `remove`: deleted there.
    pub remove: Vec<String>,
    /// At both ends and the same.
    pub unchanged: usize,
    /// Matched an `exclude` pattern (at either end).
    pub excluded: usize,
}

impl MirrorPlan {
    /// Every file to transfer, copies first.
    pub fn transfers(&self) -> impl Iterator<Item = &Entry> {
        self.copy.iter().chain(&self.overwrite)
    }

    pub fn bytes(&self) -> u64 {
        self.transfers().map(|e| e.size).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.copy.is_empty() && self.overwrite.is_empty() && self.remove.is_empty()
    }
}

/// Whether `source` must replace `target` (`mc`'s "differ"). Times are
/// compared in milliseconds: S3 listings have no finer ones, and a file
/// uploaded within the millisecond it was written must not look newer
/// than its object.
pub fn differs(source: &Entry, target: &Entry) -> bool {
    source.size != target.size || millis(source.mtime) > millis(target.mtime)
}

fn millis(t: SystemTime) -> i128 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

/// Compares `source` and `target` (in any order) as `mc mirror` does.
pub fn plan(source: &[Entry], target: &[Entry], flags: MirrorFlags) -> MirrorPlan {
    let mut src: Vec<&Entry> = source.iter().collect();
    let mut tgt: Vec<&Entry> = target.iter().collect();
    src.sort_by(|a, b| a.path.cmp(&b.path));
    tgt.sort_by(|a, b| a.path.cmp(&b.path));
    src.dedup_by(|a, b| a.path == b.path);
    tgt.dedup_by(|a, b| a.path == b.path);
    let excluded = |e: &Entry| is_excluded(flags.exclude, &e.path);
    let mut plan = MirrorPlan::default();
    let (mut i, mut j) = (0, 0);
    loop {
        let (s, t) = (src.get(i).copied(), tgt.get(j).copied());
        let order = match (s, t) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(s), Some(t)) => s.path.cmp(&t.path),
        };
        match order {
            std::cmp::Ordering::Less => {
                let s = s.expect("a source entry");
                i += 1;
                if excluded(s) {
                    plan.excluded += 1;
                } else {
                    plan.copy.push(s.clone());
                }
            }
            std::cmp::Ordering::Greater => {
                let t = t.expect("a target entry");
                j += 1;
                if excluded(t) {
                    plan.excluded += 1;
                } else if flags.remove {
                    plan.remove.push(t.path.clone());
                }
            }
            std::cmp::Ordering::Equal => {
                let (s, t) = (s.expect("source"), t.expect("target"));
                i += 1;
                j += 1;
                if excluded(s) {
                    plan.excluded += 1;
                } else if !differs(s, t) {
                    plan.unchanged += 1;
                } else if flags.overwrite {
                    plan.overwrite.push(s.clone());
                } else {
                    plan.differ_kept.push(s.path.clone());
                }
            }
        }
    }
    plan
}

/// Whether `path` matches one of `patterns`.
pub fn is_excluded(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| wildcard_match(p, path))
}

/// MinIO's `wildcard.Match`: `*` is any run of characters (`/` included),
/// `?` exactly one; everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point: linear in practice.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) && p[pi] != '*' {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn e(path: &str, size: u64, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            mtime: UNIX_EPOCH + Duration::from_secs(mtime),
        }
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    const NONE: MirrorFlags = MirrorFlags {
        overwrite: false,
        remove: false,
        exclude: &[],
    };

    #[test]
    fn copies_what_the_destination_lacks_and_nothing_else() {
        let src = [e("a", 1, 10), e("dir/b", 2, 10), e("same", 3, 10)];
        let dst = [e("same", 3, 20), e("extra", 4, 10)];
        let p = plan(&src, &dst, NONE);
        assert_eq!(paths(&p.copy), ["a", "dir/b"]);
        assert!(p.overwrite.is_empty() && p.differ_kept.is_empty());
        assert!(p.remove.is_empty(), "no remove without the flag");
        assert_eq!((p.unchanged, p.excluded), (1, 0));
        assert_eq!(p.bytes(), 3);
        assert_eq!(
            paths(&p.transfers().cloned().collect::<Vec<_>>()),
            ["a", "dir/b"]
        );
    }

    #[test]
    fn differ_by_size_or_by_a_newer_source() {
        let dst = e("f", 5, 100);
        // Same size, source older or as old: the same file.
        assert!(!differs(&e("f", 5, 100), &dst));
        assert!(!differs(&e("f", 5, 50), &dst));
        // Same size, source newer: changed since it was copied.
        assert!(differs(&e("f", 5, 101), &dst));
        // Listings have milliseconds: a source newer by less is the same.
        let mut sub_ms = e("f", 5, 100);
        sub_ms.mtime += Duration::from_micros(400);
        assert!(!differs(&sub_ms, &dst));
        sub_ms.mtime += Duration::from_micros(700);
        assert!(differs(&sub_ms, &dst));
        // Any size difference, whatever the times.
        assert!(differs(&e("f", 4, 50), &dst));
        assert!(differs(&e("f", 6, 100), &dst));
    }

    #[test]
    fn overwrite_replaces_what_differs_and_only_that() {
        let src = [
            e("bigger", 9, 10),
            e("newer", 1, 30),
            e("older", 1, 5),
            e("same", 1, 10),
        ];
        let dst = [
            e("bigger", 1, 10),
            e("newer", 1, 20),
            e("older", 1, 10),
            e("same", 1, 10),
        ];
        let kept = plan(&src, &dst, NONE);
        assert!(kept.copy.is_empty() && kept.overwrite.is_empty());
        assert_eq!(kept.differ_kept, ["bigger", "newer"]);
        assert_eq!(kept.unchanged, 2);
        let p = plan(
            &src,
            &dst,
            MirrorFlags {
                overwrite: true,
                ..NONE
            },
        );
        assert_eq!(paths(&p.overwrite), ["bigger", "newer"]);
        assert!(p.differ_kept.is_empty());
        assert_eq!(
            p.overwrite[0].size, 9,
            "the source's entry is the one copied"
        );
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn remove_deletes_what_the_source_no_longer_has() {
        let src = [e("keep", 1, 1)];
        let dst = [e("gone/x", 1, 1), e("keep", 1, 1), e("old", 1, 1)];
        let p = plan(
            &src,
            &dst,
            MirrorFlags {
                remove: true,
                ..NONE
            },
        );
        assert_eq!(p.remove, ["gone/x", "old"]);
        assert_eq!(p.unchanged, 1);
        // An empty source with remove: the destination is emptied.
        let p = plan(
            &[],
            &dst,
            MirrorFlags {
                remove: true,
                ..NONE
            },
        );
        assert_eq!(p.remove.len(), 3);
        // An empty destination: everything is copied.
        assert_eq!(plan(&dst, &[], NONE).copy.len(), 3);
        assert!(plan(&[], &[], NONE).is_empty());
    }

    #[test]
    fn excluded_files_are_neither_copied_nor_overwritten_nor_removed() {
        let exclude = ["install/*".to_string(), "*.shader_cache".to_string()];
        let flags = MirrorFlags {
            overwrite: true,
            remove: true,
            exclude: &exclude,
        };
        let src = [
            e("install/bin/tool", 1, 1),
            e("results.xml", 2, 9),
            e("deep/a.shader_cache", 3, 1),
            e("install-log.txt", 4, 1),
        ];
        let dst = [
            e("results.xml", 1, 1),
            e("install/lib.so", 1, 1),
            e("x.shader_cache", 1, 1),
            e("stale.txt", 1, 1),
        ];
        let p = plan(&src, &dst, flags);
        assert_eq!(paths(&p.copy), ["install-log.txt"]);
        assert_eq!(paths(&p.overwrite), ["results.xml"]);
        assert_eq!(p.remove, ["stale.txt"]);
        assert_eq!(p.excluded, 4);
    }

    #[test]
    fn overwrite_remove_and_exclude_together() {
        let exclude = ["tmp/*".to_string()];
        let flags = MirrorFlags {
            overwrite: true,
            remove: true,
            exclude: &exclude,
        };
        let src = [
            e("new", 1, 1),
            e("changed", 2, 5),
            e("same", 1, 1),
            e("tmp/a", 1, 1),
        ];
        let dst = [
            e("changed", 1, 1),
            e("same", 1, 1),
            e("removed", 1, 1),
            e("tmp/b", 1, 1),
        ];
        let p = plan(&src, &dst, flags);
        assert_eq!(paths(&p.copy), ["new"]);
        assert_eq!(paths(&p.overwrite), ["changed"]);
        assert_eq!(p.remove, ["removed"]);
        assert_eq!((p.unchanged, p.excluded), (1, 2));
    }

    #[test]
    fn order_of_the_listings_does_not_matter_and_duplicates_count_once() {
        let src = [e("b", 1, 1), e("a", 1, 1), e("a", 1, 1), e("c/d", 1, 1)];
        let dst = [e("c/d", 1, 1), e("z", 1, 1)];
        let p = plan(
            &src,
            &dst,
            MirrorFlags {
                remove: true,
                ..NONE
            },
        );
        assert_eq!(paths(&p.copy), ["a", "b"]);
        assert_eq!(p.remove, ["z"]);
        assert_eq!(p.unchanged, 1);
        // Paths compare bytewise: "a/b" sorts between "a" and "a0", and
        // nothing is mistaken for a sibling.
        let src = [e("a", 1, 1), e("a/b", 1, 1), e("a0", 1, 1)];
        let p = plan(&src, &src, NONE);
        assert_eq!(p.unchanged, 3);
    }

    #[test]
    fn minio_wildcards() {
        for (pattern, text, want) in [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("install/*", "install/a", true),
            ("install/*", "install/a/b", true),
            ("install/*", "install", false),
            ("install/*", "x/install/a", false),
            ("*.shader_cache", "a.shader_cache", true),
            ("*.shader_cache", "deep/dir/a.shader_cache", true),
            ("*.shader_cache", "a.shader_cache.old", false),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("a?c", "a/c", true),
            ("**", "x", true),
            ("a*b*c", "a-b-x-c", true),
            ("a*b*c", "a-c", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "a", false),
            ("*é", "café", true),
        ] {
            assert_eq!(wildcard_match(pattern, text), want, "{pattern:?} {text:?}");
        }
    }
}
