//! `b2c plot CONSOLE.LOG > boot.svg`: where the time of a boot went, as
//! `systemd-analyze plot` shows it for systemd, from the uptime-stamped
//! lines of any b2c serial log (`[   9.155]: pulling …`).
//!
//! Reading the log ([`timeline`]) is pure and separate from drawing it
//! ([`svg`]).

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;

use crate::Failure;

/// `b2c plot`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The serial console log of a boot (`-` for stdin)
    #[arg(value_name = "CONSOLE.LOG")]
    log: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mut text = Vec::new();
    let read = if args.log.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut text)
    } else {
        std::fs::File::open(&args.log).and_then(|mut f| f.read_to_end(&mut text))
    };
    read.map_err(|e| Failure(format!("{}: {e}", args.log.display())))?;
    let timeline = timeline(&String::from_utf8_lossy(&text));
    if timeline.spans.is_empty() {
        return Err(Failure(format!(
            "{}: no b2c console line (`[   1.234]: …`) in it",
            args.log.display()
        )));
    }
    print!("{}", svg(&timeline));
    Ok(())
}

/// What a span of the boot was doing, which decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    Setup,
    Pull,
    Service,
    Container,
    End,
}

/// One bar of the chart, in seconds since the kernel started.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub label: String,
    pub kind: Kind,
    pub start: f64,
    pub end: f64,
}

/// A boot read from its console log.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timeline {
    pub spans: Vec<Span>,
    /// The time of the last line.
    pub end: f64,
    /// From `Execution is over, pipeline status: N`.
    pub status: Option<i32>,
}

/// A b2c console line: its uptime stamp and its text. Kernel lines
/// (`[    0.123456] …`) have no colon after the bracket.
fn b2c_line(line: &str) -> Option<(f64, &str)> {
    // A serial log may hold `\r` and the container's own output between.
    let line = line.trim_end_matches('\r');
    let start = line.find('[')?;
    let rest = &line[start + 1..];
    let close = rest.find("]: ")?;
    let time = rest[..close].trim().parse().ok()?;
    Some((time, &rest[close + 3..]))
}

