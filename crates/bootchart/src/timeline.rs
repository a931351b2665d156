//! A boot's phases, read from its console lines.
//!
//! The setup runs one phase at a time, in a fixed order: its start
//! (banner, command line), the kernel modules, the network, the clock,
//! the extra args, the cache, the pull. A phase starts at its header line
//! (`setting up the network`, also the GitLab section's) and ends at its
//! last line of news (`network: …`), else where the next one starts. Two
//! phases print no header (the modules, the extra args): they start where
//! the one before ended. The pull holds one span per image (`pulling IMAGE
//! from …` → `pulled IMAGE …`), each with its layers (`IMAGE: layer
//! sha256:… done: … in 0.53 s`, which gives its own duration). Services
//! and containers run from `starting service` / `running` to their exit;
//! the shutdown from the end of the pipeline to the last line.

use std::borrow::Cow;

use crate::line::{lines, Line};

/// What a span of the boot was, which decides how it is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// From the kernel's start to `/init`.
    Kernel,
    /// One of b2c's setup phases: its start, kernel modules, network,
    /// clock, extra args, cache.
    Setup,
    /// Pulling the images, all at once.
    Pull,
    /// One image's pull, within its [`Kind::Pull`].
    Image,
    /// One layer's download and unpack, within its [`Kind::Image`].
    Layer,
    Service,
    Container,
    /// From the end of the pipeline to the power-off.
    Shutdown,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Kernel,
        Kind::Setup,
        Kind::Pull,
        Kind::Image,
        Kind::Layer,
        Kind::Service,
        Kind::Container,
        Kind::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Setup => "setup",
            Kind::Pull => "pull",
            Kind::Image => "image",
            Kind::Layer => "layer",
            Kind::Service => "service",
            Kind::Container => "container",
            Kind::Shutdown => "shutdown",
        }
    }
}

/// How a span ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Done,
    /// With an `ERROR:` (or a warning that it did not do its job), or a
    /// non-zero exit status.
    Failed,
    /// The log stops before it ended: it ends at the log's last stamp.
    Unfinished,
}

/// One bar of the chart, in seconds of uptime.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// `network`, an image reference, a layer's short digest, `run-0`…
    pub name: String,
    pub kind: Kind,
    pub start: f64,
    pub end: f64,
    pub state: State,
    /// What the log said about it: `eth0: 10.99.0.41/24 by DHCP …`,
    /// `1.1 MB downloaded, 2.0 MB unpacked`, the image of a container and
    /// its exit status. Text from the log, untrusted: escape it.
    pub detail: String,
    /// An image's pull within the pull, a layer within its image.
    pub children: Vec<Span>,
}

impl Span {
    fn open(name: &str, kind: Kind, at: f64) -> Span {
        Span {
            name: name.to_string(),
            kind,
            start: at,
            end: at,
            state: State::Unfinished,
            detail: String::new(),
            children: Vec::new(),
        }
    }

    pub fn duration(&self) -> f64 {
        self.end - self.start
    }

    fn close(&mut self, at: f64, state: State) {
        self.end = at.max(self.start);
        self.state = state;
    }

    fn is_open(&self) -> bool {
        self.state == State::Unfinished
    }
}

/// One boot of a console log.
#[derive(Debug, Clone, PartialEq)]
pub struct BootTimeline {
    /// Which boot of the log this is, from 1, of how many b2c boots the
    /// log holds (a serial log of a machine that rebooted holds several).
    pub boot: usize,
    pub boots: usize,
    /// From b2c's first line: `b2c 0.1.0 (x86_64)`.
    pub version: Option<String>,
    /// Top-level spans, by start time.
    pub spans: Vec<Span>,
    /// The last stamp of the boot, b2c's or the kernel's.
    pub end: f64,
    /// From `Execution is over, pipeline status: N`.
    pub status: Option<i32>,
}

