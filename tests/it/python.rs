//! Against real Python Pyro5 (issue 9, first pieces): a Python client with Pyro5's defaults
//! (serpent) calls a Rust object, errors raise the right Python exceptions, and zlib
//! compression (`FLAGS_COMPRESSED`) works both ways.
//!
//! The Python side is Pyro5 5.17 with msgpack, from PyPI, in a virtual environment under
//! `target/` that the first test creates (`.ci/run` makes sure `python3 -m venv` works). Where
//! Python or PyPI cannot be had, the tests say so loudly and skip; under CI (`CI=true`, or
//! `RMI_TEST_NO_SKIP=1`) that is a failure instead. [`make_venv`] also makes `pyro4.rs`'s; it
//! lives in `python/shared.rs`, which rmi-cli's tests include too.

use std::path::PathBuf;
use std::process::Command;

use rmi::protocol::frame::{Header, Message, MessageType, FLAGS_COMPRESSED, HEADER_SIZE};
use rmi::Serializer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    assert_serving, connect_handshake, dial, invoke_frame, spawn_child_daemon_with, GreeterServer,
    GreetingMaker, LabProxy,
};

pub(crate) mod shared;

pub(crate) use shared::make_venv;

/// The virtual environment's python (Pyro5 5.17, msgpack, serpent), made on first use; `None`
/// (after a loud message) where it cannot be made and this is not CI.
pub(crate) fn python() -> Option<&'static PathBuf> {
    shared::pyro5_python()
}

/// Runs `script` with the venv's Python, `args` as `sys.argv[1:]`; returns its stdout.
pub(crate) fn run_python(python: &PathBuf, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The tutorial's client, in Pyro5, with a serializer and compression chosen by arguments.
const GREETING_CLIENT: &str = r#"
import sys
import Pyro5.api
uri, name, serializer, compression = sys.argv[1:]
Pyro5.config.SERIALIZER = serializer
Pyro5.config.COMPRESSION = compression == "on"
with Pyro5.api.Proxy(uri) as greeter:
    print(greeter.welcomeMessage(name))
"#;

async fn greeting_daemon(compression: bool) -> (rmi::Daemon, rmi::Uri) {
    let daemon = rmi::Daemon::builder()
        .compression(compression)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "example.greeting")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pyro5_client_calls_a_rust_object_over_msgpack() {
    let Some(python) = python() else { return };
    let (daemon, uri) = greeting_daemon(false).await;
    let uri = uri.to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_python(python, GREETING_CLIENT, &[&uri, "Rashmi", "msgpack", "off"])
    })
    .await
    .unwrap();
    assert_eq!(out, "Hi welcome Rashmi\n");
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_works_both_ways_with_a_python_pyro5_client() {
    let Some(python) = python() else { return };
    // Pyro5 compresses every payload over 100 bytes when COMPRESSION is on; so does the daemon.
    let (daemon, uri) = greeting_daemon(true).await;
    let name = "Rashmi ".repeat(40);
    let (uri, arg) = (uri.to_string(), name.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_python(python, GREETING_CLIENT, &[&uri, &arg, "msgpack", "on"])
    })
    .await
    .unwrap();
    assert_eq!(out, format!("Hi welcome {name}\n"));
    daemon.shutdown();
}

