//! The chart drawn from real logs, and from a hostile one: whatever the
//! log holds, the SVG stays well-formed and nothing of the log becomes
//! markup.

use b2c_bootchart::{parse, render_svg};

const LAYERS: &str = include_str!("fixtures/layers.log");

/// A minimal well-formedness check, without an XML parser: tags open
/// and close in order, the only tags are the renderer's, every `&` starts
/// an entity, and no text holds `<` or `>`.
fn check_well_formed(svg: &str) {
    const TAGS: [&str; 8] = [
        "svg", "defs", "pattern", "rect", "text", "line", "g", "title",
    ];
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        assert!(!text.contains('>'), "a bare > in {text:?}");
        check_entities(text);
        let end = rest[lt..].find('>').expect("an unclosed tag") + lt;
        let tag = &rest[lt + 1..end];
        assert!(!tag.contains('<'), "< inside the tag {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "closing {name}");
        } else {
            let name = tag
                .split([' ', '/'])
                .next()
                .unwrap_or_else(|| panic!("an empty tag"));
            assert!(TAGS.contains(&name), "unexpected tag <{name}>");
            check_attributes(tag);
            if !tag.ends_with('/') {
                open.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "left open: {open:?}");
    assert_eq!(rest.trim(), "");
}

fn check_entities(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "a bare & in {text:?}"
        );
    }
}

/// `name="value"` pairs only, values without quotes inside.
fn check_attributes(tag: &str) {
    let quotes = tag.matches('"').count();
    assert_eq!(quotes % 2, 0, "odd quotes in <{tag}>");
    for value in tag.split('"').skip(1).step_by(2) {
        check_entities(value);
    }
}

#[test]
fn a_real_boot_is_drawn_with_a_row_per_span() {
    let t = parse(LAYERS).unwrap();
    let svg = render_svg(&t);
    check_well_formed(&svg);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" "));
    // One group per row, each with its bar.
    assert_eq!(svg.matches("<g>").count(), t.rows().len());
    assert!(svg.contains(">b2c boot: 6.65 s to the last line, pipeline status 0<"));
    assert!(svg.contains(">10.99.0.1:5000/b2c/layers-zstd:latest</text>"));
    // The run-0 bar: 5.690–6.199 s, 0.509 s.
    assert!(
        svg.contains(">0.509 s · 10.99.0.1:5000/b2c/layers:latest, status 0<"),
        "{svg}"
    );
    // Gridlines every second, labelled, from 0 to 7 s.
    for s in 0..=7 {
        assert!(svg.contains(&format!(">{s} s</text>")), "{s} s");
    }
    assert!(!svg.contains(">8 s</text>"));
}

#[test]
fn text_from_the_log_is_escaped() {
    let hostile = "\
[    1.000]: b2c 0.1.0 (<b>x86_64</b>), kernel x
[    2.000]: pulling reg/<script>alert('&')</script>\"x from evil
[    2.500]: pulling reg/<script>alert('&')</script>\"x: 1.0 / 2.0 MB
[    3.000]: running run-0: <img src=x onerror=\"alert(1)\"> & ]]> \u{1b}[31m
[    3.200]: Execution is over, pipeline status: 0
";
    let t = parse(hostile).unwrap();
    let svg = render_svg(&t);
    check_well_formed(&svg);
    for raw in ["<script", "<img", "<b>", "]]>", "\u{1b}", "alert('"] {
        assert!(!svg.contains(raw), "{raw} came through:\n{svg}");
    }
    assert!(
        svg.contains("reg/&lt;script&gt;alert(&apos;&amp;&apos;)&lt;/script&gt;&quot;x"),
        "{svg}"
    );
    assert!(svg.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; ]]&gt;"));
    assert!(svg.contains("b2c 0.1.0 (&lt;b&gt;x86_64&lt;/b&gt;)"));
}

#[test]
fn long_names_are_cut_in_the_row_and_whole_in_the_tooltip() {
    let name = format!("reg/{}:1", "a".repeat(200));
    let log = format!("[    1.000]: pulling {name} from reg\n[    2.000]: x\n");
    let svg = render_svg(&parse(&log).unwrap());
    check_well_formed(&svg);
    assert!(svg.contains(&format!("<title>{name} ")), "{svg}");
    assert!(svg.contains(&format!(">{}…</text>", &name[..55])), "{svg}");
}

#[test]
fn a_log_starting_mid_boot_is_drawn_from_its_first_line() {
    let log = "[  300.000]: running run-0: a\n[  304.000]: run-0 exited with status 0\n";
    let svg = render_svg(&parse(log).unwrap());
    check_well_formed(&svg);
    assert!(svg.contains(">300.0 s</text>"), "{svg}");
    assert!(svg.contains(">304.0 s</text>"), "{svg}");
    assert!(!svg.contains(">0.0 s</text>"));
}
