//! A service's output: it runs detached (boot2container starts services
//! with `podman start`), so what it prints goes to a log file under the
//! storage layout rather than onto the console between the lines of the
//! job. With `b2c.log=debug` a follower shows each line as it comes, and
//! the end of the log is shown when the service fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How many lines of a failed service's log the console gets.
pub const TAIL_LINES: usize = 20;
/// Longer lines are cut: a service that prints no newline must not flood
/// the console with one endless line.
const MAX_LINE: usize = 512;
/// How much of the end of a log is read for its tail.
const TAIL_BYTES: u64 = 16 * 1024;
const POLL: Duration = Duration::from_millis(200);

/// One line of a log, fit for the console: control characters (a
/// program's colours, cursor moves, a stray `\r`) escaped, and cut to
/// [`MAX_LINE`] characters.
pub fn console_safe(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::new();
    for (n, c) in text.trim_end_matches(['\r', '\n']).chars().enumerate() {
        if n == MAX_LINE {
            out.push('…');
            break;
        }
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `lines` lines of `text`, each [`console_safe`].
pub fn tail_of(text: &[u8], lines: usize) -> Vec<String> {
    let all: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| console_safe(l))
        .collect()
}

/// The last `lines` lines of the log at `path` (its last 16 KiB at most).
pub fn tail(path: &Path, lines: usize) -> std::io::Result<Vec<String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if start > 0 {
        // The first line read is likely cut: drop it.
        let cut = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.drain(..cut);
    }
    Ok(tail_of(&bytes, lines))
}

/// Shows every line added to a log on the console (at the debug level),
/// as `ID: line`, until dropped; what was written before the drop is
/// shown first.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    pub fn start(id: &str, path: PathBuf) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let id = id.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("log-{id}"))
            .spawn(move || follow(&path, &done, |line| log::debug!("{id}: {line}")))
            .ok();
        Follower { stop, thread }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Calls `emit` with each line of the file at `path`, as it grows, until
/// `stop` is set and the rest was read.
fn follow(path: &Path, stop: &AtomicBool, emit: impl Fn(String)) {
    let Ok(mut f) = File::open(path) else { return };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // Read after looking at the flag: the last read sees everything.
        let last = stop.load(Ordering::SeqCst);
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                emit(console_safe(&line));
            }
            if pending.len() > MAX_LINE * 4 {
                emit(console_safe(&pending));
                pending.clear();
            }
        }
        if last {
            if !pending.is_empty() {
                emit(console_safe(&pending));
            }
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_made_safe_for_the_console() {
        assert_eq!(console_safe(b"plain\tline\r\n"), "plain\tline");
        assert_eq!(
            console_safe(b"\x1b[31mred\x1b[0m \x00"),
            "\\u{1b}[31mred\\u{1b}[0m \\u{0}"
        );
        let long = vec![b'x'; 2000];
        assert_eq!(console_safe(&long).chars().count(), MAX_LINE + 1);
    }

    #[test]
    fn the_follower_shows_each_line_as_it_comes_and_the_rest_at_the_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut file = File::create(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || follow(&path, &stop, |l| tx.send(l).unwrap()))
        };
        file.write_all(b"first\nsec").unwrap();
        assert_eq!(rx.recv().unwrap(), "first");
        file.write_all(b"ond\n\x1b[1mthird").unwrap();
        assert_eq!(rx.recv().unwrap(), "second");
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        // The unfinished last line, once stopped.
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["\\u{1b}[1mthird"]);
    }

    #[test]
    fn the_tail_is_the_last_lines() {
        let text = b"one\ntwo\n\nthree\nfour";
        assert_eq!(tail_of(text, 2), ["three", "four"]);
        assert_eq!(tail_of(text, 10), ["one", "two", "three", "four"]);
        assert!(tail_of(b"", 3).is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut big = String::new();
        for i in 0..5000 {
            big.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &big).unwrap();
        assert_eq!(tail(&path, 2).unwrap(), ["line 4998", "line 4999"]);
        assert!(tail(&dir.path().join("none"), 2).is_err());
    }
}
