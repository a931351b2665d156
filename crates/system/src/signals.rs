//! Signals to PID 1: a request to stop the machine in order.
//!
//! Ctrl-Alt-Del reboots at once, without a sync, unless PID 1 asks the
//! kernel for a SIGINT instead (`reboot(RB_DISABLE_CAD)`). SIGTERM and
//! SIGPWR are what other inits understand as "stop", and busybox's
//! `halt`, `poweroff` and `reboot` (from a `--pid=host` container) send
//! SIGUSR1, SIGUSR2 and SIGTERM to PID 1. Without handlers the kernel
//! drops all of them: PID 1 gets no default actions.
//!
//! One thread takes these signals from a signalfd. Every other thread
//! must keep them blocked, or the kernel may hand one to a thread that
//! does not expect it and drop it there: [`install`] blocks them in the
//! calling thread, and threads started afterwards inherit the mask. So
//! call it early, before any other thread. Children must not inherit the
//! mask (std hands it down as it is): [`crate::reaper::spawn`] clears it.
//!
//! The first signal is the request; the callbacks registered with
//! [`on_request`] run once, on the signal thread. Later signals are
//! logged and change nothing.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use log::{info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::Error;

/// What a signal asks of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    Reboot,
    PowerOff,
    /// `b2c.timeout`: the pipeline ran too long. The machine powers off.
    TimedOut,
}

/// What is asked, for messages ("… for a reboot"). The signal that asked
/// is in the line logged when it arrived.
impl fmt::Display for StopRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopRequest::Reboot => "reboot",
            StopRequest::PowerOff => "power-off",
            StopRequest::TimedOut => "timeout",
        })
    }
}

impl StopRequest {
    fn code(self) -> u8 {
        match self {
            StopRequest::Reboot => 1,
            StopRequest::PowerOff => 2,
            StopRequest::TimedOut => 3,
        }
    }

    fn from_code(code: u8) -> Option<StopRequest> {
        match code {
            1 => Some(StopRequest::Reboot),
            2 => Some(StopRequest::PowerOff),
            3 => Some(StopRequest::TimedOut),
            _ => None,
        }
    }

    /// "then rebooting": the end of the arrival line.
    fn then(self) -> &'static str {
        match self {
            StopRequest::Reboot => "rebooting",
            StopRequest::PowerOff | StopRequest::TimedOut => "powering off",
        }
    }
}

/// The signals PID 1 takes, and what each asks for.
const SIGNALS: [(Signal, StopRequest); 5] = [
    // Ctrl-Alt-Del, once RB_DISABLE_CAD is set.
    (Signal::SIGINT, StopRequest::Reboot),
    // busybox `reboot`; what sysvinit and systemd also take as "stop".
    (Signal::SIGTERM, StopRequest::Reboot),
    // busybox `halt`: there is nothing to halt to here but power-off.
    (Signal::SIGUSR1, StopRequest::PowerOff),
    // busybox `poweroff`.
    (Signal::SIGUSR2, StopRequest::PowerOff),
    // A UPS daemon reporting a power failure.
    (Signal::SIGPWR, StopRequest::PowerOff),
];

/// What `signal` asks for, if it is one PID 1 takes.
pub fn request_for(signal: Signal) -> Option<StopRequest> {
    SIGNALS
        .iter()
        .find(|(s, _)| *s == signal)
        .map(|(_, request)| *request)
}

/// Names a signal for the console: who is likely behind it, and the pid
/// of the process that sent it (`None`: the kernel did).
pub fn describe(signal: Signal, sender: Option<i32>) -> String {
    let name = match (signal, sender) {
        (Signal::SIGINT, None) => "Ctrl-Alt-Del (SIGINT)",
        (Signal::SIGUSR1, _) => "SIGUSR1 (halt)",
        (Signal::SIGUSR2, _) => "SIGUSR2 (poweroff)",
        (Signal::SIGPWR, _) => "SIGPWR (power failure)",
        (other, _) => other.as_str(),
    };
    match sender {
        Some(pid) => format!("{name} from pid {pid}"),
        None => name.to_string(),
    }
}

type Callback = Arc<dyn Fn(StopRequest) + Send + Sync>;