impl BootTimeline {
    /// Every span, depth first, with its depth (0 for the top level).
    pub fn rows(&self) -> Vec<(usize, &Span)> {
        fn walk<'a>(spans: &'a [Span], depth: usize, out: &mut Vec<(usize, &'a Span)>) {
            for s in spans {
                out.push((depth, s));
                walk(&s.children, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.spans, 0, &mut out);
        out
    }
}

/// Why a log cannot be charted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no b2c console line (`[   1.234]: …`) in it")]
    NoB2cLines,
    #[error("there is no boot {asked}: the log holds {boots} b2c boot(s)")]
    NoSuchBoot { asked: usize, boots: usize },
}

/// The last b2c boot of a log: what `b2c plot` draws unless told which.
pub fn parse(log: &str) -> Result<BootTimeline, ParseError> {
    boots(log).pop().ok_or(ParseError::NoB2cLines)
}

/// Boot `n` (from 1) of a log.
pub fn parse_boot(log: &str, n: usize) -> Result<BootTimeline, ParseError> {
    let mut all = boots(log);
    if all.is_empty() {
        return Err(ParseError::NoB2cLines);
    }
    let boots = all.len();
    if n == 0 || n > boots {
        return Err(ParseError::NoSuchBoot { asked: n, boots });
    }
    Ok(all.swap_remove(n - 1))
}

/// Every b2c boot of a log, in order. A boot without a single b2c line (a
/// kernel that never got to /init) is left out.
pub fn boots(log: &str) -> Vec<BootTimeline> {
    // `dmesg` of a running b2c holds its lines too, as `b2c: …` at the
    // kernel's stamps: a log that is only that is read from them. A serial
    // log with both (the kernel's loglevel at debug) is read from b2c's
    // own, which are the same lines.
    let native = lines(log).any(|l| l.b2c);
    let mut out = Vec::new();
    let mut boot = Boot::default();
    for Line { at, b2c, text } in lines(log) {
        let (b2c, text) = match text.strip_prefix("b2c: ") {
            Some(rest) if !b2c && !native => (true, Cow::Borrowed(rest)),
            _ => (b2c, text),
        };
        if boot.is_another_boot(at, b2c, &text) {
            out.extend(std::mem::take(&mut boot).finish());
        }
        if b2c {
            boot.b2c_line(at, &text);
        } else {
            boot.kernel_line(at, &text);
        }
    }
    out.extend(boot.finish());
    let boots = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        b.boot = i + 1;
        b.boots = boots;
    }
    out
}

/// The setup phases, in the order b2c runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Start,
    Modules,
    Network,
    Clock,
    ExtraArgs,
    Cache,
    Pull,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Start => "b2c start",
            Setup::Modules => "kernel modules",
            Setup::Network => "network",
            Setup::Clock => "clock",
            Setup::ExtraArgs => "extra args",
            Setup::Cache => "cache",
            Setup::Pull => "pull",
        }
    }
}

/// The setup phase under way.
#[derive(Debug)]
struct Phase {
    which: Setup,
    span: Span,
    /// Its last line of news: it lasts until then, and no longer, even if
    /// the next phase's header comes much later (b2c's own work between
    /// phases is nobody's).
    ended: Option<f64>,
    /// Its first `ERROR:` (or a warning that it did not do its job): it
    /// failed, and lasts at least until then.
    failed: Option<f64>,
}

#[derive(Debug, Default)]
struct Boot {
    /// Closed spans.
    spans: Vec<Span>,
    phase: Option<Phase>,
    /// The furthest setup phase reached.
    furthest: Option<Setup>,
    /// Where the last setup phase ended: a phase without a header starts
    /// there.
    boundary: Option<f64>,
    /// Services and containers under way.
    running: Vec<Span>,
    /// The end of whatever ended last: the shutdown starts there.
    last_end: Option<f64>,
    shutdown: Option<Span>,
    /// `It's now safe to turn off your computer` or `Rebooting the computer`.
    complete: bool,
    /// The kernel's `Run /init as init process`.
    init_at: Option<f64>,
    version: Option<String>,
    banner: bool,
    b2c_lines: usize,
    last_b2c: Option<f64>,
    linux_version: bool,
    end: f64,
    status: Option<i32>,
}

/// `b2c 0.1.0 (x86_64), kernel …` → `b2c 0.1.0 (x86_64)`.
fn banner(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("b2c ")?;
    let (version, after) = rest.split_once(' ')?;
    if !version.starts_with(|c: char| c.is_ascii_digit()) || !after.starts_with('(') {
        return None;
    }
    let close = after.find(')')?;
    Some(&text[..4 + version.len() + 1 + close + 1])
}

