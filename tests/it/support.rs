//! Helpers shared by the integration tests: objects to serve, daemons on free loopback
//! ports, and child processes (the `rmi-ns` binary, and this test binary re-run as a daemon).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The tutorial's contract.
#[rmi::remote]
pub trait Greeter {
    /// Returns "Hi welcome " + name.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

/// The tutorial's object.
pub struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

/// A recursive value, for nesting-depth tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Nested {
    /// The innermost value.
    Leaf,
    /// One more level.
    Node(Box<Nested>),
}

/// An object with one method per behaviour the tests need.
#[rmi::remote]
pub trait Lab {
    /// Returns its arguments, so each reply can be checked against its request.
    async fn echo(&self, task: u32, call: u32, text: String) -> (u32, u32, String);
    /// Panics.
    async fn explode(&self, message: String) -> u32;
    /// An application error travels as a value.
    #[rmi(name = "checkedDiv")]
    async fn checked_div(&self, a: i64, b: i64) -> Result<i64, String>;
    /// Waits until `n` calls are inside `rendezvous` at once (proves calls run concurrently).
    async fn rendezvous(&self, n: usize) -> usize;
    /// Sleeps for `ms` milliseconds, then returns `ms`.
    async fn sleep(&self, ms: u64) -> u64;
    /// The same, declared safe to retry.
    #[rmi(idempotent)]
    async fn sleep_idempotent(&self, ms: u64) -> u64;
    /// The id of the connection the call came on.
    async fn connection(&self) -> u64;
    /// Counts the levels of a nested value.
    async fn depth(&self, value: Nested) -> usize;
    /// Returns the length of a byte buffer.
    async fn blob_len(&self, blob: Blob) -> usize;
    /// Counts zero-sized values (a sequence whose elements take no bytes on the wire).
    async fn count_units(&self, units: Vec<()>) -> usize;
    /// How many calls this object has run.
    async fn calls(&self) -> usize;
}

/// A byte buffer encoded efficiently.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The [`Lab`] implementation.
#[derive(Default)]
pub struct LabObject {
    calls: AtomicUsize,
    inside: tokio::sync::Mutex<usize>,
    arrived: tokio::sync::Notify,
}

impl LabObject {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl Lab for LabObject {
    async fn echo(&self, task: u32, call: u32, text: String) -> (u32, u32, String) {
        self.count();
        (task, call, text)
    }

    async fn explode(&self, message: String) -> u32 {
        self.count();
        panic!("{message}")
    }

    async fn checked_div(&self, a: i64, b: i64) -> Result<i64, String> {
        self.count();
        a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by {b}"))
    }

    async fn rendezvous(&self, n: usize) -> usize {
        self.count();
        *self.inside.lock().await += 1;
        self.arrived.notify_waiters();
        loop {
            let notified = self.arrived.notified();
            if *self.inside.lock().await >= n {
                self.arrived.notify_waiters();
                return n;
            }
            notified.await;
        }
    }

    async fn sleep(&self, ms: u64) -> u64 {
        self.count();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    async fn sleep_idempotent(&self, ms: u64) -> u64 {
        self.sleep(ms).await
    }

    async fn connection(&self) -> u64 {
        self.count();
        rmi::context::current().expect("call context").connection()
    }

    async fn depth(&self, value: Nested) -> usize {
        self.count();
        let mut n = 0;
        let mut v = &value;
        while let Nested::Node(inner) = v {
            n += 1;
            v = inner;
        }
        n
    }

    async fn blob_len(&self, blob: Blob) -> usize {
        self.count();
        blob.0.len()
    }

    async fn count_units(&self, units: Vec<()>) -> usize {
        self.count();
        units.len()
    }

    async fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A daemon on 127.0.0.1:0 serving a fresh [`LabObject`] and the greeter; returns the daemon
/// and the two URIs. The daemon serves in a background task until shut down.
pub async fn start_daemon() -> (rmi::Daemon, rmi::Uri, rmi::Uri) {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.expect("bind daemon");
    let lab = daemon.register(LabServer::new(LabObject::default())).expect("register lab");
    let greeter = daemon.register(GreeterServer::new(GreetingMaker)).expect("register greeter");
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, lab, greeter)
}

/// A child process that is killed when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads lines of the child's stdout until one contains `marker`; returns the rest of that
/// line from the marker on (the test harness may print its own text before it).
fn read_line_starting(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("child stdout");
        if let Some(at) = line.find(marker) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return line[at..].to_string();
        }
    }
    panic!("child exited without printing {marker:?}");
}

/// Starts the real `rmi-ns` binary on a free port (no broadcast); returns it and its port.
pub fn spawn_name_server() -> (ChildGuard, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["--host", "127.0.0.1", "--port", "0", "--nobc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let line = read_line_starting(&mut child, "NS running on ");
    let addr = line["NS running on ".len()..].split_whitespace().next().expect("address");
    let port = addr.rsplit(':').next().unwrap().parse().expect("port");
    (ChildGuard(child), port)
}

/// Environment variable that turns this test binary into a daemon process.
pub const CHILD_DAEMON_ENV: &str = "RMI_TEST_CHILD_DAEMON";
/// Environment variable with the port the child daemon binds (0 when unset).
pub const CHILD_PORT_ENV: &str = "RMI_TEST_CHILD_PORT";

/// Starts this test binary again as a daemon process (see `child_daemon_entry` in main.rs);
/// returns it and the URI of its [`LabObject`], registered under the id `lab`.
pub fn spawn_child_daemon() -> (ChildGuard, rmi::Uri) {
    spawn_child_daemon_on(0)
}

/// [`spawn_child_daemon`] on a given port (0 = any free port).
pub fn spawn_child_daemon_on(port: u16) -> (ChildGuard, rmi::Uri) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "child_daemon_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_DAEMON_ENV, "1")
        .env(CHILD_PORT_ENV, port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child daemon");
    let line = read_line_starting(&mut child, "LAB ");
    let uri = line["LAB ".len()..].trim().parse().expect("child prints its uri");
    (ChildGuard(child), uri)
}

/// Body of the child daemon process: serve a [`LabObject`] as `lab` until killed.
pub fn run_child_daemon() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let port: u16 = std::env::var(CHILD_PORT_ENV).ok().and_then(|p| p.parse().ok()).unwrap_or(0);
        let daemon = rmi::Daemon::bind(("127.0.0.1", port)).await.expect("bind");
        let uri = daemon.register_with_id(LabServer::new(LabObject::default()), "lab").expect("register");
        println!("LAB {uri}");
        daemon.serve().await.expect("serve");
    });
}

/// A port on 127.0.0.1 that nothing listens on (bound, read back, released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
