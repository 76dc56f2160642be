//! Helpers shared by the integration tests: objects to serve, daemons on free loopback
//! ports, and child processes (this test binary re-run as a daemon).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The tutorial's contract.
#[rmi::remote]
pub(crate) trait Greeter {
    /// Returns "Hi welcome " + name.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

/// The tutorial's object.
pub(crate) struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

/// A recursive value, for nesting-depth tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Nested {
    /// The innermost value.
    Leaf,
    /// One more level.
    Node(Box<Nested>),
}

/// An object with one method per behaviour the tests need.
#[rmi::remote]
pub(crate) trait Lab {
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
    /// How many `sleep` (and `hold_blob`) calls are running now.
    async fn sleeping(&self) -> usize;
    /// A buffer of `len` bytes (a large result).
    async fn make_blob(&self, len: usize) -> Blob;
    /// Waits `ms` milliseconds, then returns a stream of `0..n`.
    async fn slow_numbers(&self, ms: u64, n: u32) -> rmi::RemoteStream<u32>;
    /// Streamed results open in the serving daemon, lingering ones included.
    async fn open_streams(&self) -> usize;
    /// Waits `ms` milliseconds, then returns the length of `blob`.
    async fn hold_blob(&self, ms: u64, blob: Blob) -> usize;
    /// A stream of `0..n`, each item `ms` milliseconds after the one before it was asked for.
    async fn ticking(&self, ms: u64, n: u32) -> rmi::RemoteStream<u32>;
    /// Waits `ms` milliseconds, then returns a buffer of `len` bytes.
    async fn blob_after(&self, ms: u64, len: usize) -> Blob;
}

/// A byte buffer encoded efficiently.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The [`Lab`] implementation.
#[derive(Default)]
pub(crate) struct LabObject {
    calls: AtomicUsize,
    sleeping: std::sync::Arc<AtomicUsize>,
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
        a.checked_div(b)
            .ok_or_else(|| format!("cannot divide {a} by {b}"))
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
        /// Counts itself in `sleeping` while it lives (a call dropped too).
        struct Asleep(std::sync::Arc<AtomicUsize>);
        impl Drop for Asleep {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        let _asleep = Asleep(self.sleeping.clone());
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

    async fn sleeping(&self) -> usize {
        self.sleeping.load(Ordering::SeqCst)
    }

    async fn make_blob(&self, len: usize) -> Blob {
        self.count();
        Blob(vec![7; len])
    }

    async fn slow_numbers(&self, ms: u64, n: u32) -> rmi::RemoteStream<u32> {
        self.count();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        rmi::RemoteStream::iter(0..n)
    }

    async fn hold_blob(&self, ms: u64, blob: Blob) -> usize {
        // Counted in `calls` and `sleeping` as a `sleep` is.
        self.sleep(ms).await;
        blob.0.len()
    }

    async fn blob_after(&self, ms: u64, len: usize) -> Blob {
        self.count();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Blob(vec![7; len])
    }

    async fn ticking(&self, ms: u64, n: u32) -> rmi::RemoteStream<u32> {
        use futures_util::StreamExt;
        self.count();
        rmi::RemoteStream::new(futures_util::stream::iter(0..n).then(move |i| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            i
        }))
    }

    async fn open_streams(&self) -> usize {
        rmi::context::current()
            .expect("call context")
            .daemon()
            .open_streams()
    }
}

/// A daemon on 127.0.0.1:0 serving a fresh [`LabObject`] and the greeter; returns the daemon
/// and the two URIs. The daemon serves in a background task until shut down.
pub(crate) async fn start_daemon() -> (rmi::Daemon, rmi::Uri, rmi::Uri) {
    let (daemon, lab) = serve_lab(rmi::Daemon::builder()).await;
    let greeter = daemon
        .register(GreeterServer::new(GreetingMaker))
        .expect("register greeter");
    (daemon, lab, greeter)
}

/// A daemon with `builder`'s settings on 127.0.0.1:0 serving a fresh [`LabObject`]; returns the
/// daemon and the object's URI. The daemon serves in a background task until shut down.
pub(crate) async fn serve_lab(builder: rmi::DaemonBuilder) -> (rmi::Daemon, rmi::Uri) {
    let daemon = builder.bind("127.0.0.1:0").await.expect("bind daemon");
    let lab = daemon
        .register(LabServer::new(LabObject::default()))
        .expect("register lab");
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, lab)
}

