//! The chart, hand-written SVG: one row per span (as `systemd-analyze
//! plot` draws one per unit), so that spans running at once (the images
//! of a pull, their layers, a service beside the containers) never hide
//! each other; a time axis with gridlines; each bar followed by its
//! duration and what the log said about it.
//!
//! Every text that comes from the log (image names, commands, interface
//! names) is escaped: the log is untrusted input, and a container can
//! print anything on the console.

use std::fmt::Write as _;

use crate::timeline::{BootTimeline, Kind, Span, State};

const ROW: f64 = 20.0;
const BAR: f64 = 14.0;
/// Where the first row starts: two lines of title, the axis labels.
const TOP: f64 = 70.0;
const CHART: f64 = 900.0;
const INDENT: f64 = 14.0;
/// A rough width of a character of the 12 px sans-serif font, to place
/// texts without measuring them.
const CHAR: f64 = 6.6;
const MAX_LABEL: usize = 56;
const MAX_DETAIL: usize = 80;

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Kernel => "#9aa5b1",
        Kind::Setup => "#4c8bf5",
        Kind::Pull => "#e08e0b",
        Kind::Image => "#f5b342",
        Kind::Layer => "#f7d88c",
        Kind::Service => "#a67be0",
        Kind::Container => "#34a853",
        Kind::Shutdown => "#db4437",
    }
}

/// `s` fit for XML text or an attribute value: markup characters as
/// entities, and characters XML 1.0 does not allow at all (control
/// characters, U+FFFE, U+FFFF) as U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`, the cut marked with `…`.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let kept: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A duration as people read it: milliseconds matter below a second.
pub fn seconds(d: f64) -> String {
    if d < 1.0 {
        format!("{d:.3} s")
    } else if d < 100.0 {
        format!("{d:.2} s")
    } else {
        format!("{d:.0} s")
    }
}

/// The gridline step: the smallest that gives at most 12 intervals, and
/// how many decimals its labels need.
fn step(range: f64) -> (f64, usize) {
    const STEPS: [(f64, usize); 16] = [
        (0.1, 1),
        (0.2, 1),
        (0.5, 1),
        (1.0, 0),
        (2.0, 0),
        (5.0, 0),
        (10.0, 0),
        (15.0, 0),
        (30.0, 0),
        (60.0, 0),
        (120.0, 0),
        (300.0, 0),
        (600.0, 0),
        (1200.0, 0),
        (1800.0, 0),
        (3600.0, 0),
    ];
    STEPS
        .into_iter()
        .find(|(s, _)| range / s <= 12.0)
        .unwrap_or_else(|| ((range / 12.0 / 3600.0).ceil() * 3600.0, 0))
}

/// Finer lines between the labelled ones: fifths, or quarters of a step
/// that starts with 2 (0.2 s → 0.05 s).
fn minor(step: f64) -> f64 {
    let lead = step / 10f64.powf(step.log10().floor());
    if (lead - 2.0).abs() < 1e-9 {
        step / 4.0
    } else {
        step / 5.0
    }
}

