//! One private network namespace with a tap device for QEMU, dnsmasq
//! (DHCP + DNS), chronyd (NTP), the registry (HTTP and HTTPS) and a file
//! server over plain HTTP (busybox httpd) and HTTPS (openssl s_server).

use std::fs::File;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::qemu::{self, Boot, BootOptions};
use crate::{images, read_tail, run, Context, Error, Result};

/// The host side of the tap: gateway, DNS, NTP server and registry.
pub const GATEWAY: &str = "10.99.0.1";
pub const REGISTRY_HTTP: &str = "10.99.0.1:5000";
/// dnsmasq resolves `registry.test`; the server certificate names it.
pub const REGISTRY_HTTPS: &str = "registry.test:5443";
/// The registry that wants a user name and password (HTTP Basic, checked
/// against a bcrypt htpasswd file): [`TestNet::start_auth_registry`]. It
/// serves the same images as the others.
pub const REGISTRY_AUTH: &str = "10.99.0.1:5002";
pub const REGISTRY_AUTH_USER: &str = "b2c-user";
/// Never to appear on a guest's console.
pub const REGISTRY_AUTH_PASSWORD: &str = "pw-9f4e-not-to-be-shown";
/// Serves what [`TestNet::serve_file`] put there, for `b2c.extra_args_url`
/// and `--env-file URL`.
pub const FILE_SERVER: &str = "10.99.0.1:8080";
/// The same files over HTTPS, with the registry's certificate (test CA).
pub const HTTPS_FILE_SERVER: &str = "10.99.0.1:8443";
/// The S3 server of [`TestNet::start_s3`] (s3s-fs: SigV4 checked, objects
/// stored as plain files under [`TestNet::s3_bucket`]).
pub const S3_SERVER: &str = "10.99.0.1:9000";
/// Its keys.
pub const S3_ACCESS_KEY: &str = "b2c-dut";
pub const S3_SECRET_KEY: &str = "Xk3pQ9sLr2Tz-test";

const NS_PREFIX: &str = "b2c-t-";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a [`TestNet`] offers beyond the fixed services.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// dnsmasq answers DHCP. Without it, dnsmasq still serves DNS, and a
    /// guest has an address only if its command line configured one
    /// (`b2c.iface`, `ip=`): a boot that works then proves that it did.
    pub dhcp: bool,
    /// A netboot server too: DHCP hands iPXE clients (QEMU's NIC ROMs)
    /// [`NETBOOT_SCRIPT_URL`], dnsmasq resolves `boot.example` and
    /// `registry.example` to the gateway, and an HTTP server on port 80
    /// serves [`TestNet::serve_boot_file`]'s files, as a farm's boot
    /// server does.
    pub netboot: bool,
    /// With `netboot`: DHCP sends iPXE to `pxelinux.0` by TFTP instead
    /// (dnsmasq's TFTP server serves the boot server's files), as a farm
    /// booting SYSLINUX does.
    pub pxelinux: bool,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            dhcp: true,
            netboot: false,
            pxelinux: false,
        }
    }
}

/// Where DHCP sends iPXE for its script, with [`NetOptions::netboot`].
pub const NETBOOT_SCRIPT_URL: &str = "http://boot.example/boot.ipxe";

/// Each TestNet owns a namespace `b2c-t-<pid>-<n>`, so tests can run in
/// parallel threads with the same addresses. Dropping it (also while
/// unwinding from a failed assertion) stops what it started and deletes
/// the namespace.
pub struct TestNet {
    ns: String,
    dir: tempfile::TempDir,
    ca_cert: PathBuf,
    services: Vec<Service>,
    /// One QEMU per tap.
    boot_lock: Mutex<()>,
}

impl TestNet {
    /// With the default [`NetOptions`]: everything, DHCP included.
    pub fn start() -> Result<TestNet> {
        TestNet::start_with(&NetOptions::default())
    }