#[derive(Default)]
struct Callbacks {
    list: Vec<Callback>,
    /// The request, once one arrived: set under the lock, so that a
    /// callback registered at that moment runs exactly once.
    fired: Option<StopRequest>,
}

/// What a signal that arrived means.
struct Arrival {
    /// For the console.
    line: String,
    /// The request in force: the first one.
    request: StopRequest,
    callbacks: Vec<Callback>,
}

/// Everything that happens when a signal arrives, apart from the thread
/// that reads them: separate so that tests can have their own.
struct State {
    /// 0: nothing asked; else [`StopRequest::code`].
    requested: AtomicU8,
    callbacks: Mutex<Callbacks>,
}

impl State {
    const fn new() -> State {
        State {
            requested: AtomicU8::new(0),
            callbacks: Mutex::new(Callbacks {
                list: Vec::new(),
                fired: None,
            }),
        }
    }

    fn requested(&self) -> Option<StopRequest> {
        StopRequest::from_code(self.requested.load(Ordering::SeqCst))
    }

    fn on_request(&self, f: Callback) {
        let mut callbacks = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        callbacks.list.push(f.clone());
        let fired = callbacks.fired;
        drop(callbacks);
        // Too late for the signal thread: it already ran the callbacks it
        // had. Whoever registers now still gets told.
        if let Some(request) = fired {
            f(request);
        }
    }

    /// A signal arrived: returns the console line, and the callbacks to
    /// run (none unless it is the first request).
    fn arrive(&self, signal: Signal, sender: Option<i32>) -> Option<Arrival> {
        let request = request_for(signal)?;
        Some(self.ask(request, &describe(signal, sender)))
    }

    /// A request, from a signal (`what` names it) or from b2c itself.
    fn ask(&self, request: StopRequest, what: &str) -> Arrival {
        let mut callbacks = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = callbacks.fired {
            return Arrival {
                line: format!("{what}: ignored, already stopping (then {})", first.then()),
                request: first,
                callbacks: Vec::new(),
            };
        }
        callbacks.fired = Some(request);
        // Before the callbacks run: they may look (e.g. through a pipeline
        // that checks whether to start the next container).
        self.requested.store(request.code(), Ordering::SeqCst);
        Arrival {
            line: format!("{what}: stopping the containers, then {}", request.then()),
            request,
            callbacks: callbacks.list.clone(),
        }
    }
}

static STATE: State = State::new();

/// Whether a stop was asked, and what for. Lock-free: callable from
/// anywhere, a panic hook included.
pub fn requested() -> Option<StopRequest> {
    STATE.requested()
}

/// Runs `f` on the signal thread when the first request arrives, or at
/// once (on the caller's thread) if it already did. Every registered
/// callback runs once. Keep them short (start a thread for long work):
/// the signal thread logs later signals only when they return.
pub fn on_request(f: impl Fn(StopRequest) + Send + Sync + 'static) {
    STATE.on_request(Arc::new(f));
}

/// Asks for a stop as a signal would, for `what` (`b2c.timeout`): the
/// first request wins, and the callbacks of [`on_request`] run on the
/// calling thread. Returns the line it logged.
pub fn request_stop(request: StopRequest, what: &str) -> String {
    let arrival = STATE.ask(request, what);
    info!("{}", arrival.line);
    for callback in arrival.callbacks {
        callback(arrival.request);
    }
    arrival.line
}

/// The signals of [`SIGNALS`], as a set.
fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for (signal, _) in SIGNALS {
        set.add(signal);
    }
    set
}

/// Blocks the signals in the calling thread, starts the thread that takes
/// them and, as PID 1, turns Ctrl-Alt-Del into a SIGINT. Idempotent. Call
/// it before starting any other thread (see the module's documentation).
pub fn install() -> Result<(), Error> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return Ok(());
    }
    let set = signal_set();
    let sys = |what: &str| {
        let what = what.to_string();
        move |source| Error::Sys { what, source }
    };
    set.thread_block()
        .map_err(sys("cannot block the stop signals (they stay ignored)"))?;
    // Close-on-exec: crun and the containers have no use for it.
    let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
        .map_err(sys("cannot read the stop signals (they stay ignored)"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || take_signals(&fd))
        .map_err(|source| Error::Spawn {
            program: "the signal thread".into(),
            source,
        })?;
    *installed = true;
    // Only PID 1 owns the machine's Ctrl-Alt-Del; a test run as root must
    // not change its host's.
    if nix::unistd::getpid().as_raw() == 1 {
        nix::sys::reboot::set_cad_enabled(false).map_err(sys(
            "reboot(RB_DISABLE_CAD) failed, Ctrl-Alt-Del reboots at once",
        ))?;
    }
    Ok(())
}