/// A daemon on 127.0.0.1:0 serving `object` on a runtime and thread of its own, for objects
/// whose methods block their thread (blocking a worker of the test's runtime could stall the
/// test's own I/O). Serves until shut down.
pub(crate) fn daemon_on_its_own_thread(object: impl rmi::Dispatch) -> (rmi::Daemon, rmi::Uri) {
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
            let uri = daemon.register(object).unwrap();
            ready.send((daemon.clone(), uri)).unwrap();
            daemon.serve().await
        })
    });
    started.recv().unwrap()
}

/// A child process that is killed when dropped.
pub(crate) struct ChildGuard(pub Child);

impl ChildGuard {
    /// True while the process has not exited.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// The process's open file descriptors (Linux `/proc`). A count that cannot be taken fails
    /// the test rather than passing it vacuously.
    pub(crate) fn fd_count(&self) -> usize {
        let path = format!("/proc/{}/fd", self.0.id());
        std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("cannot count the child's descriptors: {path}: {e}"))
            .count()
    }

    /// The process's resident memory in KiB (Linux `/proc`). A measurement that cannot be
    /// taken fails the test rather than passing it vacuously.
    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The process's private data mappings in KiB (Linux `/proc`'s `VmData`): what it has
    /// allocated, touched or not. A large buffer reserved and never filled shows here and not
    /// in [`rss_kib`](Self::rss_kib) (glibc maps it, and only the pages written become
    /// resident).
    pub(crate) fn data_kib(&self) -> u64 {
        self.status_kib("VmData")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.0.id());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot measure the child's memory: {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} line in {path}"))
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

/// Environment variable that turns this test binary into a daemon process.
pub(crate) const CHILD_DAEMON_ENV: &str = "RMI_TEST_CHILD_DAEMON";
/// Environment variable with the port the child daemon binds (0 when unset).
pub(crate) const CHILD_PORT_ENV: &str = "RMI_TEST_CHILD_PORT";

/// Starts this test binary again as a daemon process (see `child_daemon_entry` in main.rs);
/// returns it and the URI of its [`LabObject`], registered under the id `lab`.
pub(crate) fn spawn_child_daemon() -> (ChildGuard, rmi::Uri) {
    spawn_child_daemon_on(0)
}

/// [`spawn_child_daemon`] on a given port (0 = any free port).
pub(crate) fn spawn_child_daemon_on(port: u16) -> (ChildGuard, rmi::Uri) {
    spawn_child_daemon_with(port, "")
}

/// Environment variable with the child daemon's settings: `name=value;…` with `max_connections`,
/// `max_in_flight`, `max_message`, `max_queued` (bytes), `min_rate` (bytes/s, 0 = none),
/// `max_batch`, `workers` (runtime threads), and `idle_ms`, `frame_ms`, `write_ms`, `linger_ms`,
/// `handshake_ms` (milliseconds).
pub(crate) const CHILD_SETTINGS_ENV: &str = "RMI_TEST_CHILD_SETTINGS";

/// [`spawn_child_daemon`] with settings (see [`CHILD_SETTINGS_ENV`]).
pub(crate) fn spawn_child_daemon_with(port: u16, settings: &str) -> (ChildGuard, rmi::Uri) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "child_daemon_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DAEMON_ENV, "1")
        .env(CHILD_PORT_ENV, port.to_string())
        .env(CHILD_SETTINGS_ENV, settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child daemon");
    let line = read_line_starting(&mut child, "LAB ");
    let uri = line["LAB ".len()..]
        .trim()
        .parse()
        .expect("child prints its uri");
    (ChildGuard(child), uri)
}