    pub fn start_with(options: &NetOptions) -> Result<TestNet> {
        crate::check_host()?;
        let layout = images::layout()?;
        let ca_cert = crate::ca_cert_path()?;
        sweep_stale_namespaces();

        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{ns}."))
            .tempdir()
            .context(|| "create a temp dir".to_string())?;
        run(
            Command::new("ip").args(["netns", "add", &ns]),
            "ip netns add",
        )?;
        // From here on, Drop cleans up whatever a failing step leaves.
        let mut net = TestNet {
            ns,
            dir,
            ca_cert,
            services: Vec::new(),
            boot_lock: Mutex::new(()),
        };
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", "tap0", "mode", "tap"],
            &["addr", "add", "10.99.0.1/24", "dev", "tap0"],
            &["link", "set", "tap0", "up"],
        ] {
            run(Command::new("ip").arg("-n").arg(&net.ns).args(args), "ip")?;
        }
        let (cert, key) = crate::ca::issue_server_cert(net.dir())?;
        if options.netboot {
            std::fs::create_dir(net.boot_dir())
                .context(|| format!("create {}", net.boot_dir().display()))?;
        }
        net.start_dnsmasq(options)?;
        net.start_chronyd()?;
        net.start_file_server()?;
        net.start_https_file_server(&cert, &key)?;
        if options.netboot {
            net.start_boot_server()?;
        }
        net.start_registry("registry-http", "10.99.0.1:5000", None)?;
        net.start_registry("registry-https", "10.99.0.1:5443", Some((&cert, &key)))?;
        // Both registries share one storage: pushing once serves both.
        for image in images::IMAGES {
            net.push(image, layout)?;
        }
        Ok(net)
    }

    fn push(&self, image: &images::TestImage, layout: &Path) -> Result<()> {
        run(
            self.command("skopeo")
                .args(["--insecure-policy", "--command-timeout", "120s"])
                .args(image.push_args(layout, REGISTRY_HTTP)),
            &format!("skopeo: push {}", image.name),
        )
        .map(drop)
    }

    /// Pushes [`images::BIG_IMAGE`] (≈ 60 MB), which other tests do not
    /// need; the first call in a process builds it.
    pub fn push_big_image(&self) -> Result<()> {
        self.push(&images::BIG, images::big_layout()?)
    }

    /// Pushes [`images::CI_TOOLS_IMAGE`] and [`images::CI_TELEGRAF_IMAGE`],
    /// the stand-ins for booting real CI lines.
    pub fn push_ci_images(&self) -> Result<()> {
        let layout = images::ci_layout()?;
        self.push(&images::CI_TOOLS, layout)?;
        self.push(&images::CI_TELEGRAF, layout)
    }

    /// Caps what reaches the guest (the tap's egress: downloads) at
    /// `bytes_per_second`, with a token bucket (`tc … tbf`); `None` lifts
    /// the cap. For tests that must catch a download in the middle
    /// however fast the host is.
    pub fn limit_download_rate(&self, bytes_per_second: Option<u64>) -> Result<()> {
        let mut tc = self.command("tc");
        tc.args(["qdisc"]);
        match bytes_per_second {
            Some(rate) => tc
                .args(["replace", "dev", "tap0", "root", "tbf", "rate"])
                .arg(format!("{}bit", rate * 8))
                .args(["burst", "64kb", "latency", "500ms"]),
            // Back to the default queueing; deleting it would fail.
            None if !self.download_qdisc()?.contains("tbf") => return Ok(()),
            None => tc.args(["del", "dev", "tap0", "root"]),
        };
        run(&mut tc, "tc qdisc").map(drop)
    }

    /// The queueing discipline on the guest's side, as `tc qdisc show`
    /// prints it.
    pub(crate) fn download_qdisc(&self) -> Result<String> {
        let out = run(
            self.command("tc").args(["qdisc", "show", "dev", "tap0"]),
            "tc qdisc show",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Makes dnsmasq deaf to DHCP (`true`) or hear it again (`false`), as a
    /// switch port that does not forward yet: a firewall rule inside the
    /// namespace drops what reaches UDP port 67. DNS is unaffected.
    pub fn block_dhcp(&self, blocked: bool) -> Result<()> {
        let rule = ["INPUT", "-p", "udp", "--dport", "67", "-j", "DROP"];
        run(
            self.command("iptables")
                .args(["-w", if blocked { "-I" } else { "-D" }])
                .args(rule),
            "iptables",
        )
        .map(drop)
    }

    /// How many DHCP packets the rule of [`TestNet::block_dhcp`] dropped
    /// so far (0 without the rule).
    pub fn dhcp_packets_dropped(&self) -> Result<u64> {
        let out = run(
            self.command("iptables")
                .args(["-w", "-L", "INPUT", "-v", "-n", "-x"]),
            "iptables -L",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP") && l.contains("udp dpt:67"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    /// Starts the registry at [`REGISTRY_AUTH`], which answers only to
    /// [`REGISTRY_AUTH_USER`] and [`REGISTRY_AUTH_PASSWORD`] (an htpasswd
    /// file made with `htpasswd -B`, bcrypt, as the registry requires).
    pub fn start_auth_registry(&mut self) -> Result<()> {
        let out = run(
            Command::new("htpasswd").args(["-nbB", REGISTRY_AUTH_USER, REGISTRY_AUTH_PASSWORD]),
            "htpasswd",
        )?;
        let htpasswd = self.dir().join("htpasswd");
        std::fs::write(&htpasswd, &out.stdout)
            .context(|| format!("write {}", htpasswd.display()))?;
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: b2c-tests\n    path: {}\n",
            htpasswd.display()
        );
        self.start_registry_with("registry-auth", REGISTRY_AUTH, None, &auth)
    }

    /// How many times a blob of `repository` (`b2c/busybox`, no tag) was
    /// downloaded so far, per the registries' access logs: see
    /// [`count_blob_downloads`].
    pub fn blob_downloads(&self, repository: &str) -> usize {
        count_blob_downloads(&self.registry_log(), repository)
    }

    /// The namespace's name, for `ip netns exec` by hand.
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Private to this TestNet, removed on drop: configs, logs, leases.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn registry_http(&self) -> &str {
        REGISTRY_HTTP
    }

    pub fn registry_https(&self) -> &str {
        REGISTRY_HTTPS
    }

    /// The PEM of the CA that signed the HTTPS registry's certificate.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        // A proxy from the environment would send registry traffic out of
        // the namespace, where 10.99.0.1 does not exist.
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Boots QEMU on this network's tap; one boot at a time.
    pub fn boot(&self, opts: &BootOptions) -> Result<Boot> {
        let _one_at_a_time = self.boot_lock.lock().unwrap_or_else(|e| e.into_inner());
        qemu::boot(self, opts)
    }

    /// Puts `contents` at `http://10.99.0.1:8080/<name>` (and
    /// `https://10.99.0.1:8443/<name>`, see [`TestNet::https_url`]) and
    /// returns the HTTP URL. Replacing a file between boots is fine; `name`
    /// is one path component.
    pub fn serve_file(&self, name: &str, contents: &str) -> Result<String> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(Error::new(format!(
                "serve_file: {name:?} is not a plain file name"
            )));
        }
        let path = self.www_dir().join(name);
        std::fs::write(&path, contents).context(|| format!("write {}", path.display()))?;
        Ok(format!("http://{FILE_SERVER}/{name}"))
    }

    /// Where the HTTPS file server serves what [`TestNet::serve_file`] put
    /// at `name`; its certificate is signed by the test CA.
    pub fn https_url(&self, name: &str) -> String {
        format!("https://{HTTPS_FILE_SERVER}/{name}")
    }

    /// The file server's log: one line per request, with its URL.
    pub fn file_server_log(&self) -> String {
        std::fs::read_to_string(self.log_path("httpd")).unwrap_or_default()
    }

    /// Both registries' logs (access log and application log), HTTP first.
    pub fn registry_log(&self) -> String {
        ["registry-http", "registry-https", "registry-auth"]
            .iter()
            .map(|name| std::fs::read_to_string(self.log_path(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Makes both registries unreachable (connections are refused).
    pub fn stop_registry(&mut self) {
        for service in &mut self.services {
            if service.name.starts_with("registry") {
                service.stop();
            }
        }
    }

    /// Processes started by this TestNet that are still running.
    pub fn pids(&mut self) -> Vec<u32> {
        self.services
            .iter_mut()
            .filter_map(|s| matches!(s.child.try_wait(), Ok(None)).then_some(s))
            .map(|s| s.child.id())
            .collect()
    }

    /// Starts s3s-fs (`make deps` installs it; `$B2C_S3S_FS` overrides)
    /// on [`S3_SERVER`], or starts it again after [`TestNet::stop_s3`]
    /// with the same objects.
    pub fn start_s3(&mut self) -> Result<()> {
        let root = self.s3_root();
        std::fs::create_dir_all(&root).context(|| format!("create {}", root.display()))?;
        let binary = s3s_fs_binary()?;
        let args = [
            "--host".to_string(),
            "10.99.0.1".into(),
            "--port".into(),
            "9000".into(),
            "--access-key".into(),
            S3_ACCESS_KEY.into(),
            "--secret-key".into(),
            S3_SECRET_KEY.into(),
            root.display().to_string(),
        ];
        self.spawn("s3", &binary.display().to_string(), &args)?;
        self.wait_ready("s3", || tcp_probe(9000))
    }

    /// Makes the S3 server unreachable (connections refused).
    pub fn stop_s3(&mut self) {
        for service in &mut self.services {
            if service.name == "s3" {
                service.stop();
            }
        }
        self.services.retain(|s| s.name != "s3");
    }

    /// Freezes the S3 server (SIGSTOP, by its pid) or lets it go on
    /// (SIGCONT): connections stay open and nothing is answered, so a
    /// transfer under way is held in its middle for as long as a test
    /// needs (the guest's read timeout is 30 s). `ip netns exec` execs
    /// the server, so the pid is the server's.
    pub fn pause_s3(&self, paused: bool) -> Result<()> {
        let service = self
            .services
            .iter()
            .find(|s| s.name == "s3")
            .ok_or_else(|| Error::new("pause_s3: the S3 server is not running"))?;
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        if unsafe { libc::kill(service.child.id() as libc::pid_t, signal) } != 0 {
            return Err(Error::new(format!(
                "pause_s3: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// The directory of a bucket (created): each object is the file at
    /// its key.
    pub fn s3_bucket(&self, name: &str) -> PathBuf {
        let dir = self.s3_root().join(name);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    fn s3_root(&self) -> PathBuf {
        self.dir().join("s3")
    }

    fn log_path(&self, service: &str) -> PathBuf {
        self.dir().join(format!("{service}.log"))
    }

    /// Puts a copy of `file` at `http://boot.example/<name>` (and in the
    /// TFTP root, with [`NetOptions::pxelinux`]) and returns that URL.
    /// `name` may have directories (`pxelinux.cfg/default`).
    pub fn serve_boot_file(&self, name: &str, file: &Path) -> Result<String> {
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
            return Err(Error::new(format!(
                "serve_boot_file: {name:?} is not a plain relative path"
            )));
        }
        let path = self.boot_dir().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
        }
        std::fs::copy(file, &path)
            .context(|| format!("copy {} to {}", file.display(), path.display()))?;
        Ok(format!("http://boot.example/{name}"))
    }

    /// The boot server's log: one line per request.
    pub fn boot_server_log(&self) -> String {
        std::fs::read_to_string(self.log_path("httpd-boot")).unwrap_or_default()
    }

    fn boot_dir(&self) -> PathBuf {
        self.dir().join("boot")
    }

    /// A second busybox httpd, on port 80 as boot servers are.
    fn start_boot_server(&mut self) -> Result<()> {
        let dir = self.boot_dir();
        let args = [
            "httpd".to_string(),
            "-f".into(),
            "-vv".into(),
            "-p".into(),
            format!("{GATEWAY}:80"),
            "-h".into(),
            dir.display().to_string(),
        ];
        self.spawn("httpd-boot", images::BUSYBOX, &args)?;
        self.wait_ready("httpd-boot", || tcp_probe(80))
    }

    fn www_dir(&self) -> PathBuf {
        self.dir().join("www")
    }

    fn start_dnsmasq(&mut self, options: &NetOptions) -> Result<()> {
        let d = self.dir().to_path_buf();
        let mut args: Vec<String> = vec![
            "-k".into(),
            // Without it, dnsmasq logs to syslog and we see nothing.
            "--log-facility=-".into(),
            "--conf-file=/dev/null".into(),
            "--interface=tap0".into(),
            "--bind-interfaces".into(),
            "--except-interface=lo".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--address=/registry.test/10.99.0.1".into(),
            // Answer AAAA with NODATA, not REFUSED: musl's resolver fails
            // the whole lookup (EAI_FAIL) when either answer is REFUSED.
            "--local=/registry.test/".into(),
            format!("--pid-file={}", d.join("dnsmasq.pid").display()),
            "--log-queries".into(),
        ];
        // Without a --dhcp-range dnsmasq does not even listen on port 67.
        if options.dhcp {
            args.extend(self.dhcp_args());
        }
        if options.netboot {
            args.extend(
                [
                    "--address=/boot.example/10.99.0.1",
                    "--address=/registry.example/10.99.0.1",
                    // iPXE says who it is with option 175: it gets the
                    // script's URL as its boot file name.
                    "--dhcp-match=set:ipxe,175",
                ]
                .map(String::from),
            );
            if options.pxelinux {
                args.extend([
                    "--dhcp-boot=tag:ipxe,pxelinux.0".to_string(),
                    "--enable-tftp".into(),
                    format!("--tftp-root={}", self.boot_dir().display()),
                    // The temp dir is root's only: no dropping to nobody.
                    "--user=root".into(),
                ]);
            } else {
                args.push(format!("--dhcp-boot=tag:ipxe,{NETBOOT_SCRIPT_URL}"));
            }
        }
        self.spawn("dnsmasq", "dnsmasq", &args)?;
        self.wait_ready("dnsmasq", || tcp_probe(53))
    }

    fn dhcp_args(&self) -> Vec<String> {
        let d = self.dir();
        vec![
            "--dhcp-range=10.99.0.10,10.99.0.50,255.255.255.0,1h".into(),
            "--dhcp-option=option:router,10.99.0.1".into(),
            "--dhcp-option=option:ntp-server,10.99.0.1".into(),
            "--dhcp-authoritative".into(),
            // Otherwise each new address is pinged for ~3 s before an offer.
            "--no-ping".into(),
            format!("--dhcp-leasefile={}", d.join("dnsmasq.leases").display()),
            "--log-dhcp".into(),
        ]
    }

    fn start_chronyd(&mut self) -> Result<()> {
        let d = self.dir().to_path_buf();
        let conf = d.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow 10.99.0.0/24\nbindaddress 10.99.0.1\ncmdport 0\n\
                 pidfile {}\ndriftfile {}\n",
                d.join("chronyd.pid").display(),
                d.join("chronyd.drift").display()
            ),
        )
        .context(|| format!("write {}", conf.display()))?;
        // -x: serve time without ever touching the host's clock.
        let args = [
            "-x".to_string(),
            "-d".into(),
            "-f".into(),
            conf.display().to_string(),
        ];
        self.spawn("chronyd", "chronyd", &args)?;
        self.wait_ready("chronyd", || sntp_query().map(|_| ()))
    }

    /// Debian's static busybox has httpd: no other server to install.
    fn start_file_server(&mut self) -> Result<()> {
        let www = self.www_dir();
        std::fs::create_dir(&www).context(|| format!("create {}", www.display()))?;
        let args = [
            "httpd".to_string(),
            // Foreground, so that it is our child to stop; -vv logs each
            // request's URL and response code to stderr, i.e. to its log.
            "-f".into(),
            "-vv".into(),
            "-p".into(),
            FILE_SERVER.into(),
            "-h".into(),
            www.display().to_string(),
        ];
        self.spawn("httpd", images::BUSYBOX, &args)?;
        self.wait_ready("httpd", || tcp_probe(8080))
    }

    /// openssl's `-WWW` mode: files relative to its working directory,
    /// one connection at a time, which is all a boot needs.
    fn start_https_file_server(&mut self, cert: &Path, key: &Path) -> Result<()> {
        let args = [
            "s_server".to_string(),
            "-WWW".into(),
            "-quiet".into(),
            "-accept".into(),
            HTTPS_FILE_SERVER.into(),
            "-cert".into(),
            cert.display().to_string(),
            "-key".into(),
            key.display().to_string(),
        ];
        self.spawn_in("https-files", "openssl", &args, &self.www_dir())?;
        self.wait_ready("https-files", || tcp_probe(8443))
    }

    fn start_registry(
        &mut self,
        name: &'static str,
        addr: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Result<()> {
        self.start_registry_with(name, addr, tls, "")
    }

    /// `extra`: more top-level configuration (`auth:`).
    fn start_registry_with(
        &mut self,
        name: &'static str,
        addr: &str,
        tls: Option<(&Path, &Path)>,
        extra: &str,
    ) -> Result<()> {
        let tls = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = self.dir().join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 health:\n  storagedriver:\n    enabled: false\n\
                 http:\n  addr: {addr}\n  secret: b2c-qemu-tests\n{tls}{extra}",
                self.dir().join("registry").display()
            ),
        )
        .context(|| format!("write {}", config.display()))?;
        self.spawn(
            name,
            "docker-registry",
            &["serve".into(), config.display().to_string()],
        )?;
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("addr has a port");
        self.wait_ready(name, move || tcp_probe(port))
    }

    fn spawn(&mut self, name: &'static str, program: &str, args: &[String]) -> Result<()> {
        self.spawn_in(name, program, args, Path::new("/"))
    }

    fn spawn_in(
        &mut self,
        name: &'static str,
        program: &str,
        args: &[String],
        cwd: &Path,
    ) -> Result<()> {
        let log_path = self.log_path(name);
        let log = File::create(&log_path).context(|| format!("create {}", log_path.display()))?;
        let log2 = log.try_clone().context(|| "dup a log fd".to_string())?;
        let child = self
            .command(program)
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .context(|| format!("{name}: cannot start {program}"))?;
        self.services.push(Service {
            name,
            child,
            log: log_path,
        });
        Ok(())
    }

    /// Polls `probe` inside the namespace until it succeeds, failing early
    /// if the last started service dies.
    fn wait_ready(
        &mut self,
        what: &str,
        probe: impl Fn() -> std::io::Result<()> + Sync,
    ) -> Result<()> {
        let service = self.services.last_mut().expect("a service was started");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(Error::new(format!(
                    "{what} did not start ({status}); its log {}:\n{}",
                    service.log.display(),
                    read_tail(&service.log, 20)
                )));
            }
            let last = match in_netns(&self.ns, &probe)? {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::new(format!(
                    "{what} not ready after {READY_TIMEOUT:?} ({last}); its log {}:\n{}",
                    service.log.display(),
                    read_tail(&service.log, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs();
        }
        // Reverse start order: the registries first, dnsmasq last.
        while let Some(mut service) = self.services.pop() {
            service.stop();
        }
        if let Err(e) = run(
            Command::new("ip").args(["netns", "delete", &self.ns]),
            "ip netns delete",
        ) {
            eprintln!("qemu-tests: {e}");
        }
    }
}

impl TestNet {
    /// The temp dir goes away with the TestNet; after a failure its logs
    /// are what one wants to read.
    fn keep_logs(&self) {
        let logs = crate::output_dir().join("logs");
        let _ = std::fs::create_dir_all(&logs);
        for service in &self.services {
            let kept = logs.join(format!("{}-{}.log", self.ns, service.name));
            if std::fs::copy(&service.log, &kept).is_ok() {
                eprintln!(
                    "qemu-tests: {} log kept in {}",
                    service.name,
                    kept.display()
                );
            }
        }
    }
}

struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// SIGTERM, then SIGKILL if it lingers; always reaped.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        // One that a test paused would only see its SIGTERM once continued.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("qemu-tests: {} ignored SIGTERM, killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts the access-log lines of `log` (see [`TestNet::registry_log`])
/// for a `GET` of a blob of `repository` that answered 200 or 206: every
/// download, whole or partial, but not `HEAD`s, redirects or failures.
/// The lines look like `10.99.0.23 - - [date] "GET
/// /v2/b2c/busybox/blobs/sha256:… HTTP/1.1" 200 1100000 "" "agent"`.
pub fn count_blob_downloads(log: &str, repository: &str) -> usize {
    let request = format!("\"GET /v2/{repository}/blobs/sha256:");
    log.lines()
        .filter_map(|line| line.split_once(&request).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once("\" ").map(|(_, after)| after))
        .filter(|after| after.starts_with("200 ") || after.starts_with("206 "))
        .count()
}

/// Runs `f` on a thread that has entered the namespace: network
/// namespaces are per thread, so the rest of the process is unaffected.
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let handle = File::open(&path).context(|| format!("open {path}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::new(format!(
                        "setns {path}: {}",
                        std::io::Error::last_os_error()
                    )));
                }
                Ok(f())
            })
            .join()
            .expect("netns thread panicked")
    })
}