#[tokio::test]
async fn the_daemon_compresses_large_replies_when_asked_and_rust_proxies_both_ways() {
    let (daemon, uri) = greeting_daemon(true).await;
    // On the wire: a large reply comes back compressed, and inflates to the result.
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "example.greeting").await;
    let name = "Irmen ".repeat(50);
    s.write_all(&invoke_frame(
        "example.greeting",
        "welcomeMessage",
        &(name.clone(),),
        1,
        0,
    ))
    .await
    .unwrap();
    let mut head = [0u8; HEADER_SIZE];
    s.read_exact(&mut head).await.unwrap();
    let header = Header::parse(&head, usize::MAX).unwrap();
    assert!(
        header.flags & FLAGS_COMPRESSED != 0,
        "the reply is compressed"
    );
    let mut rest = vec![0u8; header.total_len() - HEADER_SIZE];
    s.read_exact(&mut rest).await.unwrap();
    let mut whole = bytes::BytesMut::from(&[&head[..], &rest[..]].concat()[..]);
    let mut reply = Message::parse(&mut whole, &header).unwrap();
    assert!(reply.payload.len() < name.len(), "smaller than the result");
    reply.decompress(1 << 20).unwrap();
    let text: String = Serializer::Bincode
        .decode(&reply.payload, &Default::default())
        .unwrap();
    assert_eq!(text, format!("Hi welcome {name}"));
    // A Rust proxy that compresses its requests (seen on the wire, through a relay), and
    // inflates the daemon's replies.
    let port = match uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let (relay_port, recorded) = crate::support::recording_relay(port).await;
    let through = rmi::Uri::tcp(uri.object().unwrap(), "127.0.0.1", relay_port);
    let greeter: crate::support::GreeterProxy = rmi::Proxy::builder(through)
        .compression(true)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message(name.clone()).await.unwrap(),
        format!("Hi welcome {name}")
    );
    let sent = recorded.lock().await.clone();
    let mut at = 0;
    let invoke = loop {
        let header = Header::parse(&sent[at..], usize::MAX).expect("a whole message recorded");
        if header.msg_type == MessageType::Invoke {
            break header;
        }
        at += header.total_len();
    };
    assert!(
        invoke.flags & FLAGS_COMPRESSED != 0 && (invoke.data_len as usize) < name.len(),
        "the request went uncompressed: {invoke:?}"
    );
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_request_that_inflates_past_the_limit_fails_that_call_only() {
    // 64 MiB of zeros compresses to ~64 KiB; the child's limit is 1 MiB.
    let (mut child, uri) = spawn_child_daemon_with(0, "max_message=1048576");
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    let payload = rmi::protocol::codec::encode_invoke(
        Serializer::Bincode,
        "lab",
        "blob_len",
        &(vec![0u8; 64 << 20],),
    )
    .unwrap();
    let mut bomb = Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 1, payload);
    bomb.compress();
    assert!(
        bomb.payload.len() < 1 << 20,
        "the bomb fits the limit compressed"
    );
    let before = child.rss_kib();
    s.write_all(&bomb.to_bytes()).await.unwrap();
    let mut head = [0u8; HEADER_SIZE];
    s.read_exact(&mut head).await.unwrap();
    let header = Header::parse(&head, usize::MAX).unwrap();
    assert!(
        header.flags & rmi::protocol::frame::FLAGS_EXCEPTION != 0,
        "an error reply for that call"
    );
    let grown_mib = child.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 32, "the bomb was inflated: +{grown_mib} MiB");
    // The connection and the daemon go on.
    let mut rest = vec![0u8; header.total_len() - HEADER_SIZE];
    s.read_exact(&mut rest).await.unwrap();
    let lab = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(lab.echo(1, 1, "on".into()).await.unwrap().2, "on");
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pyro5_client_with_its_defaults_calls_a_rust_object_over_serpent() {
    let Some(python) = python() else { return };
    let (daemon, uri) = greeting_daemon(false).await;
    // Pyro5's default serializer is serpent; nothing is configured on the Python side.
    const DEFAULTS: &str = r#"
import sys
import Pyro5.api
assert Pyro5.config.SERIALIZER == "serpent"
with Pyro5.api.Proxy(sys.argv[1]) as greeter:
    print(greeter.welcomeMessage(sys.argv[2]))
"#;
    let uri = uri.to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_python(python, DEFAULTS, &[&uri, "Rashmi \u{e9}'\"x"])
    })
    .await
    .unwrap();
    assert_eq!(out, "Hi welcome Rashmi \u{e9}'\"x\n");
    daemon.shutdown();
}

