//! Booting QEMU on a TestNet's tap and reading its serial console.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::net::TestNet;
use crate::{tail, Arch, Context, Error, Result};

const STATUS_LINE: &str = "Execution is over, pipeline status: ";
const POWEROFF_LINE: &str = "It's now safe to turn off your computer";
const REBOOT_LINE: &str = "Rebooting the computer";

/// What every x86_64 boot under TCG adds to the kernel command line, for
/// the emulation's sake, not b2c's:
/// - `no_timer_check`: on a loaded host the kernel's IO-APIC timer check
///   can fail and panic the boot before /init runs;
/// - `acpi=noirq`: PCI interrupts routed by the chipset's table, not by
///   ACPI's interrupt link objects, whose AML QEMU's TCG interprets slowly:
///   enabling the two virtio devices' links took 0.4 s of `virtio_pci`'s
///   0.48 s probe (0.08 s without). Hardware runs that AML natively;
/// - `cgroup.memory=nokmem`: crun's first memory cgroup turns on the
///   kernel's memory accounting, a static key the kernel patches into
///   `kmem_cache_alloc` while the other CPU may run it. Under QEMU 7.2's
///   multi-threaded TCG both vCPUs then spun at the patched instruction
///   (soft lockups, the boot hung: once in 16 boots with Debian's
///   6.1.0-57). Memory limits still hold; only kernel objects go
///   unaccounted.
pub const TCG_KERNEL_ARGS: &str = "no_timer_check acpi=noirq cgroup.memory=nokmem";

pub struct BootOptions {
    /// Names the console log: `target/qemu-tests/logs/<name>.log`
    /// (`<name>-aarch64.log` on arm64).
    pub name: String,
    /// The machine QEMU emulates: [`Arch::current`] unless set. `kernel`
    /// and `initramfs` must be built for it.
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Appended to `console=ttyS0 panic=-1` and [`TCG_KERNEL_ARGS`]
    /// (x86_64) or `console=ttyAMA0 panic=-1` (aarch64).
    pub append: String,
    /// QEMU is killed after this long; the boot then has `exited == false`.
    /// Counted from QEMU's start, not from waiting for a free slot.
    pub timeout: Duration,
    pub extra_qemu_args: Vec<String>,
    /// The QEMU model of the one NIC, on the test network's tap (netdev
    /// `n0`); `usb-net` comes with an xHCI controller of its own; `none`
    /// leaves `n0` for a device added later ([`Self::monitor_when`]).
    pub nic: String,
    /// Also copy the console to our stdout as it comes, for interactive use.
    pub echo: bool,
    /// Typed on the serial console once a line containing `.0` appears,
    /// e.g. to answer a shell.
    pub answer: Option<(String, String)>,
    /// QEMU is killed (SIGKILL, by pid) as soon as a console line contains
    /// this: a power cut at a chosen moment. The guest gets no chance to
    /// flush anything; what QEMU already wrote to a disk image stays. The
    /// boot then has `exited == false` and [`Boot::killed_on`] set.
    pub kill_when: Option<String>,
    /// QEMU is killed (SIGKILL) this long after it started, if it still
    /// runs: a power cut at an arbitrary moment ([`Boot::killed_on`] then
    /// says `after N s`).
    pub kill_after: Option<Duration>,
    /// Each `.1` is sent to QEMU's monitor (HMP, on a unix socket) once a
    /// console line contains its `.0`: a key or a button pressed at a
    /// chosen moment, e.g. `sendkey ctrl-alt-delete`. Each pair fires at
    /// most once; several may fire on the same line, in order.
    pub monitor_when: Vec<(String, String)>,
    /// More initramfs archives, concatenated after `initramfs` as a boot
    /// loader does with several `initrd` lines (firmware, modules).
    pub extra_initrds: Vec<PathBuf>,
    /// Boot as a netbooted machine does: no `-kernel`, `-initrd` or
    /// `-append`; the BIOS runs the NIC's iPXE ROM, which asks DHCP what
    /// to boot (see [`crate::NetOptions::netboot`]). `kernel`,
    /// `initramfs` and `append` are then unused.
    pub netboot: bool,
    /// The boot spends much of its time waiting on purpose (an outage the
    /// test makes, a timeout it runs into): it may take the slot kept for
    /// such boots (one at a time) beside the CPU slots, so that its idle
    /// guest does not keep a busy one waiting (see [`Slots`]).
    pub waits: bool,
}