/// Body of the child daemon process: serve a [`LabObject`] as `lab` until killed.
pub(crate) fn run_child_daemon() {
    let settings = std::env::var(CHILD_SETTINGS_ENV).unwrap_or_default();
    let workers = settings
        .split(';')
        .find_map(|s| s.strip_prefix("workers="))
        .map(|n| n.parse().expect("a number"))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let port: u16 = std::env::var(CHILD_PORT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut builder = rmi::Daemon::builder();
        let settings = std::env::var(CHILD_SETTINGS_ENV).unwrap_or_default();
        for setting in settings.split(';').filter(|s| !s.is_empty()) {
            let (name, value) = setting.split_once('=').expect("name=value");
            let n: u64 = value.parse().expect("a number");
            let ms = Some(Duration::from_millis(n));
            builder = match name {
                "max_connections" => builder.max_connections(n as usize),
                "max_in_flight" => builder.max_in_flight(n as usize),
                "max_orphans" => builder.max_orphaned_calls(n as usize),
                "idle_ms" => builder.idle_timeout(ms),
                "frame_ms" => builder.frame_timeout(ms),
                "write_ms" => builder.write_timeout(ms),
                "linger_ms" => builder.stream_linger(Duration::from_millis(n)),
                "handshake_ms" => builder.handshake_timeout(Duration::from_millis(n)),
                "max_queued" => builder.max_queued_bytes(n as usize),
                "min_rate" => builder.min_write_rate((n > 0).then_some(n)),
                "max_batch" => builder.max_batch_calls(n as usize),
                "workers" => builder,
                "max_message" => builder.limits(rmi::DecodeLimits {
                    max_message_size: n as usize,
                    ..Default::default()
                }),
                other => panic!("unknown child setting {other}"),
            };
        }
        let daemon = builder.bind(("127.0.0.1", port)).await.expect("bind");
        let uri = daemon
            .register_with_id(LabServer::new(LabObject::default()), "lab")
            .expect("register");
        println!("LAB {uri}");
        daemon.serve().await.expect("serve");
    });
}

/// Waits (up to 5 s, polling) until `f` holds; panics naming `what` otherwise.
pub(crate) async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened");
}

/// A port on 127.0.0.1 that nothing listens on (bound, read back, released).
pub(crate) fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener on 127.0.0.1 that accepts connections and never says a word (a daemon or name
/// server that hangs before its handshake); returns its port. Lives as long as the runtime.
pub(crate) async fn silent_listener() -> u16 {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    port
}

/// Environment variable that turns this test binary into a process holding idle connections:
/// `uri;count`.
pub(crate) const IDLE_FLOOD_ENV: &str = "RMI_TEST_IDLE_FLOOD";

/// Starts this test binary as a process that opens `count` connections to `uri`, completes the
/// CONNECT handshake on each and holds them; returns once it says they are all open.
pub(crate) fn spawn_idle_flood(uri: &rmi::Uri, count: usize) -> ChildGuard {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "idle_flood_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IDLE_FLOOD_ENV, format!("{uri};{count}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn idle flood");
    read_line_starting(&mut child, "HOLDING ");
    ChildGuard(child)
}

/// Body of the idle-flood process.
pub(crate) fn run_idle_flood() {
    let spec = std::env::var(IDLE_FLOOD_ENV).expect("flood spec");
    let (uri, count) = spec.split_once(';').expect("uri;count");
    let uri: rmi::Uri = uri.parse().expect("uri");
    let count: usize = count.parse().expect("count");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let rmi::Location::Tcp { host, port } = uri.location().expect("direct").clone() else {
            panic!("tcp only")
        };
        let object = uri.object().expect("object").to_string();
        let mut held = Vec::with_capacity(count);
        // A few hundred at a time, so the listen backlog never overflows.
        for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
            let opened = futures_util::future::join_all(chunk.iter().map(|_| {
                let (host, object) = (host.clone(), object.clone());
                async move {
                    let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                        .await
                        .expect("connect");
                    connect_handshake(&mut s, &object).await;
                    s
                }
            }))
            .await;
            held.extend(opened);
        }
        println!("HOLDING {}", held.len());
        std::future::pending::<()>().await;
    });
}

/// A bincode CONNECT for `object`, with Pyro's default handshake data.
pub(crate) fn connect_message(object: &str) -> rmi::protocol::frame::Message {
    use rmi::protocol::codec::ConnectRequest;
    use rmi::protocol::frame::{Message, MessageType};
    let ser = rmi::Serializer::Bincode;
    let hello = ConnectRequest {
        handshake: "hello".into(),
        object: object.into(),
    };
    let payload = ser.encode(&hello).unwrap();
    Message::new(MessageType::Connect, ser.id(), 0, 0, payload)
}