/// A container's or service's id (`run-0`, `post-1`, `service-0`): what
/// tells `running run-0: IMAGE` from other lines starting with `running`.
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// What a `pulled` line says after the image: `IMAGE (sha256:…) from R:
/// 4 layers, 4 downloaded, 0 reused from the store; 1.1 MB downloaded,
/// 2.0 MB unpacked, in 0.5 s (2.2 MB/s)` → `1.1 MB downloaded, 2.0 MB
/// unpacked; 4 layers, 4 downloaded, 0 reused`.
fn pulled_detail(rest: &str) -> String {
    let Some((head, sizes)) = rest.split_once("; ") else {
        return String::new();
    };
    let sizes = sizes.split(", in ").next().unwrap_or(sizes);
    match head.rsplit_once(": ") {
        Some((_, layers)) => format!("{sizes}; {}", layers.replace(" from the store", "")),
        None => sizes.to_string(),
    }
}

/// The later of two times, if any: a phase ends at its last news or at
/// its error, whichever came last.
fn last_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn exit_state(status: &str) -> State {
    if status.trim() == "0" {
        State::Done
    } else {
        State::Failed
    }
}

impl Boot {
    /// Whether this line starts another boot: the kernel starting again,
    /// b2c's banner again, or b2c's clock going back.
    fn is_another_boot(&self, at: f64, b2c: bool, text: &str) -> bool {
        if b2c {
            self.b2c_lines > 0
                && (banner(text).is_some() || self.last_b2c.is_some_and(|last| at + 1.0 < last))
        } else {
            text.starts_with("Linux version ") && (self.b2c_lines > 0 || self.linux_version)
        }
    }

    fn kernel_line(&mut self, at: f64, text: &str) {
        self.end = self.end.max(at);
        if text.starts_with("Linux version ") {
            self.linux_version = true;
        } else if text.starts_with("Run /init as init process") && self.b2c_lines == 0 {
            self.init_at = Some(at);
        }
    }