impl BootOptions {
    /// The default kernel and initramfs, 180 s (TCG is slow), no echo.
    pub fn new(name: &str, append: &str) -> BootOptions {
        BootOptions {
            name: name.into(),
            arch: Arch::current(),
            kernel: crate::default_kernel(),
            initramfs: crate::default_initramfs(),
            append: append.into(),
            timeout: Duration::from_secs(180),
            extra_qemu_args: Vec::new(),
            nic: "virtio-net-pci".into(),
            echo: false,
            answer: None,
            kill_when: None,
            kill_after: None,
            monitor_when: Vec::new(),
            extra_initrds: Vec::new(),
            netboot: false,
            waits: false,
        }
    }

    /// Attaches a raw disk image as the next virtio disk: the first is
    /// `/dev/vda`, the second `/dev/vdb`…
    pub fn with_disk(self, image: impl AsRef<Path>) -> BootOptions {
        self.with_disk_on(DiskBus::Virtio, image)
    }

    /// Attaches a raw disk image behind a controller of its own of that
    /// kind.
    pub fn with_disk_on(mut self, bus: DiskBus, image: impl AsRef<Path>) -> BootOptions {
        // QEMU's option syntax escapes a comma by doubling it.
        let file = image.as_ref().display().to_string().replace(',', ",,");
        // Unique within this command line.
        let n = self.extra_qemu_args.len();
        let drive = |iface: &str| format!("file={file},if={iface},format=raw,id=disk{n}");
        let args: Vec<String> = match bus {
            DiskBus::Virtio => vec!["-drive".into(), drive("virtio")],
            DiskBus::Nvme => vec![
                "-drive".into(),
                drive("none"),
                "-device".into(),
                format!("nvme,drive=disk{n},serial=b2c{n}"),
            ],
            DiskBus::Ahci => vec![
                "-drive".into(),
                drive("none"),
                "-device".into(),
                format!("ahci,id=ahci{n}"),
                "-device".into(),
                format!("ide-hd,drive=disk{n},bus=ahci{n}.0"),
            ],
            DiskBus::Usb => vec![
                "-drive".into(),
                drive("none"),
                "-device".into(),
                format!("qemu-xhci,id=xhci{n}"),
                "-device".into(),
                format!("usb-storage,drive=disk{n},bus=xhci{n}.0"),
            ],
            DiskBus::Sd => vec![
                "-drive".into(),
                drive("none"),
                "-device".into(),
                format!("sdhci-pci,id=sdhci{n}"),
                "-device".into(),
                // Its bus is named `sd-bus` whatever the id: left to QEMU.
                format!("sd-card,drive=disk{n}"),
            ],
            DiskBus::VirtioScsi => vec![
                "-drive".into(),
                drive("none"),
                "-device".into(),
                format!("virtio-scsi-pci,id=scsi{n}"),
                "-device".into(),
                format!("scsi-hd,drive=disk{n},bus=scsi{n}.0"),
            ],
        };
        self.extra_qemu_args.extend(args);
        self
    }
}

/// The disk controllers QEMU emulates and Debian's kernel drives: the
/// storage of real test machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk: `/dev/vda`.
    Virtio,
    /// NVMe: `/dev/nvme0n1`.
    Nvme,
    /// AHCI SATA: `/dev/sda`.
    Ahci,
    /// A USB stick on an xHCI controller: `/dev/sda`.
    Usb,
    /// An SD card on an SDHCI PCI host: `/dev/mmcblk0`.
    Sd,
    /// virtio-scsi: `/dev/sda`.
    VirtioScsi,
}

