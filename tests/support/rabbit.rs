//! A private RabbitMQ node for fault tests: its own node name, ports, data
//! and log directories under a temp dir, started detached in its own
//! process group and stopped (gracefully or with SIGKILL) by the test.
//! Dropping it kills the node and removes its files (kept, and their path
//! printed, when the test is failing).
//!
//! Reusable by daemon-level tests: `RabbitNode::start(NodeOptions::default())`,
//! `amqp_url()`, `kill()`, `stop()`, `start_again()`.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod cluster;

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS listener material (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Demand a client certificate signed by `ca`.
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Also listen with TLS (server certificate only, no client auth).
    pub tls: Option<TlsFiles>,
    /// Extra `rabbitmq.conf` lines.
    pub extra_conf: String,
    /// The Erlang cookie (written to the node's HOME before it starts):
    /// the nodes of a cluster and their `rabbitmqctl` must share one.
    pub cookie: Option<String>,
    /// `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS`.
    pub erl_args: String,
}

pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    pub dist_port: u16,
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    /// Process group of the running node (0: none), for `NodeGuard`.
    pgid: Arc<AtomicU32>,
    abandoned: Arc<AtomicBool>,
    erl_args: String,
}

/// Kills the node when dropped, wherever the `RabbitNode` itself is (e.g.
/// moved into a fault-injecting thread): a failing test must not leave a
/// broker running. Also stops the node from being started again.
pub struct NodeGuard {
    pgid: Arc<AtomicU32>,
    abandoned: Arc<AtomicBool>,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::SeqCst);
        let pgid = self.pgid.swap(0, Ordering::SeqCst);
        if pgid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn bin(name: &str) -> PathBuf {
    // The /usr/sbin wrappers switch to the rabbitmq user when run as root,
    // which could not read our temp dir: call the real scripts.
    let direct = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if direct.exists() {
        direct
    } else {
        PathBuf::from(name)
    }
}