/// Sends a CONNECT for `object` on a raw stream and reads the CONNECTOK.
pub(crate) async fn connect_handshake<S>(stream: &mut S, object: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use rmi::protocol::frame::{MessageType, HEADER_SIZE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let msg = connect_message(object);
    stream.write_all(&msg.to_bytes()).await.unwrap();
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[6], MessageType::ConnectOk as u8, "handshake refused");
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize
        + u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
}

/// A raw TCP connection to a daemon's address.
pub(crate) async fn dial(uri: &rmi::Uri) -> tokio::net::TcpStream {
    let rmi::Location::Tcp { host, port } = uri.location().expect("a direct uri") else {
        panic!("a TCP uri")
    };
    tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .expect("connect")
}

/// The child daemon process is alive, and a fresh proxy is served (within 10 s: a wedged
/// daemon fails the test rather than hanging it).
pub(crate) async fn assert_serving(child: &mut ChildGuard, uri: &rmi::Uri) {
    assert!(child.is_alive(), "the daemon process died");
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        let proxy = LabProxy::connect(uri)
            .await
            .expect("a normal client connects");
        proxy.echo(1, 2, "ok".into()).await.unwrap().2
    })
    .await
    .expect("the daemon did not serve a fresh client within 10 s");
    assert_eq!(served, "ok");
}

/// An INVOKE frame (bincode) for `method` of `object`, with `flags`.
pub(crate) fn invoke_frame(
    object: &str,
    method: &str,
    args: &impl serde::Serialize,
    seq: u16,
    flags: u16,
) -> Vec<u8> {
    invoke_message(object, method, args, seq, flags)
        .to_bytes()
        .to_vec()
}

/// The INVOKE message (bincode) of [`invoke_frame`], for a test to annotate before sending.
pub(crate) fn invoke_message(
    object: &str,
    method: &str,
    args: &impl serde::Serialize,
    seq: u16,
    flags: u16,
) -> rmi::protocol::frame::Message {
    use rmi::protocol::frame::{Message, MessageType};
    let payload =
        rmi::protocol::codec::encode_invoke(rmi::Serializer::Bincode, object, method, args)
            .unwrap();
    Message::new(
        MessageType::Invoke,
        rmi::Serializer::BINCODE_ID,
        flags,
        seq,
        payload,
    )
}