/// The QEMU devices of the one NIC, on netdev `n0`: a PCI NIC model
/// (`e1000`, `rtl8139`…), `usb-net` behind an xHCI controller of its
/// own, or `none` (for a NIC plugged in later through the monitor).
fn nic_args(nic: &str) -> Vec<String> {
    match nic {
        "none" => Vec::new(),
        "usb-net" => vec![
            "-device".into(),
            "qemu-xhci,id=nicxhci".into(),
            "-device".into(),
            "usb-net,netdev=n0,bus=nicxhci.0".into(),
        ],
        model => vec!["-device".into(), format!("{model},netdev=n0")],
    }
}

#[derive(Debug)]
pub struct Boot {
    /// The serial console, one `\n` per line (the `\r`s removed).
    pub console: String,
    /// QEMU exited by itself (the guest powered off or rebooted) rather
    /// than being killed at the timeout or by [`BootOptions::kill_when`].
    pub exited: bool,
    /// The console line that matched [`BootOptions::kill_when`], if QEMU
    /// was killed on it.
    pub killed_on: Option<String>,
    pub elapsed: Duration,
    /// From QEMU's start to the pipeline status line, when there was one:
    /// the boot time users wait for.
    pub status_at: Option<Duration>,
    pub log_path: PathBuf,
}

impl Boot {
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.console.lines()
    }

    /// A line that ends with `text`, as CI matches the console lines: an
    /// uptime stamp or other prefix is allowed before it.
    pub fn has_line(&self, text: &str) -> bool {
        self.lines().any(|line| line.trim_end().ends_with(text))
    }

    /// The kernel modules b2c says it loaded, from its `kernel modules:
    /// loaded a, b` lines (and the hot-plug's `kernel modules: loaded a, b
    /// for usb 1-1:1.0`), in order.
    pub fn loaded_modules(&self) -> Vec<&str> {
        self.lines_containing("]: kernel modules: loaded ")
            .filter_map(|line| line.split_once("kernel modules: loaded ").map(|(_, m)| m))
            .map(|list| list.split_once(" for ").map_or(list, |(list, _)| list))
            .flat_map(|list| list.split(", "))
            .map(str::trim)
            .collect()
    }

    /// Lines containing `text` anywhere.
    pub fn lines_containing<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a str> {
        self.lines().filter(move |line| line.contains(text))
    }

    /// What follows `marker` on each line that has it. Make the marker
    /// something the guest computes (`$((6*7))`), so that the kernel's echo
    /// of its command line cannot match.
    pub fn after_marker(&self, marker: &str) -> Vec<&str> {
        self.lines()
            .filter_map(|line| line.split_once(marker))
            .map(|(_, rest)| rest.trim_end())
            .collect()
    }

    /// N from the last `Execution is over, pipeline status: N`.
    pub fn status(&self) -> Option<i32> {
        self.lines().rev().find_map(|line| {
            let (_, n) = line.trim_end().rsplit_once(STATUS_LINE)?;
            n.parse().ok()
        })
    }

    /// The guest said it is powering off, and QEMU then exited by itself.
    pub fn powered_off(&self) -> bool {
        self.exited && self.has_line(POWEROFF_LINE)
    }

    /// The guest said it is rebooting, and QEMU then exited by itself
    /// (`-no-reboot` turns a guest reboot into QEMU's exit).
    pub fn rebooted(&self) -> bool {
        self.exited && self.has_line(REBOOT_LINE)
    }

    pub fn error_lines(&self) -> Vec<&str> {
        self.lines_containing("ERROR: ").collect()
    }
}