/// Whether this machine can run a private node at all.
pub fn available() -> bool {
    bin("rabbitmq-server").exists()
        || Command::new("rabbitmq-server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl RabbitNode {
    pub fn start(opts: NodeOptions) -> io::Result<RabbitNode> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ct-{}-{}@localhost",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new().prefix("ct-rabbit-").tempdir()?;
        let port = free_port();
        let dist_port = free_port();
        let tls_port = opts.tls.as_ref().map(|_| free_port());
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\n\
             loopback_users = none\n\
             log.console = false\n\
             log.file.level = warning\n"
        );
        if let (Some(tls), Some(tp)) = (&opts.tls, tls_port) {
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tp}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = {}\n\
                 ssl_options.fail_if_no_peer_cert = {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                if tls.require_client_cert {
                    "verify_peer"
                } else {
                    "verify_none"
                },
                tls.require_client_cert,
            ));
        }
        conf.push_str(&opts.extra_conf);
        std::fs::write(dir.path().join("rabbitmq.conf"), conf)?;
        // Empty env file: the system's rabbitmq-env.conf names the shared node.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "")?;
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        if let Some(cookie) = &opts.cookie {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(".erlang.cookie");
            std::fs::write(&path, cookie)?;
            // Erlang refuses a cookie file others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        }
        let mut node = RabbitNode {
            name,
            port,
            dist_port,
            tls_port,
            dir,
            child: None,
            starts: 0,
            pgid: Arc::new(AtomicU32::new(0)),
            abandoned: Arc::new(AtomicBool::new(false)),
            erl_args: opts.erl_args.clone(),
        };
        node.start_again()?;
        Ok(node)
    }

    fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env("HOME", d) // the Erlang cookie lives here, shared with rabbitmqctl
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        if !self.erl_args.is_empty() {
            cmd.env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", &self.erl_args);
        }
    }

    pub fn guard(&self) -> NodeGuard {
        NodeGuard {
            pgid: self.pgid.clone(),
            abandoned: self.abandoned.clone(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://` by host name, as the test certificate names `localhost`.
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("amqps://guest:guest@localhost:{p}/%2f"))
    }

    /// Starts the node (again, on the same data) and waits for its port.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.running() {
            return Ok(());
        }
        if self.abandoned.load(Ordering::SeqCst) {
            return Err(io::Error::other("node abandoned by its test"));
        }
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("server-{}.out", self.starts)))?;
        let mut cmd = Command::new(bin("rabbitmq-server"));
        self.env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0); // so kill() takes erl's helpers with it
        let mut child = cmd.spawn()?;
        self.pgid.store(child.id(), Ordering::SeqCst);
        let deadline = Instant::now() + START_TIMEOUT;
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        loop {
            if ports.iter().all(|p| port_open(*p)) {
                break;
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "rabbitmq-server {} exited with {status}: {}",
                    self.name,
                    self.output_tail()
                )));
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                return Err(io::Error::other(format!(
                    "rabbitmq-server {} not listening after {START_TIMEOUT:?}: {}",
                    self.name,
                    self.output_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the whole node (no clean shutdown, like a power cut of the
    /// broker process).
    pub fn kill(&mut self) {
        self.pgid.store(0, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
        wait_port_closed(self.port);
    }

    /// Freeze the node's Erlang VM (SIGSTOP): its sockets stay open and the
    /// kernel still takes bytes into their buffers, but nothing is read or
    /// answered (no confirm comes) until `thaw`. Only beam.smp itself, not
    /// the whole process group: an epmd started by the node may serve
    /// others.
    pub fn freeze(&self) {
        self.signal_vm("-STOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal_vm("-CONT");
    }

    fn signal_vm(&self, sig: &str) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        assert!(pgid != 0, "node {} is not running", self.name);
        let out = Command::new("pgrep")
            .args(["-g", &pgid.to_string(), "-x", "beam.smp"])
            .output()
            .expect("pgrep");
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(!pids.is_empty(), "no beam.smp in process group {pgid}");
        for pid in pids {
            let ok = Command::new("kill")
                .args([sig, &pid])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {pid}");
        }
    }

    /// Clean shutdown by SIGTERM (the node stops as for `rabbitmqctl
    /// stop`, without the seconds an Erlang CLI takes to boot).
    pub fn terminate(&mut self) {
        self.pgid.store(0, Ordering::SeqCst);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&mut child);
        wait_port_closed(self.port);
    }

    /// Clean shutdown via `rabbitmqctl stop`, SIGKILL if it does not finish.
    pub fn stop(&mut self) {
        self.pgid.store(0, Ordering::SeqCst);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let ok = self
            .ctl(&["stop"])
            .map(|o| o.status.success())
            .unwrap_or(false);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if ok && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    kill_group(&mut child);
                    break;
                }
            }
        }
        // erl's helper processes may linger a moment.
        kill_group(&mut child);
        wait_port_closed(self.port);
    }

    /// Runs `rabbitmqctl -n <node> ARGS` with a timeout.
    pub fn ctl(&self, args: &[&str]) -> io::Result<std::process::Output> {
        let mut cmd = Command::new(bin("rabbitmqctl"));
        self.env(&mut cmd);
        cmd.arg("-n").arg(&self.name).args(args);
        run_with_timeout(cmd, STOP_TIMEOUT)
    }

    fn output_tail(&self) -> String {
        let mut s = String::new();
        let p = self.dir.path().join(format!("server-{}.out", self.starts));
        if let Ok(mut f) = std::fs::File::open(p) {
            let _ = f.read_to_string(&mut s);
        }
        let tail: Vec<&str> = s.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
        // A failing test leaves the broker's logs to be read.
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "rabbitmq node {} kept: {}",
                self.name,
                self.dir.path().display()
            );
        }
    }
}

fn kill_group(child: &mut Child) {
    let pgid = child.id();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_port_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while port_open(port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} timed out"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: std::fs::read(out_path)?,
        stderr: std::fs::read(err_path)?,
    })
}
