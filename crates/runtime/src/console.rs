//! A container's stdio, as podman gives it: with `-t`, a pty whose master
//! crun hands over its console socket (SCM_RIGHTS); without, pipes. b2c
//! relays between that and its own console, so that a program checking
//! `isatty` sees what it sees under boot2container (a terminal with `-t`,
//! none without), and console input reaches the container with `-i`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// How a container's stdio is wired: podman's `-t` and `-i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stdio {
    /// A pty (crun's `process.terminal`).
    pub tty: bool,
    /// Console input is forwarded to the container.
    pub interactive: bool,
}

impl Stdio {
    pub fn of(args: &b2c_cmdline::ContainerArgs) -> Stdio {
        Stdio {
            tty: args.tty,
            interactive: args.interactive,
        }
    }
}

/// The one file descriptor crun sends over its `--console-socket`: the
/// pty master.
pub fn receive_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    // Extra ones (there are none) close as `received` drops.
    received.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the console socket message carried no file descriptor",
        )
    })
}

/// Copies the container's output to `out`, and `input` (console → container)
/// while the container's side is open; [`Relay::finish`] drains and stops it.
pub struct Relay {
    thread: Option<JoinHandle<()>>,
    /// Closing it (a pipe's write end) tells the thread to drain and end.
    stop: Option<OwnedFd>,
}

/// One direction of a relay: read `from`, write `to`.
pub struct Stream {
    pub from: OwnedFd,
    pub to: OwnedFd,
}

impl Relay {
    /// Starts relaying `output` (the pty master or the pipe of stdout and
    /// stderr) and, if any, `input`, on a thread of its own.
    pub fn start(output: Stream, input: Option<Stream>) -> io::Result<Relay> {
        let (stop_read, stop_write) = nix::unistd::pipe().map_err(io::Error::from)?;
        let thread = std::thread::Builder::new()
            .name("console-relay".into())
            .spawn(move || relay(output, input, stop_read))?;
        Ok(Relay {
            thread: Some(thread),
            stop: Some(stop_write),
        })
    }