/// For assertion messages: where the log is and how the boot ended.
impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (&self.killed_on, self.exited) {
            (Some(line), _) => format!("QEMU killed on the console line {line:?}"),
            (None, true) => "QEMU exited by itself".to_string(),
            (None, false) => "QEMU killed at the timeout".to_string(),
        };
        writeln!(
            f,
            "{how} after {:.1} s; console log: {}",
            self.elapsed.as_secs_f64(),
            self.log_path.display()
        )?;
        writeln!(f, "--- last console lines ---")?;
        write!(f, "{}", tail(&self.console, 40))
    }
}

/// TCG is CPU-bound: more guests than cores only make each one slower,
/// until parallel tests hit their timeouts. So boots wait for a slot:
/// `$B2C_QEMU_JOBS` of them, by default one per two cores (`-smp 2`).
/// A boot that mostly waits ([`BootOptions::waits`]: a 20 s DHCP outage,
/// a job run into its timeout) may also take the one slot kept for such
/// boots: its idle guest then runs beside a busy one rather than holding
/// up every other boot for its whole wait.
struct Slots {
    /// CPU slots taken, and whether the waiting boots' slot is.
    used: Mutex<(usize, bool)>,
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    used: Mutex::new((0, false)),
    freed: Condvar::new(),
};

/// Which slot a boot holds.
enum Slot {
    Cpu,
    Waiting,
}

impl Slot {
    fn acquire(waits: bool) -> Slot {
        let max = std::env::var("B2C_QEMU_JOBS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2))
            .max(1);
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if waits && !used.1 {
                used.1 = true;
                return Slot::Waiting;
            }
            if used.0 < max {
                used.0 += 1;
                return Slot::Cpu;
            }
            used = SLOTS.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        match self {
            Slot::Cpu => used.0 -= 1,
            Slot::Waiting => used.1 = false,
        }
        // Waiters of both kinds wait on the same condition.
        SLOTS.freed.notify_all();
    }
}

/// Kills QEMU if the boot is abandoned halfway (a panic, an error).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(crate) fn boot(net: &TestNet, opts: &BootOptions) -> Result<Boot> {
    for (what, path) in [("kernel", &opts.kernel), ("initramfs", &opts.initramfs)] {
        if !path.is_file() && !opts.netboot {
            return Err(Error::new(format!(
                "no {what} at {}: run `make initramfs` (or set B2C_KERNEL / B2C_INITRAMFS)",
                path.display()
            )));
        }
    }
    let logs = crate::output_dir().join("logs");
    std::fs::create_dir_all(&logs).context(|| format!("create {}", logs.display()))?;
    let log_path = match opts.arch {
        Arch::X86_64 => logs.join(format!("{}.log", opts.name)),
        arch => logs.join(format!("{}-{arch}.log", opts.name)),
    };
    let mut log =
        std::fs::File::create(&log_path).context(|| format!("create {}", log_path.display()))?;