    fn b2c_line(&mut self, at: f64, text: &str) {
        self.end = self.end.max(at);
        self.last_b2c = Some(at);
        self.b2c_lines += 1;
        if let Some(version) = banner(text) {
            self.version = Some(version.to_string());
            self.banner = true;
            // The init's own start (its mounts, its logger) is its time.
            let start = self.init_at.filter(|t| *t <= at).unwrap_or(at);
            self.start_phase(Setup::Start, start);
        } else if text.starts_with("kernel command line: ") {
            self.news(Setup::Start, at);
        } else if let Some(list) = text.strip_prefix("kernel modules: loaded ") {
            // Only the coldplug's: later ones are the storage's drivers
            // or a device plugged in, within whatever runs then.
            if let Some(p) = self.news(Setup::Modules, at) {
                let n = list.split(", ").count();
                p.span.detail = format!("{n} loaded");
            }
        } else if text.starts_with("block devices: ") {
            self.news(Setup::Modules, at);
        } else if text == "setting up the network" {
            self.start_phase(Setup::Network, at);
        } else if let Some(summary) = text.strip_prefix("network: ") {
            if let Some(p) = self.news(Setup::Network, at) {
                if p.span.detail.is_empty() {
                    p.span.detail = summary.split(", ").next().unwrap_or("").to_string();
                }
            }
        } else if let Some(server) = text.strip_prefix("setting the clock from ") {
            self.start_phase(Setup::Clock, at).span.detail = format!("from {server}");
        } else if text.starts_with("clock set from ") {
            self.news(Setup::Clock, at);
        } else if text.starts_with("WARNING: cannot get the time from ")
            || text.starts_with("WARNING: cannot set the clock")
        {
            if let Some(p) = self.news(Setup::Clock, at) {
                p.failed.get_or_insert(at);
                p.span.detail = "not set".into();
            }
        } else if text.starts_with("options from b2c.extra_args_url") {
            self.news(Setup::ExtraArgs, at);
        } else if let Some(rest) = text.strip_prefix("setting up the storage") {
            let p = self.start_phase(Setup::Cache, at);
            p.span.detail = rest.trim().trim_matches(['(', ')']).to_string();
        } else if let Some(mounted) = text
            .strip_prefix("cache: ")
            .filter(|r| r.contains(" mounted on "))
        {
            if let Some(p) = self.news(Setup::Cache, at) {
                p.span.detail = mounted.to_string();
            }
        } else if text.starts_with("WARNING: ") && text.contains(": running without a cache") {
            if let Some(p) = self.news(Setup::Cache, at) {
                p.failed.get_or_insert(at);
                p.span.detail = "no cache: images in RAM".into();
            }
        } else if let Some(rest) = text.strip_prefix("pulling ") {
            self.pulling(at, rest);
        } else if let Some(rest) = text.strip_prefix("pulled ") {
            let image = rest.split(' ').next().unwrap_or("");
            self.image_end(at, image, State::Done, &pulled_detail(rest));
        } else if let Some((image, _)) = text
            .split_once(" is up to date: ")
            .and_then(|(head, _)| head.split_once(' '))
        {
            self.image_end(at, image, State::Done, "up to date");
        } else if let Some(rest) = text.strip_prefix("using the stored image ") {
            // Nothing to download (--pull=missing, a pinned digest).
            let image = rest.split(' ').next().unwrap_or("");
            self.image_start(at, image, "");
            self.image_end(at, image, State::Done, "the stored copy");
        } else if let Some((image, store)) = text
            .strip_prefix("using ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(image, r)| Some((image, r.split_once(" from image store ")?.1)))
        {
            let store = store.split(':').next().unwrap_or("");
            self.image_start(at, image, "");
            self.image_end(at, image, State::Done, &format!("from image store {store}"));
        } else if let Some(rest) = text
            .strip_prefix("WARNING: registry ")
            .and_then(|r| r.split_once(" unreachable: using the stored image "))
            .map(|(_, r)| r)
        {
            let image = rest.split(' ').next().unwrap_or("");
            self.image_end(
                at,
                image,
                State::Done,
                "registry unreachable: the stored copy",
            );
        } else if let Some(rest) = text.strip_prefix("ERROR: cannot pull ") {
            // `IMAGE: why`; an option's error names no image.
            let image = rest.split(": ").next().unwrap_or("");
            if !self.image_is_open(image) && !image.contains(' ') {
                self.image_start(at, image, "");
            }
            self.image_end(at, image, State::Failed, "cannot pull");
        } else if let Some((image, rest)) = text.split_once(": layer ") {
            self.layer(at, image, rest);
        } else if text == "starting the services" {
            self.end_setup(at);
        } else if let Some((id, name)) = text
            .strip_prefix("starting service ")
            .and_then(|r| r.split_once(": "))
            .filter(|(id, _)| is_id(id))
        {
            self.end_setup(at);
            let mut s = Span::open(id, Kind::Service, at);
            s.detail = name.to_string();
            self.running.push(s);
        } else if let Some((id, status)) = text
            .strip_prefix("stopped service ")
            .and_then(|r| r.split_once(" (status "))
        {
            let status = status.trim_end_matches(')');
            // Stopped by b2c at the end of the pipeline: its status is
            // SIGTERM's, not a failure.
            self.run_end(
                at,
                Kind::Service,
                id,
                State::Done,
                &format!("stopped, status {status}"),
            );
        } else if let Some(((id, _), status)) = text
            .strip_prefix("WARNING: ")
            .unwrap_or(text)
            .strip_prefix("service ")
            .and_then(|r| r.split_once(") exited with status "))
            .and_then(|(head, status)| Some((head.split_once(" (")?, status)))
        {
            let status = status.split(';').next().unwrap_or(status);
            let state = exit_state(status);
            self.run_end(
                at,
                Kind::Service,
                id,
                state,
                &format!("exited, status {status}"),
            );
        } else if let Some((id, _)) = text
            .strip_prefix("ERROR: cannot start service ")
            .and_then(|r| r.split_once(" ("))
        {
            self.run_end(at, Kind::Service, id, State::Failed, "cannot start");
        } else if let Some((id, name)) = text
            .strip_prefix("running ")
            .and_then(|r| r.split_once(": "))
            .filter(|(id, _)| is_id(id))
        {
            self.end_setup(at);
            let mut s = Span::open(id, Kind::Container, at);
            s.detail = name.to_string();
            self.running.push(s);
        } else if let Some((id, _)) = text
            .strip_prefix("ERROR: cannot run ")
            .and_then(|r| r.split_once(" ("))
        {
            if let Some(s) = self.find_running(Kind::Container, id) {
                s.state = State::Failed;
            }
        } else if let Some((id, status)) = text
            .split_once(" exited with status ")
            .filter(|(id, _)| is_id(id))
        {
            let state = exit_state(status);
            self.run_end(at, Kind::Container, id, state, &format!("status {status}"));
        } else if let Some(status) = text.strip_prefix("Execution is over, pipeline status: ") {
            self.end_setup(at);
            self.status = status.trim().parse().ok();
            let start = self.last_end.filter(|t| *t <= at).unwrap_or(at);
            let mut s = Span::open("shutdown", Kind::Shutdown, start);
            s.detail = format!("pipeline status {}", status.trim());
            self.shutdown = Some(s);
        } else if text == "It's now safe to turn off your computer"
            || text == "Rebooting the computer"
        {
            self.complete = true;
        } else if text.starts_with("ERROR: ") {
            if let Some(p) = &mut self.phase {
                p.failed.get_or_insert(at);
            }
        }
    }

    /// Ends the phase under way and starts `which` at `at`.
    fn start_phase(&mut self, which: Setup, at: f64) -> &mut Phase {
        self.end_setup(at);
        self.furthest = self.furthest.max(Some(which));
        self.phase.insert(Phase {
            which,
            span: Span::open(which.name(), Self::kind_of(which), at),
            ended: None,
            failed: None,
        })
    }

    fn kind_of(which: Setup) -> Kind {
        if which == Setup::Pull {
            Kind::Pull
        } else {
            Kind::Setup
        }
    }

    /// A line of news of phase `which` at `at`: the phase lasts at least
    /// until then. A phase without a header starts here, where the one
    /// before ended; news of a phase already passed is someone else's
    /// (`None`).
    fn news(&mut self, which: Setup, at: f64) -> Option<&mut Phase> {
        if self.phase.as_ref().is_some_and(|p| p.which == which) {
            let p = self.phase.as_mut()?;
            p.ended = Some(at);
            return Some(p);
        }
        if self.furthest.is_some_and(|f| f > which) {
            return None;
        }
        self.end_setup(at);
        let start = self.boundary.filter(|b| *b <= at).unwrap_or(at);
        let p = self.start_phase(which, start);
        p.ended = Some(at);
        Some(p)
    }

    /// Ends the setup phase under way, if any: at its last news, else at
    /// its first error, else at `at`.
    fn end_setup(&mut self, at: f64) {
        let Some(mut p) = self.phase.take() else {
            return;
        };
        let end = last_of(p.ended, p.failed).unwrap_or(at);
        for image in p.span.children.iter_mut().filter(|c| c.is_open()) {
            image.end = end.max(image.start);
        }
        let state = if p.failed.is_some() {
            State::Failed
        } else {
            State::Done
        };
        p.span.close(end, state);
        self.boundary = Some(p.span.end);
        self.ended(p.span.end);
        self.spans.push(p.span);
    }

    fn ended(&mut self, at: f64) {
        self.last_end = Some(self.last_end.map_or(at, |e| e.max(at)));
    }

    /// The pull phase, started at `at` if it is not under way.
    fn pull_phase(&mut self, at: f64) -> &mut Phase {
        if self.phase.as_ref().is_none_or(|p| p.which != Setup::Pull) {
            self.start_phase(Setup::Pull, at);
        }
        self.phase.as_mut().expect("just started")
    }

    /// `pulling IMAGE from SOURCE`, `pulling IMAGE: 3.0 / 5.0 MB`, or the
    /// section header `pulling IMAGE, IMAGE`.
    fn pulling(&mut self, at: f64, rest: &str) {
        if let Some((image, progress)) = rest
            .split_once(": ")
            .filter(|(_, p)| p.ends_with(" MB") && p.contains(" / "))
        {
            if let Some(s) = self.open_image(image) {
                s.detail = progress.to_string();
            }
        } else if let Some((image, source)) = rest.split_once(" from ") {
            // Again after a mirror failed: the same pull goes on.
            if let Some(s) = self.open_image(image) {
                s.detail = format!("from {source}");
            } else {
                self.image_start(at, image, &format!("from {source}"));
            }
        } else {
            let n = rest.split(", ").count();
            let p = self.start_phase(Setup::Pull, at);
            p.span.detail = format!("{n} image{}", if n == 1 { "" } else { "s" });
        }
    }

    fn open_image(&mut self, image: &str) -> Option<&mut Span> {
        let p = self.phase.as_mut().filter(|p| p.which == Setup::Pull)?;
        p.span
            .children
            .iter_mut()
            .rev()
            .find(|s| s.is_open() && s.name == image)
    }

    fn image_is_open(&mut self, image: &str) -> bool {
        self.open_image(image).is_some()
    }

    fn image_start(&mut self, at: f64, image: &str, detail: &str) {
        let p = self.pull_phase(at);
        let mut s = Span::open(image, Kind::Image, at);
        s.detail = detail.to_string();
        p.span.children.push(s);
        p.ended = None;
    }

    fn image_end(&mut self, at: f64, image: &str, state: State, detail: &str) {
        let Some(s) = self.open_image(image) else {
            return;
        };
        s.close(at, state);
        if !detail.is_empty() {
            s.detail = detail.to_string();
        }
        let p = self.phase.as_mut().expect("open_image found the pull");
        if !p.span.children.iter().any(Span::is_open) {
            p.ended = Some(at);
        }
    }

    /// `IMAGE: layer sha256:… done: SIZES in 0.53 s`: the layer's own
    /// time, downloaded and unpacked, ends at this line.
    fn layer(&mut self, at: f64, image: &str, rest: &str) {
        let Some((digest, done)) = rest.split_once(" done") else {
            return;
        };
        let Some((sizes, secs)) = done.rsplit_once(" in ") else {
            return;
        };
        let Some(secs) = secs
            .strip_suffix(" s")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
        else {
            return;
        };
        let Some(img) = self.open_image(image) else {
            return;
        };
        let mut layer = Span::open(digest, Kind::Layer, (at - secs).max(0.0));
        layer.close(at, State::Done);
        layer.detail = sizes
            .trim_start_matches(':')
            .trim()
            .trim_end_matches(',')
            .to_string();
        img.children.push(layer);
    }

    fn find_running(&mut self, kind: Kind, id: &str) -> Option<&mut Span> {
        self.running
            .iter_mut()
            .rev()
            .find(|s| s.kind == kind && s.name == id)
    }

    fn run_end(&mut self, at: f64, kind: Kind, id: &str, state: State, what: &str) {
        let Some(i) = self
            .running
            .iter()
            .rposition(|s| s.kind == kind && s.name == id)
        else {
            return;
        };
        let mut s = self.running.remove(i);
        // `cannot run` came first: the status says 1, the span says why.
        let state = if s.state == State::Failed {
            State::Failed
        } else {
            state
        };
        s.close(at, state);
        s.detail = if s.detail.is_empty() {
            what.to_string()
        } else {
            format!("{}, {what}", s.detail)
        };
        self.ended(at);
        self.spans.push(s);
    }

    /// The timeline; `None` for a boot without a b2c line.
    fn finish(mut self) -> Option<BootTimeline> {
        if self.b2c_lines == 0 {
            return None;
        }
        let end = self.end;
        // Whatever is under way when the log stops ends with it.
        if let Some(p) = &mut self.phase {
            if p.ended.is_none() && p.failed.is_none() {
                p.ended = Some(end);
                p.span.state = State::Unfinished;
            }
        }
        if let Some(mut p) = self.phase.take() {
            let unfinished = p.span.state == State::Unfinished;
            let done = last_of(p.ended, p.failed).unwrap_or(end);
            for image in p.span.children.iter_mut().filter(|c| c.is_open()) {
                image.end = end.max(image.start);
            }
            let state = if unfinished {
                State::Unfinished
            } else if p.failed.is_some() {
                State::Failed
            } else {
                State::Done
            };
            p.span.close(done, state);
            self.spans.push(p.span);
        }
        for mut s in self.running.drain(..) {
            s.end = end.max(s.start);
            if s.state != State::Failed {
                s.state = State::Unfinished;
            }
            self.spans.push(s);
        }
        if let Some(mut s) = self.shutdown.take() {
            let state = if self.complete {
                State::Done
            } else {
                State::Unfinished
            };
            s.close(end, state);
            self.spans.push(s);
        }
        if self.banner {
            let first = self
                .spans
                .iter()
                .map(|s| s.start)
                .fold(f64::INFINITY, f64::min);
            let mut kernel = Span::open("kernel", Kind::Kernel, 0.0);
            kernel.close(first.min(end), State::Done);
            kernel.detail = "until /init".into();
            self.spans.push(kernel);
        }
        let by_start = |a: &Span, b: &Span| a.start.total_cmp(&b.start);
        self.spans.sort_by(by_start);
        for s in &mut self.spans {
            s.children.sort_by(by_start);
            for c in &mut s.children {
                c.children.sort_by(by_start);
            }
        }
        Some(BootTimeline {
            boot: 1,
            boots: 1,
            version: self.version,
            spans: self.spans,
            end,
            status: self.status,
        })
    }
}