/// An object whose errors a Python caller catches by class.
#[rmi::remote]
pub(crate) trait Strict {
    /// The square root of `n`; a negative `n` raises Python's `ValueError`.
    #[rmi(raises)]
    async fn root(&self, n: f64) -> Result<f64, rmi::RemoteError>;
    /// Panics.
    async fn crash(&self) -> u32;
}

struct StrictObject;

impl Strict for StrictObject {
    async fn root(&self, n: f64) -> Result<f64, rmi::RemoteError> {
        if n < 0.0 {
            return Err(rmi::RemoteError::new(
                rmi::RemoteErrorKind::Other,
                "builtins.ValueError",
                format!("no real square root of {n}"),
            ));
        }
        Ok(n.sqrt())
    }

    async fn crash(&self) -> u32 {
        panic!("the crash method crashed")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_errors_raise_python_exceptions_of_the_right_class() {
    let Some(python) = python() else { return };
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_with_id(StrictServer::new(StrictObject), "example.strict")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    const CALLER: &str = r#"
import sys
import Pyro5.api
with Pyro5.api.Proxy(sys.argv[1]) as strict:
    print(strict.root(16.0))
    try:
        strict.root(-4.0)
    except ValueError as e:
        print("ValueError:", e)
    try:
        strict.crash()
    except RuntimeError as e:
        print("RuntimeError:", e)
        print("traceback:", "".join(e._pyroTraceback).strip().splitlines()[0])
"#;
    let uri = uri.to_string();
    let out = tokio::task::spawn_blocking(move || run_python(python, CALLER, &[&uri]))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "4.0");
    assert_eq!(lines[1], "ValueError: no real square root of -4");
    assert!(
        lines[2].starts_with("RuntimeError: rmi.Panic: ") && lines[2].contains("crashed"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("traceback: rmi remote error (rmi.Panic)"),
        "{out}"
    );
    daemon.shutdown();
}

/// A contract with a defaultable trailing parameter, called with keywords from Python.
#[rmi::remote]
pub(crate) trait Formal {
    /// Greets `name`, with `title` when given.
    async fn greet(&self, name: String, title: Option<String>) -> String;
    /// A Python caller's camelCase keyword is the Rust parameter's name, its lint allowed on
    /// the method (and so on every generated copy of it).
    #[rmi(name = "setVolume")]
    #[allow(non_snake_case)]
    async fn set_volume(&self, newLevel: u32) -> u32;
    /// Many parameters, clippy's lint allowed on the method (and its generated copies).
    #[allow(clippy::too_many_arguments)]
    async fn sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8) -> u32;
}

struct FormalObject;

impl Formal for FormalObject {
    async fn greet(&self, name: String, title: Option<String>) -> String {
        match title {
            Some(t) => format!("Good day, {t} {name}"),
            None => format!("Hi {name}"),
        }
    }

    #[allow(non_snake_case)]
    async fn set_volume(&self, newLevel: u32) -> u32 {
        newLevel * 2
    }