/// The chart of a boot, as a standalone SVG document.
pub fn render_svg(t: &BootTimeline) -> String {
    let rows = t.rows();
    let labels: Vec<String> = rows
        .iter()
        .map(|(_, s)| shorten(&s.name, MAX_LABEL))
        .collect();
    let label_width = rows
        .iter()
        .zip(&labels)
        .map(|((depth, _), l)| *depth as f64 * INDENT + l.chars().count() as f64 * CHAR)
        .fold(120.0, f64::max)
        + 24.0;
    // A log that starts mid-boot is drawn from its first span, not from 0.
    let first = rows.iter().map(|(_, s)| s.start).fold(t.end, f64::min);
    let (mut step, mut decimals) = step(t.end.max(0.001));
    let mut origin = (first / step).floor() * step;
    if origin > 0.0 {
        (step, decimals) = self::step((t.end - origin).max(0.001));
        origin = (first / step).floor() * step;
    }
    let intervals = ((t.end - origin) / step).ceil().max(1.0);
    let scale = CHART / (intervals * step);
    let x = |time: f64| label_width + (time - origin) * scale;
    let width = label_width + CHART + 20.0;
    let bottom = TOP + ROW * rows.len() as f64;
    let height = bottom + 62.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(concat!(
        r##"<defs><pattern id="unfinished" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="3" height="6" fill="#ffffff" fill-opacity="0.7"/></pattern></defs>"##,
        "\n",
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##,
        "\n"
    ));
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        escape(&title(t))
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="42" fill="#555555">{}</text>"##,
        escape(&subtitle(t))
    );

    // Stripes under every other top-level group: a pull and its images
    // read as one block.
    let mut shade = false;
    for (i, (depth, _)) in rows.iter().enumerate() {
        if *depth == 0 {
            shade = !shade;
        }
        if shade {
            let _ = writeln!(
                out,
                r##"<rect x="0" y="{:.1}" width="{width:.0}" height="{ROW}" fill="#f4f6f8"/>"##,
                TOP + ROW * i as f64
            );
        }
    }

    let fine = minor(step);
    if fine * scale >= 6.0 {
        let n = (intervals * step / fine).round() as usize;
        for i in 0..=n {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom:.1}" stroke="#eeeeee"/>"##,
                x(origin + i as f64 * fine)
            );
        }
    }
    for i in 0..=intervals as usize {
        let tick = origin + i as f64 * step;
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#c8c8c8"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle" fill="#555555">{tick:.decimals$} s</text><text x="{0:.1}" y="{4:.1}" text-anchor="middle" fill="#555555">{tick:.decimals$} s</text>"##,
            x(tick),
            TOP - 4.0,
            bottom,
            TOP - 8.0,
            bottom + 14.0,
        );
    }

    for (i, ((depth, span), label)) in rows.iter().zip(&labels).enumerate() {
        let y = TOP + ROW * i as f64;
        row(&mut out, span, label, *depth, y, x, (label_width, width));
    }
    legend(&mut out, t, bottom + 40.0);
    out.push_str("</svg>\n");
    out
}