/// The s3s-fs server binary: `$B2C_S3S_FS`, else `s3s-fs` on `PATH` or
/// in `~/.cargo/bin` (where `make deps` installs it).
pub fn s3s_fs_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("B2C_S3S_FS") {
        return Ok(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::new("s3s-fs is not installed: run `make deps`"))
}

pub(crate) fn tcp_probe(port: u16) -> std::io::Result<()> {
    let addr = SocketAddr::from(([10, 99, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map(drop)
}

/// Asks 10.99.0.1 for the time (SNTP); returns the server's transmit
/// time in Unix seconds.
pub(crate) fn sntp_query() -> std::io::Result<u64> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut request = [0u8; 48];
    request[0] = 0x23; // LI 0, version 4, mode 3 (client)
    socket.send_to(&request, (GATEWAY, 123))?;
    let mut reply = [0u8; 48];
    let n = socket.recv(&mut reply)?;
    let stratum = reply[1];
    if n < 48 || reply[0] & 7 != 4 || !(1..16).contains(&stratum) {
        return Err(std::io::Error::other(format!(
            "bad NTP reply (mode {}, stratum {stratum})",
            reply[0] & 7
        )));
    }
    const NTP_TO_UNIX: u64 = 2_208_988_800;
    let seconds = u32::from_be_bytes(reply[40..44].try_into().unwrap()) as u64;
    Ok(seconds.saturating_sub(NTP_TO_UNIX))
}

/// Deletes namespaces that earlier harness processes left behind when
/// they died without unwinding (SIGKILL, Ctrl-C), if nothing runs in them.
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let empty = Command::new("ip")
            .args(["netns", "pids", &name])
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.is_empty());
        if empty {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_blob_downloads;

    #[test]
    fn counts_blob_downloads_of_one_repository() {
        let log = r#"time="2025-01-01T00:00:00Z" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/b2c/busybox/blobs/sha256:aa" http.response.status=200
10.99.0.23 - - [01/Jan/2025:00:00:00 +0000] "GET /v2/b2c/busybox/blobs/sha256:aa HTTP/1.1" 200 1100000 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:01 +0000] "GET /v2/b2c/busybox/blobs/sha256:bb HTTP/1.1" 206 100 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:02 +0000] "HEAD /v2/b2c/busybox/blobs/sha256:aa HTTP/1.1" 200 0 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:03 +0000] "GET /v2/b2c/busybox/blobs/sha256:cc HTTP/1.1" 404 50 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:04 +0000] "GET /v2/b2c/busybox/manifests/latest HTTP/1.1" 200 500 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:05 +0000] "GET /v2/b2c/busybox-docker/blobs/sha256:aa HTTP/1.1" 200 1100000 "" "oci-client"
10.99.0.23 - - [01/Jan/2025:00:00:06 +0000] "GET /v2/b2c/big/blobs/sha256:dd HTTP/1.1" 200 62925714 "" "oci-client"
"#;
        assert_eq!(count_blob_downloads(log, "b2c/busybox"), 2);
        assert_eq!(count_blob_downloads(log, "b2c/busybox-docker"), 1);
        assert_eq!(count_blob_downloads(log, "b2c/big"), 1);
        assert_eq!(count_blob_downloads(log, "b2c/layers"), 0);
        assert_eq!(count_blob_downloads("", "b2c/busybox"), 0);
    }
}