    /// Once the container ended: copies what is still pending, then stops
    /// (a process outside the container may hold the pty open forever).
    pub fn finish(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const CHUNK: usize = 64 * 1024;

fn relay(output: Stream, input: Option<Stream>, stop: OwnedFd) {
    let mut input = input;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut fds = vec![
            PollFd::new(output.from.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(i) = &input {
            fds.push(PollFd::new(i.from.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let ready = |fd: &PollFd| {
            fd.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (out_ready, stopped) = (ready(&fds[0]), ready(&fds[1]));
        let in_ready = fds.get(2).is_some_and(ready);
        drop(fds);
        if out_ready && !copy_once(&output.from, &output.to, &mut buf) {
            // The container's side is closed: everything was copied.
            return;
        }
        if in_ready {
            if let Some(i) = &input {
                if !copy_once(&i.from, &i.to, &mut buf) {
                    // Console input ended: the container sees EOF.
                    input = None;
                }
            }
        }
        if stopped {
            drain(&output.from, &output.to, &mut buf);
            return;
        }
    }
}

/// One read and its write; false at EOF or on an error (a pty master
/// reads EIO once every slave is closed).
fn copy_once(from: &OwnedFd, to: &OwnedFd, buf: &mut [u8]) -> bool {
    let n = loop {
        match nix::unistd::read(from.as_fd(), buf) {
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) | Ok(0) => return false,
            Ok(n) => break n,
        }
    };
    write_all(to.as_fd(), &buf[..n]);
    true
}

/// What is readable now, without waiting.
fn drain(from: &OwnedFd, to: &OwnedFd, buf: &mut [u8]) {
    loop {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let readable = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if !readable || !copy_once(from, to, buf) {
            return;
        }
    }
}

fn write_all(to: BorrowedFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(to, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            // The console is gone: nothing more can be shown.
            Err(_) => return,
        }
    }
}

/// The console in raw mode while a container's pty takes the input (its
/// own line discipline echoes and edits), restored when dropped, as podman
/// does with its terminal.
pub struct RawConsole {
    fd: OwnedFd,
    saved: Termios,
}

impl RawConsole {
    /// None when `fd` is not a terminal.
    pub fn enter(fd: BorrowedFd) -> Option<RawConsole> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Keep the output processing: b2c's own lines still end in CR LF.
        raw.output_flags = saved.output_flags;
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawConsole {
            fd: fd.try_clone_to_owned().ok()?,
            saved,
        })
    }
}

impl Drop for RawConsole {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::pty::Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, nix::pty::Winsize);

/// The console's window size onto the container's pty, as podman does
/// when it attaches; nothing when the console is not a terminal.
pub fn copy_window_size(console: BorrowedFd, pty: BorrowedFd) {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: both ioctls read or write one Winsize.
    unsafe {
        if get_winsize(console.as_raw_fd(), &mut size).is_ok() && size.ws_row > 0 {
            let _ = set_winsize(pty.as_raw_fd(), &size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use nix::sys::socket::{sendmsg, ControlMessage};

    #[test]
    fn the_fd_crun_sends_is_received() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let fds = [r.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(b"x")];
        sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        drop(r);
        let got = receive_fd(&b).unwrap();
        // The received descriptor is the pipe's read end.
        nix::unistd::write(&w, b"through").unwrap();
        drop(w);
        let mut text = String::new();
        std::fs::File::from(got).read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
        // A message without a descriptor is an error, not a hang.
        sendmsg::<()>(a.as_raw_fd(), &iov, &[], MsgFlags::empty(), None).unwrap();
        assert!(receive_fd(&b).is_err());
    }

    /// What a program sees on a pty's slave: a terminal; what it writes
    /// reaches the relay's output, and input typed on the console reaches
    /// it.
    #[test]
    fn a_pty_is_relayed_both_ways_until_its_slave_closes() {
        let pty = nix::pty::openpty(None, None).unwrap();
        assert!(nix::unistd::isatty(pty.slave.as_fd()).unwrap());
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let master_in = pty.master.try_clone().unwrap();
        let relay = Relay::start(
            Stream {
                from: pty.master,
                to: out_w,
            },
            Some(Stream {
                from: in_r,
                to: master_in,
            }),
        )
        .unwrap();
        // Console → container: the slave reads what was typed.
        nix::unistd::write(&in_w, b"typed\n").unwrap();
        let mut slave = std::fs::File::from(pty.slave);
        let mut line = [0u8; 6];
        slave.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"typed\n");
        // Container → console.
        slave.write_all(b"output").unwrap();
        drop(slave);
        // The slave closed: the relay ends by itself, having copied all.
        relay.finish();
        let mut text = String::new();
        std::fs::File::from(out_r)
            .read_to_string(&mut text)
            .unwrap();
        // The pty echoes input (ECHO) and maps NL to CR NL on output.
        assert!(text.ends_with("output"), "{text:?}");
        assert!(text.contains("typed"), "{text:?}");
    }

    #[test]
    fn finish_drains_then_stops_while_a_writer_remains() {
        let (from_r, from_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let relay = Relay::start(
            Stream {
                from: from_r,
                to: out_w,
            },
            None,
        )
        .unwrap();
        nix::unistd::write(&from_w, b"last words").unwrap();
        // `from_w` stays open (a process outside the container holding
        // it): finish still returns, after copying what was written.
        relay.finish();
        drop(from_w);
        let mut text = String::new();
        std::fs::File::from(out_r)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "last words");
    }

    #[test]
    fn raw_mode_is_restored() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        {
            let _raw = RawConsole::enter(pty.slave.as_fd()).unwrap();
            let now = termios::tcgetattr(pty.slave.as_fd()).unwrap();
            assert!(!now.local_flags.contains(termios::LocalFlags::ECHO));
        }
        let after = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        assert_eq!(before.local_flags, after.local_flags);
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(
            RawConsole::enter(r.as_fd()).is_none(),
            "a pipe is no terminal"
        );
    }

    #[test]
    fn the_window_size_follows_the_console() {
        let console = nix::pty::openpty(None, None).unwrap();
        let container = nix::pty::openpty(None, None).unwrap();
        let size = nix::pty::Winsize {
            ws_row: 42,
            ws_col: 132,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        unsafe { set_winsize(console.slave.as_raw_fd(), &size).unwrap() };
        copy_window_size(console.slave.as_fd(), container.master.as_fd());
        let mut got = nix::pty::Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        unsafe { get_winsize(container.slave.as_raw_fd(), &mut got).unwrap() };
        assert_eq!((got.ws_row, got.ws_col), (42, 132));
    }
}