    let mut monitor = Monitor::new(&opts.monitor_when)?;
    let mut cmd = net.command(opts.arch.qemu());
    cmd.args(["-accel", "tcg"])
        .args(opts.arch.qemu_machine())
        .args(["-m", "1024", "-smp", "2", "-no-reboot"])
        // Only what we ask for: the serial console on stdout, no monitor
        // that could read a terminal (one on a socket when asked), no
        // default NIC.
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"]);
    if opts.netboot {
        if opts.arch != Arch::X86_64 {
            return Err(Error::new(format!(
                "netboot: only x86_64 has a firmware with iPXE here, not {}",
                opts.arch
            )));
        }
        // The firmware boots from the network: the NIC's option ROM.
        cmd.args(["-boot", "n"]);
    } else {
        let initrd = concatenated_initrd(net, opts)?;
        let console = opts.arch.console();
        let tcg = match opts.arch {
            Arch::X86_64 => format!(" {TCG_KERNEL_ARGS}"),
            Arch::Aarch64 => String::new(),
        };
        cmd.arg("-kernel")
            .arg(&opts.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!("console={console} panic=-1{tcg} {}", opts.append));
    }
    cmd.args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(nic_args(&opts.nic))
        .args(["-device", "virtio-rng-pci"])
        .args(monitor.as_ref().map(Monitor::qemu_args).unwrap_or_default())
        .args(&opts.extra_qemu_args)
        .stdin(if opts.answer.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let asked = Instant::now();
    let slot = Slot::acquire(opts.waits);
    let start = Instant::now();
    let mut qemu = KillOnDrop(
        cmd.spawn()
            .context(|| format!("cannot start {}", opts.arch.qemu()))?,
    );
    let stdout = qemu.0.stdout.take().expect("piped");
    let mut stderr = qemu.0.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            if tx
                .send(text.trim_end_matches(['\r', '\n']).to_string())
                .is_err()
            {
                break;
            }
            line.clear();
        }
    });

    let mut deadline = start + opts.timeout;
    let mut console = String::new();
    let mut exited = true;
    let mut status_at = None;
    let mut killed_on = None;
    let kill_at = opts.kill_after.map(|d| start + d);
    loop {
        let wait_until = match kill_at {
            Some(at) if exited && killed_on.is_none() => at.min(deadline),
            _ => deadline,
        };
        let line = match rx.recv_timeout(wait_until.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout)
                if exited && kill_at.is_some_and(|at| Instant::now() >= at) =>
            {
                let _ = qemu.0.kill();
                exited = false;
                let note = format!("after {:.1} s", start.elapsed().as_secs_f64());
                let _ = writeln!(log, "--- qemu-tests: QEMU killed {note} (kill_after) ---");
                killed_on = Some(note);
                deadline = Instant::now() + Duration::from_secs(10);
                continue;
            }
            Err(RecvTimeoutError::Timeout) if exited => {
                exited = false;
                let _ = qemu.0.kill();
                // Keep reading: the rest of the pipe, then end of file.
                deadline = Instant::now() + Duration::from_secs(10);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => break,
        };
        if let Some((trigger, text)) = &opts.answer {
            if line.contains(trigger.as_str()) {
                // Kept open: QEMU may treat the end of its input as a hangup.
                if let Some(stdin) = qemu.0.stdin.as_mut() {
                    let _ = stdin.write_all(text.as_bytes());
                    let _ = stdin.flush();
                }
            }
        }
        let kill = exited
            && killed_on.is_none()
            && opts
                .kill_when
                .as_ref()
                .is_some_and(|trigger| line.contains(trigger.as_str()));
        if kill {
            let _ = qemu.0.kill();
            exited = false;
            killed_on = Some(line.clone());
            // The rest of the pipe, then end of file.
            deadline = Instant::now() + Duration::from_secs(10);
        }
        if opts.echo {
            println!("{line}");
        }
        // Written as it comes, so a hung boot still leaves its log.
        let _ = writeln!(log, "{line}");
        if let Some(monitor) = monitor.as_mut() {
            for note in monitor.on_line(&line) {
                let _ = writeln!(log, "--- qemu-tests: {note} ---");
            }
        }
        if kill {
            let _ = writeln!(
                log,
                "--- qemu-tests: QEMU killed on the line above (kill_when) ---"
            );
        }
        if status_at.is_none() && line.contains(STATUS_LINE) {
            status_at = Some(start.elapsed());
        }
        console.push_str(&line);
        console.push('\n');
    }
    let status = wait_bounded(&mut qemu.0)?;
    let elapsed = start.elapsed();
    let _ = writeln!(
        log,
        "--- qemu-tests: QEMU ran {:.1} s, after {:.1} s waiting for a{} slot ---",
        elapsed.as_secs_f64(),
        start.duration_since(asked).as_secs_f64(),
        match slot {
            Slot::Cpu => " CPU",
            Slot::Waiting => " waiting boot's",
        },
    );
    drop(slot);
    let stderr = stderr_reader.join().unwrap_or_default();
    if !stderr.is_empty() {
        let _ = write!(log, "--- qemu stderr ---\n{stderr}");
    }
    if exited && !status.success() {
        return Err(Error::new(format!(
            "qemu failed ({status}): {}\nconsole log: {}",
            tail(&stderr, 20),
            log_path.display()
        )));
    }
    Ok(Boot {
        console,
        exited,
        killed_on,
        elapsed,
        status_at,
        log_path,
    })
}