/// Reads the phases of a boot from its console lines: the setup phases in
/// order (each from the end of the one before), each pull, service and
/// container by its own start and end lines, and the end.
pub fn timeline(log: &str) -> Timeline {
    let mut t = Timeline::default();
    let mut open: Vec<(String, Span)> = Vec::new();
    // The end of the last setup phase: where the next one starts.
    let mut last = None::<f64>;
    let setup = |t: &mut Timeline, last: &mut Option<f64>, label: &str, at: f64| {
        let start = last.unwrap_or(at);
        t.spans.push(Span {
            label: label.to_string(),
            kind: Kind::Setup,
            start,
            end: at,
        });
        *last = Some(at);
    };
    for (at, text) in log.lines().filter_map(b2c_line) {
        t.end = at;
        if last.is_none() {
            // The first line of /init: before it, the kernel.
            t.spans.push(Span {
                label: "kernel".into(),
                kind: Kind::Kernel,
                start: 0.0,
                end: at,
            });
            last = Some(at);
        }
        let close = |open: &mut Vec<(String, Span)>, t: &mut Timeline, key: &str| {
            if let Some(i) = open.iter().position(|(k, _)| k == key) {
                let (_, mut span) = open.remove(i);
                span.end = at;
                t.spans.push(span);
            }
        };
        let begin = |open: &mut Vec<(String, Span)>, key: &str, label: String, kind| {
            open.push((
                key.to_string(),
                Span {
                    label,
                    kind,
                    start: at,
                    end: at,
                },
            ))
        };
        if text.starts_with("kernel modules: loaded") {
            setup(&mut t, &mut last, "kernel modules", at);
        } else if text.starts_with("network: ") {
            setup(&mut t, &mut last, "network", at);
        } else if text.starts_with("clock set from")
            || text.starts_with("WARNING: cannot get the time")
        {
            setup(&mut t, &mut last, "clock", at);
        } else if text.starts_with("options from b2c.extra_args_url") {
            setup(&mut t, &mut last, "extra args", at);
        } else if text.starts_with("cache: ") && text.contains(" mounted on ")
            || text.contains("running without a cache")
        {
            setup(&mut t, &mut last, "cache", at);
        } else if let Some(rest) = text.strip_prefix("pulling ") {
            if let Some((image, _)) = rest.split_once(" from ") {
                begin(&mut open, image, format!("pull {image}"), Kind::Pull);
            }
        } else if let Some(rest) = text.strip_prefix("pulled ") {
            close(&mut open, &mut t, rest.split(' ').next().unwrap_or(""));
        } else if text.contains(" is up to date: ") {
            close(&mut open, &mut t, text.split(' ').next().unwrap_or(""));
        } else if let Some(rest) = text.strip_prefix("starting service ") {
            if let Some((id, image)) = rest.split_once(": ") {
                begin(&mut open, id, format!("{id} {image}"), Kind::Service);
            }
        } else if let Some(rest) = text.strip_prefix("stopped service ") {
            close(&mut open, &mut t, rest.split(' ').next().unwrap_or(""));
        } else if let Some(rest) = text.strip_prefix("running ") {
            if let Some((id, image)) = rest.split_once(": ") {
                begin(&mut open, id, format!("{id} {image}"), Kind::Container);
            }
        } else if let Some((id, _)) = text.split_once(" exited with status ") {
            close(&mut open, &mut t, id);
        } else if let Some(n) = text.strip_prefix("Execution is over, pipeline status: ") {
            t.status = n.trim().parse().ok();
            begin(&mut open, "\0end", "end".into(), Kind::End);
        }
    }
    // Whatever never ended (a service still running, the power-off) ends
    // with the log.
    for (_, mut span) in open {
        span.end = t.end;
        t.spans.push(span);
    }
    t.spans
        .sort_by(|a, b| a.start.total_cmp(&b.start).then(a.end.total_cmp(&b.end)));
    t
}

const WIDTH: f64 = 1100.0;
const LABEL: f64 = 330.0;
const ROW: f64 = 22.0;
const TOP: f64 = 48.0;

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Kernel => "#9aa5b1",
        Kind::Setup => "#4c8bf5",
        Kind::Pull => "#f5a623",
        Kind::Service => "#b18cf0",
        Kind::Container => "#3cb371",
        Kind::End => "#e05d5d",
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A tick step that gives at most about 12 ticks.
fn tick_step(total: f64) -> f64 {
    [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ]
    .into_iter()
    .find(|step| total / step <= 12.0)
    .unwrap_or(1800.0)
}