/// One span: its name on the left, its bar, its duration and detail.
fn row(
    out: &mut String,
    span: &Span,
    label: &str,
    depth: usize,
    y: f64,
    x: impl Fn(f64) -> f64,
    (left, width): (f64, f64),
) {
    let x0 = x(span.start);
    let w = (x(span.end) - x0).max(1.5);
    let state = match span.state {
        State::Done => "",
        State::Failed => ", failed",
        State::Unfinished => ", unfinished: the log ends here",
    };
    let _ = write!(
        out,
        "<g><title>{} {:.3}–{:.3} s ({}{state}) {}</title>",
        escape(&span.name),
        span.start,
        span.end,
        seconds(span.duration()),
        escape(&span.detail),
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
        10.0 + depth as f64 * INDENT,
        y + 14.5,
        escape(label)
    );
    let stroke = match span.state {
        State::Failed => r##" stroke="#b00020" stroke-width="2""##,
        State::Unfinished => r##" stroke="#555555" stroke-dasharray="3 2""##,
        State::Done => "",
    };
    let _ = write!(
        out,
        r#"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{BAR}" rx="2" fill="{}"{stroke}/>"#,
        y + (ROW - BAR) / 2.0,
        colour(span.kind),
    );
    if span.state == State::Unfinished {
        let _ = write!(
            out,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{BAR}" fill="url(#unfinished)"/>"#,
            y + (ROW - BAR) / 2.0,
        );
    }
    let mut note = seconds(span.duration());
    if !span.detail.is_empty() {
        note.push_str(" · ");
        note.push_str(&shorten(&span.detail, MAX_DETAIL));
    }
    match span.state {
        State::Failed => note.push_str(" · failed"),
        State::Unfinished => note.push_str(" · unfinished"),
        State::Done => {}
    }
    // After the bar if it fits, else before it (a late bar leaves its
    // row's left part empty), else on the roomier side, cut to fit.
    let after = (width - 4.0 - (x0 + w + 6.0)) / CHAR;
    let before = (x0 - 6.0 - left) / CHAR;
    let chars = note.chars().count() as f64;
    let (tx, anchor, room) = if chars <= after || after >= before {
        (x0 + w + 6.0, "start", after)
    } else {
        (x0 - 6.0, "end", before)
    };
    let note = shorten(&note, (room.floor().max(0.0) as usize).max(12));
    let _ = writeln!(
        out,
        r##"<text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#333333">{}</text></g>"##,
        y + 14.5,
        escape(&note)
    );
}

fn legend(out: &mut String, t: &BootTimeline, y: f64) {
    let rows = t.rows();
    let mut x = 10.0;
    for kind in Kind::ALL {
        if !rows.iter().any(|(_, s)| s.kind == kind) {
            continue;
        }
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" rx="2" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 10.0,
            colour(kind),
            x + 16.0,
            kind.name()
        );
        x += 16.0 + kind.name().len() as f64 * CHAR + 18.0;
    }
    if rows.iter().any(|(_, s)| s.state == State::Failed) {
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" rx="2" fill="#ffffff" stroke="#b00020" stroke-width="2"/><text x="{:.1}" y="{y:.1}">failed</text>"##,
            y - 10.0,
            x + 16.0
        );
        x += 16.0 + 6.0 * CHAR + 18.0;
    }
    if rows.iter().any(|(_, s)| s.state == State::Unfinished) {
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" rx="2" fill="#9aa5b1" stroke="#555555" stroke-dasharray="3 2"/><rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="url(#unfinished)"/><text x="{:.1}" y="{y:.1}">unfinished when the log ends</text>"##,
            y - 10.0,
            y - 10.0,
            x + 16.0
        );
    }
    out.push('\n');
}

fn title(t: &BootTimeline) -> String {
    let mut s = format!("b2c boot: {} to the last line", seconds(t.end));
    if let Some(status) = t.status {
        let _ = write!(s, ", pipeline status {status}");
    }
    s
}

fn subtitle(t: &BootTimeline) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &t.version {
        parts.push(v.clone());
    }
    if t.boots > 1 {
        parts.push(format!("boot {} of the {} in the log", t.boot, t.boots));
    }
    if t.status.is_none() {
        parts.push("the log ends before the pipeline status".to_string());
    }
    parts.push("uptime by the console stamps; hover a bar for its times".into());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_characters_xml_forbids_are_escaped() {
        assert_eq!(
            escape("<script>&\"q'\u{1b}[0K\u{0}\u{ffff}é"),
            "&lt;script&gt;&amp;&quot;q&apos;\u{fffd}[0K\u{fffd}\u{fffd}é"
        );
    }

    #[test]
    fn steps_fit_the_range() {
        assert_eq!(step(0.9), (0.1, 1));
        assert_eq!(step(3.0), (0.5, 1));
        assert_eq!(step(6.6), (1.0, 0));
        assert_eq!(step(11.6), (1.0, 0));
        assert_eq!(step(23.5), (2.0, 0));
        assert_eq!(step(300.0), (30.0, 0));
        assert_eq!(step(86400.0), (7200.0, 0));
        assert!((minor(0.5) - 0.1).abs() < 1e-12);
        assert!((minor(0.2) - 0.05).abs() < 1e-12);
        assert!((minor(1.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn durations_keep_milliseconds_below_a_second() {
        assert_eq!(seconds(0.0134), "0.013 s");
        assert_eq!(seconds(2.345), "2.35 s"); // rounding of the float
        assert_eq!(seconds(250.0), "250 s");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