/// QEMU's human monitor on a unix socket, for [`BootOptions::monitor_when`].
struct Monitor {
    /// Holds the socket.
    dir: tempfile::TempDir,
    pending: Vec<(String, String)>,
    stream: Option<UnixStream>,
}

impl Monitor {
    fn new(actions: &[(String, String)]) -> Result<Option<Monitor>> {
        if actions.is_empty() {
            return Ok(None);
        }
        // Short: a socket's path is limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("b2c-qemu-monitor.")
            .tempdir()
            .context(|| "create a temp dir for the monitor".to_string())?;
        Ok(Some(Monitor {
            dir,
            pending: actions.to_vec(),
            stream: None,
        }))
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("monitor.sock")
    }

    fn qemu_args(&self) -> Vec<String> {
        // Unix sockets are reached by path, also from outside the
        // namespace QEMU runs in. wait=off: QEMU boots without a client.
        vec![
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", self.socket().display()),
        ]
    }

    /// Sends the commands whose trigger `line` contains; returns what
    /// happened, for the console log.
    fn on_line(&mut self, line: &str) -> Vec<String> {
        let (now, later) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(trigger, _)| line.contains(trigger.as_str()));
        self.pending = later;
        now.into_iter()
            .map(|(_, command)| match self.send(&command) {
                Ok(()) => format!("sent `{command}` to the QEMU monitor"),
                Err(e) => format!("cannot send `{command}` to the QEMU monitor: {e}"),
            })
            .collect()
    }

    /// Sends `command` and waits (5 s at most) for QEMU's answer: an
    /// `Error` in it (a `device_add` QEMU refused) is an error here.
    fn send(&mut self, command: &str) -> std::io::Result<()> {
        if self.stream.is_none() {
            let mut stream = UnixStream::connect(self.socket())?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            // The greeting ends with the first prompt.
            read_to_prompt(&mut stream);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(format!("{command}\n").as_bytes())?;
        // The next prompt means QEMU has done it (or QEMU is gone: a
        // command that powers the machine off).
        let reply = read_to_prompt(stream);
        if reply.contains("Error") {
            return Err(std::io::Error::other(
                reply.replace("(qemu)", "").trim().to_string(),
            ));
        }
        Ok(())
    }
}