fn take_signals(fd: &SignalFd) {
    loop {
        let info = match fd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // Not expected from a signalfd; do not spin on it.
                warn!("reading the stop signals: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        // si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL): a process sent it;
        // the kernel's Ctrl-Alt-Del comes as SI_KERNEL.
        let sender = (info.ssi_code <= 0).then_some(info.ssi_pid as i32);
        if let Some(arrival) = STATE.arrive(signal, sender) {
            info!("{}", arrival.line);
            for callback in arrival.callbacks {
                callback(arrival.request);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn each_signal_asks_for_what_its_sender_means() {
        use StopRequest::*;
        for (signal, request) in [
            (Signal::SIGINT, Reboot),
            (Signal::SIGTERM, Reboot),
            (Signal::SIGUSR1, PowerOff),
            (Signal::SIGUSR2, PowerOff),
            (Signal::SIGPWR, PowerOff),
        ] {
            assert_eq!(request_for(signal), Some(request), "{signal}");
        }
        assert_eq!(request_for(Signal::SIGHUP), None);
        assert_eq!(request_for(Signal::SIGCHLD), None);
    }

    #[test]
    fn signals_are_named_with_their_sender() {
        assert_eq!(describe(Signal::SIGINT, None), "Ctrl-Alt-Del (SIGINT)");
        assert_eq!(describe(Signal::SIGINT, Some(42)), "SIGINT from pid 42");
        assert_eq!(describe(Signal::SIGTERM, Some(7)), "SIGTERM from pid 7");
        assert_eq!(
            describe(Signal::SIGUSR2, Some(7)),
            "SIGUSR2 (poweroff) from pid 7"
        );
        assert_eq!(describe(Signal::SIGPWR, None), "SIGPWR (power failure)");
        assert_eq!(StopRequest::Reboot.to_string(), "reboot");
        assert_eq!(StopRequest::PowerOff.to_string(), "power-off");
    }

    #[test]
    fn the_first_request_wins_and_callbacks_run_once() {
        let state = State::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        state.on_request(Arc::new(move |r| {
            assert_eq!(r, StopRequest::Reboot);
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(state.requested(), None);
        assert!(state.arrive(Signal::SIGHUP, None).is_none(), "not ours");
        assert_eq!(state.requested(), None);

        let first = state.arrive(Signal::SIGINT, None).unwrap();
        assert_eq!(
            first.line,
            "Ctrl-Alt-Del (SIGINT): stopping the containers, then rebooting"
        );
        assert_eq!(first.request, StopRequest::Reboot);
        assert_eq!(state.requested(), Some(StopRequest::Reboot));
        first.callbacks.iter().for_each(|f| f(first.request));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A second signal, even one asking for something else, changes
        // nothing and runs nothing.
        let second = state.arrive(Signal::SIGUSR2, Some(9)).unwrap();
        assert_eq!(
            second.line,
            "SIGUSR2 (poweroff) from pid 9: ignored, already stopping (then rebooting)"
        );
        assert_eq!(second.request, StopRequest::Reboot);
        assert!(second.callbacks.is_empty());
        assert_eq!(state.requested(), Some(StopRequest::Reboot));

        // Registered after the request: told at once, once.
        let c = calls.clone();
        state.on_request(Arc::new(move |_| {
            c.fetch_add(10, Ordering::SeqCst);
        }));
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn power_off_signals_say_so() {
        let state = State::new();
        let arrival = state.arrive(Signal::SIGPWR, Some(1234)).unwrap();
        assert_eq!(
            arrival.line,
            "SIGPWR (power failure) from pid 1234: stopping the containers, then powering off"
        );
        assert_eq!(state.requested(), Some(StopRequest::PowerOff));
    }
}