    #[allow(clippy::too_many_arguments)]
    async fn sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8) -> u32 {
        [a, b, c, d, e, f, g].iter().map(|&n| u32::from(n)).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keyword_arguments_bind_to_rust_parameter_names() {
    let Some(python) = python() else { return };
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_with_id(FormalServer::new(FormalObject), "example.formal")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    const CALLER: &str = r#"
import sys
import Pyro5.api
for serializer in ("serpent", "msgpack"):
    Pyro5.config.SERIALIZER = serializer
    with Pyro5.api.Proxy(sys.argv[1]) as formal:
        print(formal.greet("Ada"))
        print(formal.greet("Ada", "Dr."))
        print(formal.greet(name="Ada", title="Prof."))
        print(formal.greet("Ada", title="Ms."))
        print(formal.setVolume(newLevel=21), formal.sum(1, 2, 3, 4, 5, 6, g=7))
        for args, kwargs in [((), {"nom": "x"}), ((1,), {}), (("a", "b", "c"), {}), (("a",), {"name": "b"})]:
            try:
                formal.greet(*args, **kwargs)
            except TypeError as e:
                print("TypeError:", e)
"#;
    let uri = uri.to_string();
    let out = tokio::task::spawn_blocking(move || run_python(python, CALLER, &[&uri]))
        .await
        .unwrap();
    let expected_calls = [
        "Hi Ada",
        "Good day, Dr. Ada",
        "Good day, Prof. Ada",
        "Good day, Ms. Ada",
        "42 28",
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 18, "{out}");
    for chunk in lines.chunks(9) {
        assert_eq!(&chunk[..5], &expected_calls[..], "{out}");
        assert!(
            chunk[5].contains("unexpected keyword argument \"nom\""),
            "{out}"
        );
        assert!(chunk[6].contains("argument \"name\""), "{out}");
        assert!(
            chunk[7].contains("takes 2 positional arguments but 3 were given"),
            "{out}"
        );
        assert!(
            chunk[8].contains("multiple values for argument \"name\""),
            "{out}"
        );
        assert!(
            chunk[5..].iter().all(|l| l.starts_with("TypeError: ")),
            "{out}"
        );
    }
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_finds_a_rust_object_by_pyroname_through_the_rust_name_server() {
    let Some(python) = python() else { return };
    let (ns, names) = crate::naming::name_server().await;
    let ns_port = ns.daemon().local_addr().unwrap().port();
    let (daemon, uri) = greeting_daemon(false).await;
    names.register("server", &uri).await.unwrap();
    // The tutorial's client, in Pyro5: PYRONAME, then the call. Then the name server's own API,
    // with Pyro5's signatures and its NamingError.
    const CLIENT: &str = r#"
import sys
import Pyro5.api, Pyro5.errors
port = int(sys.argv[1])
print(Pyro5.api.Proxy("PYRONAME:server@127.0.0.1:%d" % port).welcomeMessage("Rashmi"))
ns = Pyro5.api.locate_ns("127.0.0.1", port)
ns.register("py.thing", "PYRO:thing@127.0.0.1:4000")
uri = ns.lookup("py.thing")
print(type(uri).__name__, uri)
print(sorted(ns.list(prefix="py.")))
# As Pyro5's own name server: lookup answers a URI object, list a URI string.
print(type(ns.list(prefix="py.")["py.thing"]).__name__, ns.list(prefix="py.")["py.thing"])
try:
    ns.lookup("no.such.name")
except Pyro5.errors.NamingError as e:
    print("NamingError:", e)
try:
    ns.register("py.thing", "PYRO:other@127.0.0.1:4001", safe=True)
except Pyro5.errors.NamingError as e:
    print("NamingError:", e)
"#;
    let port = ns_port.to_string();
    let out = tokio::task::spawn_blocking(move || run_python(python, CLIENT, &[&port]))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Hi welcome Rashmi", "{out}");
    assert_eq!(lines[1], "URI PYRO:thing@127.0.0.1:4000", "{out}");
    assert_eq!(lines[2], "['py.thing']", "{out}");
    assert_eq!(lines[3], "str PYRO:thing@127.0.0.1:4000", "{out}");
    assert!(lines[4].starts_with("NamingError: unknown name"), "{out}");
    assert!(lines[5].contains("already registered"), "{out}");
    daemon.shutdown();
    ns.daemon().shutdown();
}

/// Python finds rmi's name server by its class tag, as Pyro's own examples do
/// (`PYROMETA:class:Pyro5.nameserver.NameServer`), and a `PYROMETA:` (which picks among the
/// names `yplookup` returns) over a shared name reaches each of its daemons. (Before, the name
/// server was tagged `class:rmi.NameServer` only, and `list` and `yplookup` gave a shared name's
/// last entry, always: helper-125 #1, #2.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_finds_the_name_server_by_pyros_class_tag_and_pyrometa_spreads() {
    let Some(python) = python() else { return };
    let (ns, names) = crate::naming::name_server().await;
    let ns_port = ns.daemon().local_addr().unwrap().port();
    for port in [4001, 4002, 4003] {
        let uri = rmi::Uri::tcp("svc", "127.0.0.1", port);
        let tags = std::collections::BTreeSet::from(["svc:t".to_owned()]);
        names.register_shared("svc", &uri, tags).await.unwrap();
    }
    const CLIENT: &str = r#"
import sys
import Pyro5.api, Pyro5.core
port = int(sys.argv[1])
with Pyro5.api.Proxy("PYROMETA:class:Pyro5.nameserver.NameServer@127.0.0.1:%d" % port) as ns:
    ns._pyroBind()
    print(ns._pyroUri.object, ns.count())
ns = Pyro5.api.locate_ns("127.0.0.1", port)
print(sorted(ns.lookup("Pyro.NameServer", return_metadata=True)[1]))
seen = set()
for _ in range(60):
    seen.add(str(Pyro5.core.resolve("PYROMETA:svc:t@127.0.0.1:%d" % port)))
print(sorted(seen))
"#;
    let port = ns_port.to_string();
    let out = tokio::task::spawn_blocking(move || run_python(python, CLIENT, &[&port]))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Pyro.NameServer 4", "{out}");
    assert_eq!(
        lines[1],
        "['class:Pyro4.naming.NameServer', 'class:Pyro5.nameserver.NameServer', 'class:rmi.NameServer']",
        "{out}"
    );
    assert_eq!(
        lines[2],
        "['PYRO:svc@127.0.0.1:4001', 'PYRO:svc@127.0.0.1:4002', 'PYRO:svc@127.0.0.1:4003']",
        "{out}"
    );
    ns.daemon().shutdown();
}

/// The Python halves of the examples, unmodified: `examples/python/client.py` calls the Rust
/// greeter through rmi's name server; `examples/python/server.py` serves Python's greeter,
/// registered in rmi's name server, to `examples/pyro_client.rs`'s code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_halves_of_the_examples_work_with_their_rust_halves() {
    use crate::python::shared::{python_output, PythonProcess};
    let Some(python) = python() else { return };
    let (ns, names) = crate::naming::name_server().await;
    let ns_port = ns.daemon().local_addr().unwrap().port();
    let env = [
        ("PYRO_NS_HOST", "127.0.0.1".to_owned()),
        ("PYRO_NS_PORT", ns_port.to_string()),
        ("PYRO_BROADCAST_ADDRS", "127.255.255.255".to_owned()),
    ];
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");

    // A Python client of the Rust greeter.
    let (daemon, uri) = greeting_daemon(false).await;
    names.register("server", &uri).await.unwrap();
    let client = format!("{examples}/client.py");
    let (ok, out) = {
        let (python, env) = (python.clone(), env.clone());
        tokio::task::spawn_blocking(move || python_output(&python, &[&client, "Rashmi"], &env))
            .await
            .unwrap()
    };
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Hi welcome Rashmi", "{out}");
    assert!(lines[1].starts_with("NamingError: unknown name"), "{out}");

    // A Rust client of the Python greeter.
    let server = format!("{examples}/server.py");
    let mut process = PythonProcess::start(python, &[&server], &env);
    process.wait_for("Ready.");
    let lines = pyro_client::talk_to_python(&names).await.unwrap();
    assert_eq!(lines[0], "Hi welcome Rashmi", "{lines:?}");
    assert!(
        lines[1].contains("Serpent") && lines[1].contains("Pyro5"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("1 / 3 = 0.333"), "{lines:?}");
    assert!(
        lines[3].starts_with("Python raised builtins.ZeroDivisionError:"),
        "{lines:?}"
    );
    assert!(
        lines[4..]
            .iter()
            .any(|l| l.contains("Traceback") || l.contains("line")),
        "the Python traceback: {lines:?}"
    );
    drop(process);
    daemon.shutdown();
    ns.daemon().shutdown();
}

/// `examples/pyro_client.rs`, whose `talk_to_python` the test above runs.
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/pyro_client.rs"]
mod pyro_client;
