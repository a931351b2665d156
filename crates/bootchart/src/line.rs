//! One line of a serial log, as the chart reads it: its uptime stamp and
//! its text, b2c's (`[   9.155]: pulling …`) or the kernel's
//! (`[    3.616597] Run /init as init process`). Anything else (a
//! container's output, firmware noise, a line cut in half) has no stamp
//! and is skipped.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line<'a> {
    pub at: f64,
    /// b2c's own line (`]: ` after the stamp), else the kernel's.
    pub b2c: bool,
    pub text: Cow<'a, str>,
}

/// The stamped lines of a log, in order. Every `\r` ends a line as `\n`
/// does: serial captures end lines with `\r\n` (or a lone `\r`), and
/// GitLab's section markers put a `\r` before the header they hide, so
/// what is left is what a terminal would show.
pub(crate) fn lines(log: &str) -> impl Iterator<Item = Line<'_>> {
    log.split(['\n', '\r']).filter_map(line)
}

fn line(raw: &str) -> Option<Line<'_>> {
    match strip_ansi(raw) {
        Cow::Borrowed(s) => stamped(s).map(|(at, b2c, text)| Line {
            at,
            b2c,
            text: Cow::Borrowed(text),
        }),
        Cow::Owned(s) => stamped(&s).map(|(at, b2c, text)| Line {
            at,
            b2c,
            text: Cow::Owned(text.to_string()),
        }),
    }
}

/// The first `[ SECONDS.FRACTION]` of a line: a serial logger or a CI
/// system may put its own prefix (a date) before the stamp.
fn stamped(s: &str) -> Option<(f64, bool, &str)> {
    let mut from = 0;
    while let Some(i) = s[from..].find('[') {
        let open = from + i;
        if let Some(found) = stamp_at(&s[open + 1..]) {
            return Some(found);
        }
        from = open + 1;
    }
    None
}

/// After a `[`: spaces, digits, `.`, digits, `]`, then `: ` (b2c) or a
/// space or the end of the line (the kernel). Looks at a few bytes only,
/// whatever follows: a line of garbage full of `[` costs no more than its
/// length.
fn stamp_at(s: &str) -> Option<(f64, bool, &str)> {
    let bytes = s.as_bytes();
    let start = bytes.iter().take(16).take_while(|b| **b == b' ').count();
    let len = bytes[start..]
        .iter()
        .take(21)
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    let close = start + len;
    if bytes.get(close) != Some(&b']') {
        return None;
    }
    // ASCII up to here: these are character boundaries.
    let stamp = &s[start..close];
    let (secs, frac) = stamp.split_once('.')?;
    let digits = |p: &str, max: usize| !p.is_empty() && p.len() <= max && !p.contains('.');
    // Ten digits of seconds is three centuries of uptime: longer is not
    // a stamp, and could not be a finite number either.
    if !digits(secs, 10) || !digits(frac, 9) {
        return None;
    }
    let at: f64 = stamp.parse().ok()?;
    let rest = &s[close + 1..];
    if let Some(text) = rest.strip_prefix(": ") {
        Some((at, true, text))
    } else if rest.is_empty() || rest.starts_with(' ') {
        Some((at, false, rest.strip_prefix(' ').unwrap_or(rest)))
    } else {
        None
    }
}

/// Drops ANSI escape sequences: GitLab's `ESC[0K`, colours a terminal
/// program or a serial server added.
fn strip_ansi(s: &str) -> Cow<'_, str> {
    if !s.contains('\x1b') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, up to one final byte.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC (a window title, a hyperlink): up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next();
                        break;
                    }
                }
            }
            // Two-character escapes (ESC 7, ESC c…).
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(log: &str) -> Vec<(f64, bool, String)> {
        lines(log)
            .map(|l| (l.at, l.b2c, l.text.into_owned()))
            .collect()
    }

    #[test]
    fn b2c_and_kernel_lines_are_told_apart_and_the_rest_skipped() {
        let log = "[    0.000000] Linux version 6.1.0\n\
                   [    0.977620] pci 0000:00:01.1: BAR 0 [io  0x01f0-0x01f7]: legacy IDE quirk\n\
                   [    4.920]: kernel modules: loaded virtio_net\n\
                   GZ-TREE-42:/data\n\
                   [ 12.5]: short stamp\n\
                   [abc]: not a stamp\n\
                   [    1.0]x: neither\n\
                   [   99999999999.000]: too long\n";
        assert_eq!(
            all(log),
            [
                (0.0, false, "Linux version 6.1.0".into()),
                (
                    0.97762,
                    false,
                    "pci 0000:00:01.1: BAR 0 [io  0x01f0-0x01f7]: legacy IDE quirk".into()
                ),
                (4.92, true, "kernel modules: loaded virtio_net".into()),
                (12.5, true, "short stamp".into()),
            ]
        );
    }

    #[test]
    fn section_markers_crs_escapes_and_prefixes_are_looked_through() {
        let log = "\x1b[0Ksection_start:1796649066:b2c_network[collapsed=true]\r\x1b[0K[    4.934]: setting up the network\r\n\
                   \x1b[0Ksection_end:1796649067:b2c_network\r\x1b[0K\r\n\
                   \x1b[32m[    5.061]: \x1b[0mnetwork: eth0\x1b]0;title\x07\r\n\
                   2026-12-07T13:10:00Z 01O [    5.062]: setting the clock from 10.99.0.1\r\
                   [    5.072]: clock set from 10.99.0.1";
        assert_eq!(
            all(log),
            [
                (4.934, true, "setting up the network".into()),
                (5.061, true, "network: eth0".into()),
                (5.062, true, "setting the clock from 10.99.0.1".into()),
                (5.072, true, "clock set from 10.99.0.1".into()),
            ]
        );
    }

    #[test]
    fn a_line_of_brackets_is_read_in_linear_time() {
        let garbage = format!("{}{}", "[ 1".repeat(200_000), "[ 2.000]: found");
        assert_eq!(all(&garbage), [(2.0, true, "found".into())]);
    }

    #[test]
    fn a_cut_escape_sequence_ends_the_line_quietly() {
        assert_eq!(all("[ 1.000]: a\x1b[12"), [(1.0, true, "a".into())]);
        assert_eq!(
            all("[ 1.000]: a\x1b]0;never ends"),
            [(1.0, true, "a".into())]
        );
        assert_eq!(all("\x1b"), []);
    }
}