/// Carries what `from` reads to `to`, each piece `latency` after it was read.
async fn late(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    latency: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pieces, mut due) = tokio::sync::mpsc::unbounded_channel();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let _ = pieces.send((tokio::time::Instant::now() + latency, buf[..n].to_vec()));
        }
    };
    let write = async move {
        while let Some((at, piece)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// A TCP relay on loopback: counts the connections it accepts, can be pointed at another port,
/// and can cut the connections it carries, or silence them.
pub(crate) struct Relay {
    pub(crate) port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Bumped by [`Relay::blackhole`].
    silenced: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    /// A relay to `target` on 127.0.0.1.
    pub(crate) async fn start(target: u16) -> Relay {
        Relay::with_latency(target, Duration::ZERO).await
    }

    /// A relay to `target` on 127.0.0.1 that delivers what it reads `latency` later, each way
    /// (a far peer: round trips of twice `latency`, however many are under way at once).
    pub(crate) async fn with_latency(target: u16, latency: Duration) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            target: std::sync::Arc::new(target.into()),
            accepted: Default::default(),
            open: Default::default(),
            silenced: tokio::sync::watch::Sender::new(0),
        };
        let (target, accepted, open, silenced) = (
            relay.target.clone(),
            relay.accepted.clone(),
            relay.open.clone(),
            relay.silenced.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let port = target.load(Ordering::SeqCst);
                let mut silenced = silenced.subscribe();
                silenced.mark_unchanged();
                let pump = tokio::spawn(async move {
                    if let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let carry = async {
                            if latency.is_zero() {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            } else {
                                let (client_in, client_out) = client.split();
                                let (upstream_in, upstream_out) = upstream.split();
                                tokio::join!(
                                    late(client_in, upstream_out, latency),
                                    late(upstream_in, client_out, latency)
                                );
                            }
                        };
                        tokio::select! {
                            () = carry => {}
                            _ = silenced.changed() => {
                                // Both sockets held open, nothing carried: no FIN, no reset.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
                open.lock().unwrap().push(pump);
            }
        });
        relay
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections carried and closed at both ends since.
    pub(crate) fn finished(&self) -> usize {
        let open = self.open.lock().unwrap();
        open.iter().filter(|pump| pump.is_finished()).count()
    }

    /// Silences the connections open now: they carry nothing more either way and stay open,
    /// as a connection a NAT forgot or whose far host lost power. New connections work.
    pub(crate) fn blackhole(&self) {
        self.silenced.send_modify(|n| *n += 1);
    }

    /// Points new connections at `port` and closes the ones open (a name server restarting).
    pub(crate) fn move_to(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
        for pump in self.open.lock().unwrap().drain(..) {
            pump.abort();
        }
    }
}

/// A TCP relay to a name server whose answers can be held back: while held, what the name
/// server sends waits in the relay (what clients send goes through). Held by hand
/// ([`hold`](Self::hold)), or from the first request that contains given bytes
/// ([`hold_after`](Self::hold_after)): a method's name, as bincode writes it.
pub(crate) struct HeldRelay {
    pub(crate) port: u16,
    held: tokio::sync::watch::Sender<bool>,
    /// Bytes whose sight holds the answers (set by `hold_after`).
    trigger: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl HeldRelay {
    pub(crate) async fn start(target: u16) -> HeldRelay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = HeldRelay {
            port: listener.local_addr().unwrap().port(),
            held: tokio::sync::watch::Sender::new(false),
            trigger: Default::default(),
        };
        let (held, trigger) = (relay.held.clone(), relay.trigger.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (held, trigger) = (held.clone(), trigger.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_ns, mut to_ns) = upstream.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            // Held before the request goes on: its answer cannot slip past.
                            // Once: the trigger is spent.
                            {
                                let mut trigger = trigger.lock().unwrap();
                                let seen = trigger.as_ref().is_some_and(|t| {
                                    buf[..n].windows(t.len()).any(|w| w == t.as_slice())
                                });
                                if seen {
                                    *trigger = None;
                                    held.send_replace(true);
                                }
                            }
                            if to_ns.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let mut watch = held.subscribe();
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_ns.read(&mut buf).await {
                            if watch.wait_for(|held| !held).await.is_err()
                                || to_client.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        relay
    }

    /// Holds the answers (true) or lets them go, those held so far first (false).
    pub(crate) fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// Holds the answers from the next request that contains `bytes` on (once).
    pub(crate) fn hold_after(&self, bytes: &[u8]) {
        *self.trigger.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Whether the answers are held.
    pub(crate) fn holding(&self) -> bool {
        *self.held.borrow()
    }
}

/// Shuts `daemon` down and checks that `serving` (its `serve()`) returns within `bound`, and
/// returns `Ok`.
pub(crate) async fn shut_down_within(
    daemon: &rmi::Daemon,
    serving: tokio::task::JoinHandle<Result<(), rmi::Error>>,
    bound: Duration,
) {
    let stopping = std::time::Instant::now();
    daemon.shutdown();
    tokio::time::timeout(bound, serving)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "serve still running {:?} after shutdown",
                stopping.elapsed()
            )
        })
        .expect("the serving task")
        .expect("serve() returned an error");
}

/// Counts the events at `level` or above and the longest text any of them carried (installed
/// with `tracing::subscriber::set_default` in a current-thread test, it sees the daemon's).
#[derive(Clone)]
pub(crate) struct Loud(
    pub(crate) std::sync::Arc<std::sync::Mutex<(usize, usize)>>,
    tracing::Level,
);

impl Loud {
    /// Counting events at `level` and above.
    pub(crate) fn at(level: tracing::Level) -> Self {
        Loud(Default::default(), level)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Loud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 += &format!("{}={v:?} ", f.name());
            }
        }
        if *event.metadata().level() > self.1 {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let mut loud = self.0.lock().unwrap();
        loud.0 += 1;
        loud.1 = loud.1.max(text.0.len());
    }
}

/// A relay on 127.0.0.1 in front of `target` that records what the client sends.
pub(crate) async fn recording_relay(
    target: u16,
) -> (u16, std::sync::Arc<tokio::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let recorded = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let rec = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = relay.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    rec.lock().await.extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, recorded)
}