/// The chart: one row per span, a time axis, each bar labelled with its
/// duration.
pub fn svg(t: &Timeline) -> String {
    let total = t.end.max(0.001);
    let scale = (WIDTH - LABEL - 70.0) / total;
    let x = |time: f64| LABEL + time * scale;
    let height = TOP + ROW * t.spans.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15">b2c boot: {total:.2} s{}</text>"#,
        t.status
            .map(|s| format!(", pipeline status {s}"))
            .unwrap_or_default()
    );
    let step = tick_step(total);
    let mut tick = 0.0;
    while tick <= total + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#555">{tick} s</text>"##,
            x(tick),
            height - 25.0,
            TOP - 6.0,
        );
        tick += step;
    }
    for (i, span) in t.spans.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let width = ((span.end - span.start) * scale).max(1.0);
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{} {:.3}–{:.3} s</title></rect><text x="{:.1}" y="{:.1}" fill="#333">{:.2} s</text>"##,
            LABEL - 8.0,
            y + 15.0,
            escape(&shorten(&span.label, 48)),
            x(span.start),
            y + 3.0,
            ROW - 6.0,
            colour(span.kind),
            escape(&span.label),
            span.start,
            span.end,
            x(span.start) + width + 4.0,
            y + 15.0,
            span.end - span.start,
        );
    }
    out.push_str("</svg>\n");
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let kept: String = s.chars().take(max - 1).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real console log of a QEMU boot (qemu-tests' `hello`), with the
    /// kernel's lines and the container's output between b2c's.
    const HELLO: &str = "\
[    0.000000] Linux version 6.1.0-57-amd64
[    6.559]: b2c 0.1.0 (x86_64), kernel Linux 6.1.0-57-amd64
[    6.593]: kernel command line: console=ttyS0 b2c.run=\"…\"
[    8.438]: kernel modules: loaded virtio_pci, virtio_net, overlay
[    8.448]: block devices: none
[    8.607]: DHCP: discovering on eth0
[    8.990]: network: eth0: 10.99.0.41/24 by DHCP from 10.99.0.1
[    9.014]: clock set from 10.99.0.1
[    9.155]: pulling 10.99.0.1:5000/b2c/busybox:latest from 10.99.0.1:5000
[   10.073]: pulled 10.99.0.1:5000/b2c/busybox:latest (sha256:37f240f3c694) from 10.99.0.1:5000: 1 layers
[   10.100]: starting service service-0: svc:1
[   10.129]: running run-0: 10.99.0.1:5000/b2c/busybox:latest
HELLO-42
[   11.563]: run-0 exited with status 3\r
[   11.580]: stopped service service-0 (status 143)
[   11.610]: Execution is over, pipeline status: 3
[   11.622]: It's now safe to turn off your computer
";

    fn span<'a>(t: &'a Timeline, label: &str) -> &'a Span {
        t.spans
            .iter()
            .find(|s| s.label.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {:#?}", t.spans))
    }

    #[test]
    fn phases_pulls_and_containers_are_read_from_the_log() {
        let t = timeline(HELLO);
        assert_eq!(t.end, 11.622);
        assert_eq!(t.status, Some(3));
        let k = span(&t, "kernel");
        assert_eq!((k.start, k.end), (0.0, 6.559));
        let m = span(&t, "kernel modules");
        assert_eq!((m.start, m.end), (6.559, 8.438));
        let n = span(&t, "network");
        assert_eq!((n.start, n.end), (8.438, 8.990));
        let c = span(&t, "clock");
        assert_eq!((c.start, c.end), (8.990, 9.014));
        let p = span(&t, "pull 10.99.0.1:5000/b2c/busybox:latest");
        assert_eq!((p.start, p.end, p.kind), (9.155, 10.073, Kind::Pull));
        let r = span(&t, "run-0");
        assert_eq!((r.start, r.end, r.kind), (10.129, 11.563, Kind::Container));
        let s = span(&t, "service-0 svc:1");
        assert_eq!((s.start, s.end), (10.100, 11.580));
        let e = span(&t, "end");
        assert_eq!((e.start, e.end), (11.610, 11.622));
        let starts: Vec<f64> = t.spans.iter().map(|s| s.start).collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    }

    #[test]
    fn the_svg_draws_every_span_and_escapes_labels() {
        let t = timeline(&HELLO.replace("svc:1", "svc<&>\"1"));
        let svg = svg(&t);
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), t.spans.len());
        assert!(svg.contains("svc&lt;&amp;&gt;&quot;1"), "{svg}");
        assert!(!svg.contains("svc<&"), "{svg}");
        assert!(svg.contains("pipeline status 3"));
        assert!(svg.contains(">1.43 s<"), "run-0 lasted 1.434 s\n{svg}");
    }

    #[test]
    fn a_log_without_b2c_lines_has_no_spans_and_unended_spans_end_with_it() {
        assert!(timeline("[    0.000000] Linux version\nhello\n")
            .spans
            .is_empty());
        let t = timeline("[ 1.0]: b2c\n[ 2.0]: running run-0: img\n[ 5.5]: power cut?\n");
        let r = span(&t, "run-0");
        assert_eq!((r.start, r.end), (2.0, 5.5));
        assert_eq!(tick_step(11.6), 1.0);
        assert_eq!(tick_step(300.0), 30.0);
    }
}