/// What the monitor says up to its next `(qemu)` prompt, its end of file
/// or 5 s of silence.
fn read_to_prompt(stream: &mut UnixStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("(qemu)") {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// The initramfs with [`BootOptions::extra_initrds`] after it, as one
/// file (QEMU's `-initrd` takes one): what a boot loader hands the kernel.
fn concatenated_initrd(net: &TestNet, opts: &BootOptions) -> Result<PathBuf> {
    if opts.extra_initrds.is_empty() {
        return Ok(opts.initramfs.clone());
    }
    let path = net.dir().join(format!("{}.initrd", opts.name));
    let mut out = std::fs::File::create(&path).context(|| format!("create {}", path.display()))?;
    for part in std::iter::once(&opts.initramfs).chain(&opts.extra_initrds) {
        let mut input = std::fs::File::open(part).context(|| format!("open {}", part.display()))?;
        std::io::copy(&mut input, &mut out).context(|| format!("copy {}", part.display()))?;
    }
    Ok(path)
}

/// Stdout closed, so QEMU is exiting: give it a moment, then kill it.
fn wait_bounded(child: &mut Child) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context(|| "wait for qemu".to_string())? {
            return Ok(status);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(console: &str, exited: bool) -> Boot {
        Boot {
            console: console.into(),
            exited,
            killed_on: None,
            elapsed: Duration::from_secs(1),
            status_at: None,
            log_path: "x.log".into(),
        }
    }

    #[test]
    fn parses_console_lines() {
        let b = boot(
            "[    0.000000] Kernel command line: console=ttyS0 b2c.run=\"sh -c 'echo M$((6*7)):x'\"\n\
             M42:hello \n\
             [12.345]: ERROR: b2c.run: unknown flag --x\n\
             [12.400]: Execution is over, pipeline status: 1\n\
             [12.500]: It's now safe to turn off your computer\n",
            true,
        );
        assert_eq!(b.status(), Some(1));
        assert!(b.powered_off());
        assert!(!b.rebooted());
        assert_eq!(b.after_marker("M42:"), ["hello"]);
        assert_eq!(
            b.error_lines(),
            ["[12.345]: ERROR: b2c.run: unknown flag --x"]
        );
        assert!(b.has_line("pipeline status: 1"));
        assert!(!b.has_line("Execution is over"));
    }

    #[test]
    fn loaded_modules_at_start_and_hot_plugged() {
        let b = boot(
            "[    2.341]: kernel modules: loaded virtio_pci, xhci_pci, overlay\n\
             [    3.100]: kernel modules: loaded usbnet, cdc_ether for usb 1-1:1.0\n",
            true,
        );
        assert_eq!(
            b.loaded_modules(),
            ["virtio_pci", "xhci_pci", "overlay", "usbnet", "cdc_ether"]
        );
    }

    #[test]
    fn no_verdict_without_the_lines() {
        let b = boot(
            "Execution is over, pipeline status: \nIt's now safe to turn off your computer\n",
            false,
        );
        assert_eq!(b.status(), None);
        assert!(!b.powered_off(), "killed at the timeout is not a power-off");
    }

    /// A listener stands in for QEMU's side of the socket.
    #[test]
    fn monitor_commands_go_out_once_on_their_lines() {
        let actions = [
            ("STARTED", "sendkey ctrl-alt-delete"),
            ("stopping", "sendkey ctrl-alt-delete"),
            ("STARTED", "info status"),
        ]
        .map(|(t, c)| (t.to_string(), c.to_string()));
        let mut monitor = Monitor::new(&actions).unwrap().unwrap();
        assert!(Monitor::new(&[]).unwrap().is_none());
        let args = monitor.qemu_args();
        assert_eq!(args[0], "-monitor");
        assert!(args[1].starts_with("unix:/") && args[1].ends_with(",server=on,wait=off"));
        let listener = std::os::unix::net::UnixListener::bind(monitor.socket()).unwrap();

        assert!(monitor.on_line("booting").is_empty());
        assert_eq!(
            monitor.on_line("[1.0]: STARTED-5"),
            [
                "sent `sendkey ctrl-alt-delete` to the QEMU monitor",
                "sent `info status` to the QEMU monitor"
            ]
        );
        assert!(monitor.on_line("STARTED-5 again").is_empty(), "fired twice");
        assert_eq!(monitor.on_line("stopping").len(), 1);
        drop(monitor);

        let mut received = String::new();
        let (mut stream, _) = listener.accept().unwrap();
        stream.read_to_string(&mut received).unwrap();
        assert_eq!(
            received,
            "sendkey ctrl-alt-delete\ninfo status\nsendkey ctrl-alt-delete\n"
        );
    }

    #[test]
    fn reboot_is_told_apart_from_power_off() {
        let console = "[9.000]: Execution is over, pipeline status: 129\n\
                       [9.100]: Rebooting the computer\n";
        let b = boot(console, true);
        assert!(b.rebooted());
        assert!(!b.powered_off());
        assert!(!boot(console, false).rebooted(), "killed at the timeout");
    }
}
