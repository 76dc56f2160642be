//! Against real Python Pyro4 4.82 (protocol 48): the tutorial's `server.py` and `client.py`,
//! unmodified (copies in `tests/it/pyro4/`), run against rmi's name server, and a Pyro4 client
//! calls Rust objects by `PYRONAME:` in serpent and msgpack, catching their errors by class.
//! Raw-socket tests check the daemon's Pyro4 answers (PING, refusals) without Python.
//!
//! The venv (`target/tmp/pyro4-venv`, Pyro4 with serpent and msgpack from PyPI) is made as
//! `python.rs` makes Pyro5's, and skipped as loudly where it cannot be. Loopback only: the
//! name server, its broadcast responder and every daemon are on 127.0.0.0/8, port 0.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use rmi::protocol::frame::{
    Message, MessageType, Protocol, FLAGS_CORR_ID, FLAGS_META_ON_CONNECT, PYRO4_HEADER_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{dial, GreeterServer, GreetingMaker};

/// The venv's python with Pyro4 4.82, serpent and msgpack; `None` after a loud skip.
pub(crate) fn python() -> Option<&'static PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            crate::python::make_venv(
                "pyro4-venv",
                &["Pyro4==4.82", "serpent", "msgpack"],
                "import Pyro4, msgpack, serpent; assert Pyro4.__version__ == '4.82'",
            )
        })
        .as_ref()
}

/// The tutorial's programs, as copied byte for byte from the tutorial.
fn tutorial(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/pyro4")
        .join(file)
}

/// Pyro4's settings for finding a name server on loopback, by environment (as the tutorial's
/// README says).
fn ns_env(ns_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("PYRO_NS_HOST", "127.0.0.1".into()),
        ("PYRO_NS_PORT", ns_port.to_string()),
        ("PYRO_BROADCAST_ADDRS", "127.255.255.255".into()),
        ("PYRO_HOST", "127.0.0.1".into()),
    ]
}

/// Runs a python program (`-c` code or a file) with `env` and `stdin`; returns its stdout,
/// failing with its stderr.
fn run(python: &Path, program: &[&str], env: &[(&str, String)], stdin: &str) -> String {
    let mut child = Command::new(python)
        .args(program)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python {program:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A Python process this test started, killed (by its own handle) when the test ends.
struct PythonServer(Child);

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the tutorial's `server.py` and waits for its "Ready." line: by then it has found
/// the name server and registered "server" in it.
fn start_tutorial_server(python: &Path, env: &[(&str, String)]) -> (PythonServer, String) {
    let mut child = Command::new(python)
        .arg("-u")
        .arg(tutorial("server.py"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start server.py");
    let stdout = child.stdout.take().expect("stdout");
    let guard = PythonServer(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read server.py output");
    assert!(
        line.starts_with("Ready. Object uri = PYRO:"),
        "server.py said {line:?}"
    );
    (guard, line)
}

/// A name server on a free loopback port, with its broadcast responder on 127.255.255.255
/// and a free UDP port.
async fn name_server() -> (rmi::naming::NameServerHandle, u16, u16) {
    let ns = rmi::naming::NameServer::builder()
        .port(0)
        .broadcast("127.255.255.255", 0)
        .start()
        .await
        .unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let bc_port = ns.broadcast_addr().expect("a responder").port();
    (ns, port, bc_port)
}

/// The tutorial's client: it asks for a URI (ignored) and a name, and calls "server".
fn tutorial_client(python: &Path, env: &[(&str, String)]) -> String {
    let client = tutorial("client.py");
    let out = run(
        python,
        &[client.to_str().expect("utf-8 path")],
        env,
        "ignored\nRashmi\n",
    );
    // The two prompts have no newline; the greeting ends the output.
    out.rsplit("? ").next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pyro4_tutorial_runs_unmodified_against_the_rmi_name_server() {
    let Some(python) = python() else { return };
    let (ns, ns_port, _) = name_server().await;
    let env = ns_env(ns_port);
    let (server, line) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || start_tutorial_server(python, &env)
    })
    .await
    .unwrap();
    // The Python daemon's URI is in rmi's registry, under the tutorial's name.
    let names = rmi::naming::NameServerProxy::connect(ns.uri())
        .await
        .unwrap();
    let uri = names.lookup("server").await.unwrap();
    assert_eq!(line.trim_end(), format!("Ready. Object uri = {uri}"));
    let out = tokio::task::spawn_blocking(move || tutorial_client(python, &env))
        .await
        .unwrap();
    assert_eq!(out, "Hi welcome Rashmi\n");
    drop(server);
    ns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pyro4_server_finds_the_rmi_name_server_by_broadcast() {
    let Some(python) = python() else { return };
    let (ns, ns_port, bc_port) = name_server().await;
    // Nothing listens on NS_PORT, so locateNS's direct try fails and it broadcasts GET_NSURI
    // to 127.255.255.255, where rmi's responder answers with the name server's URI.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut env = ns_env(closed_port);
    env.push(("PYRO_NS_BCPORT", bc_port.to_string()));
    let (server, _) = tokio::task::spawn_blocking(move || start_tutorial_server(python, &env))
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || tutorial_client(python, &ns_env(ns_port)))
        .await
        .unwrap();
    assert_eq!(out, "Hi welcome Rashmi\n");
    drop(server);
    ns.shutdown();
}

/// An object whose errors a Pyro4 caller catches by class.
#[rmi::remote]
pub(crate) trait Checked {
    /// The square root of `n`; a negative `n` raises Python's `ValueError`.
    #[rmi(raises)]
    async fn root(&self, n: f64) -> Result<f64, rmi::RemoteError>;
    /// Fails as the name server fails: a `NamingError`, written in Pyro5's name.
    #[rmi(raises)]
    async fn missing(&self, name: String) -> Result<(), rmi::RemoteError>;
    /// A URI, which a Pyro4 caller receives as its own URI class.
    async fn whereabouts(&self) -> rmi::Uri;
}

struct CheckedObject;

impl Checked for CheckedObject {
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

    async fn missing(&self, name: String) -> Result<(), rmi::RemoteError> {
        Err(rmi::RemoteError::new(
            rmi::RemoteErrorKind::Resolve,
            "Pyro5.errors.NamingError",
            format!("unknown name: {name}"),
        ))
    }

    async fn whereabouts(&self) -> rmi::Uri {
        "PYRO:elsewhere@127.0.0.1:4000".parse().unwrap()
    }
}

/// A Rust daemon serving the tutorial's greeter and [`Checked`], registered in `ns` as
/// "server" and "checked" (with metadata "checked").
async fn rust_objects(ns: &rmi::naming::NameServerHandle) -> rmi::Daemon {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let greeter = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let checked = daemon
        .register_with_id(CheckedServer::new(CheckedObject), "example.checked")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let names = rmi::naming::NameServerProxy::connect(ns.uri())
        .await
        .unwrap();
    names.register("server", &greeter).await.unwrap();
    names
        .register_with("checked", &checked, false, ["checked".to_owned()].into())
        .await
        .unwrap();
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pyro4_tutorial_client_calls_a_rust_object_in_serpent_and_msgpack() {
    let Some(python) = python() else { return };
    let (ns, ns_port, _) = name_server().await;
    let daemon = rust_objects(&ns).await;
    for serializer in ["serpent", "msgpack"] {
        let mut env = ns_env(ns_port);
        env.push(("PYRO_SERIALIZER", serializer.into()));
        let out = tokio::task::spawn_blocking(move || tutorial_client(python, &env))
            .await
            .unwrap();
        assert_eq!(out, "Hi welcome Rashmi\n", "{serializer}");
    }
    daemon.shutdown();
    ns.shutdown();
}

/// A Pyro4 caller of [`Checked`] and of the name server: errors by class, URIs as URI objects,
/// Pyro4's `list` filters, a proxy without metadata, and a refused serializer.
const CHECKED_CALLER: &str = r#"
import sys
import Pyro4, Pyro4.errors
ns = Pyro4.locateNS()
print(type(ns.lookup("server")).__name__)
print(sorted(ns.list(metadata_all=["checked"])), sorted(ns.list(prefix="chec")))
try:
    ns.lookup("no.such.name")
except Pyro4.errors.NamingError as e:
    print("NamingError:", e)
try:
    ns.list(prefix="a", regex="b")
except ValueError as e:
    print("ValueError:", e)
checked = Pyro4.Proxy("PYRONAME:checked")
print(checked.root(16.0))
try:
    checked.root(-4.0)
except ValueError as e:
    print("ValueError:", e)
try:
    checked.missing("x")
except Pyro4.errors.NamingError as e:
    print("NamingError:", e)
where = checked.whereabouts()
print(type(where).__name__, where)
greeter = ns.lookup("server")
Pyro4.config.METADATA = False
with Pyro4.Proxy(greeter) as bare:
    print(bare.welcomeMessage("without metadata"))
# (Pyro4 picks the serializer per call: from here on, even ns's calls would be pickled.)
Pyro4.config.SERIALIZER = "pickle"
try:
    Pyro4.Proxy(greeter)._pyroBind()
except Pyro4.errors.CommunicationError as e:
    print("CommunicationError:", str(e).split("rejected: ")[1])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_errors_reach_a_pyro4_client_with_pyro4_classes_in_serpent_and_msgpack() {
    let Some(python) = python() else { return };
    let (ns, ns_port, _) = name_server().await;
    let daemon = rust_objects(&ns).await;
    for serializer in ["serpent", "msgpack"] {
        let mut env = ns_env(ns_port);
        env.push(("PYRO_SERIALIZER", serializer.into()));
        let out =
            tokio::task::spawn_blocking(move || run(python, &["-c", CHECKED_CALLER], &env, ""))
                .await
                .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let expected = [
            "URI",
            "['checked'] ['checked']",
            "NamingError: unknown name: no.such.name",
            "ValueError: you can only filter on one thing at a time",
            "4.0",
            "ValueError: no real square root of -4",
            "NamingError: unknown name: x",
            "URI PYRO:elsewhere@127.0.0.1:4000",
            "Hi welcome without metadata",
            "CommunicationError: message used serializer that is not accepted: 4",
        ];
        assert_eq!(lines, expected, "{serializer}:\n{out}");
    }
    daemon.shutdown();
    ns.shutdown();
}

/// Pyro4's CONNECT for `object` in serpent, asking for metadata, as a 4.82 client sends it.
fn pyro4_connect(object: &str, serializer: u8) -> Message {
    let payload = format!("# serpent utf-8 python3.2\n{{'handshake':'hello','object':'{object}'}}");
    Message::new(
        MessageType::Connect,
        serializer,
        FLAGS_META_ON_CONNECT,
        0,
        payload.into_bytes(),
    )
}

/// Reads one Pyro4 message, checking its header (checksum included) first.
async fn read_pyro4(s: &mut tokio::net::TcpStream) -> Message {
    let mut head = [0u8; PYRO4_HEADER_SIZE];
    s.read_exact(&mut head).await.unwrap();
    let header = Protocol::Pyro4.parse_header(&head, usize::MAX).unwrap();
    let mut rest = vec![0u8; header.total_len() - PYRO4_HEADER_SIZE];
    s.read_exact(&mut rest).await.unwrap();
    let mut whole = BytesMut::from(&[&head[..], &rest[..]].concat()[..]);
    Message::parse(&mut whole, &header).unwrap()
}

async fn greeting_daemon() -> (rmi::Daemon, rmi::Uri) {
    greeting_daemon_of(rmi::Daemon::builder()).await
}

/// [`greeting_daemon`] with `builder`'s settings.
async fn greeting_daemon_of(builder: rmi::DaemonBuilder) -> (rmi::Daemon, rmi::Uri) {
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "example.welcome")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

#[tokio::test]
async fn a_raw_pyro4_client_is_answered_in_protocol_48_with_meta_corr_and_pong() {
    let (daemon, uri) = greeting_daemon().await;
    let mut s = dial(&uri).await;
    s.write_all(&pyro4_connect("example.welcome", 1).to_bytes_in(Protocol::Pyro4))
        .await
        .unwrap();
    let ok = read_pyro4(&mut s).await;
    assert_eq!(ok.msg_type, MessageType::ConnectOk);
    assert_eq!(ok.serializer, 1, "the request's serializer");
    assert_eq!(
        ok.flags,
        FLAGS_META_ON_CONNECT | FLAGS_CORR_ID,
        "META_ON_CONNECT echoed, a CORR annotation added"
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.payload),
        "# serpent utf-8 python3.2\n{'handshake':'hello','meta':{'methods':['welcomeMessage'],'oneway':[],'attrs':[]}}"
    );
    // The captured INVOKE (pyro4-wire.md §15), then a PING with Pyro4's serializer 42.
    let invoke = Message::new(
        MessageType::Invoke,
        1,
        0,
        1,
        &b"# serpent utf-8 python3.2\n('example.welcome','welcomeMessage',('Rashmi',),{})"[..],
    );
    s.write_all(&invoke.to_bytes_in(Protocol::Pyro4))
        .await
        .unwrap();
    let result = read_pyro4(&mut s).await;
    assert_eq!((result.msg_type, result.seq), (MessageType::Result, 1));
    assert_eq!(
        &result.payload[..],
        b"# serpent utf-8 python3.2\n'Hi welcome Rashmi'"
    );
    assert!(result.has_flag(FLAGS_CORR_ID));
    let mut ping = Message::new(MessageType::Ping, 42, 0, 2, &b"ping"[..]);
    ping.corr_id = [9; 16];
    s.write_all(&ping.to_bytes_in(Protocol::Pyro4))
        .await
        .unwrap();
    let pong = read_pyro4(&mut s).await;
    assert_eq!(
        (pong.msg_type, pong.serializer, pong.seq, &pong.payload[..]),
        (MessageType::Ping, 42, 2, &b"pong"[..])
    );
    assert_eq!(pong.corr_id, [9; 16], "the caller's correlation id echoed");
    // A Pyro5 message on this Pyro4 connection is refused: the connection closes.
    let pyro5 = Message::new(MessageType::Ping, 42, 0, 3, &b"ping"[..]).to_bytes();
    s.write_all(&pyro5).await.unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0, "no answer, closed");
    daemon.shutdown();
}

#[tokio::test]
async fn pyro4_refusals_pickle_a_bad_checksum_and_an_unknown_object() {
    let (daemon, uri) = greeting_daemon().await;
    // Pickle (4 in Pyro4): a CONNECTFAIL in marshal (3), as a Pyro4 daemon words it.
    let mut s = dial(&uri).await;
    s.write_all(&pyro4_connect("example.welcome", 4).to_bytes_in(Protocol::Pyro4))
        .await
        .unwrap();
    let fail = read_pyro4(&mut s).await;
    assert_eq!(
        (fail.msg_type, fail.serializer),
        (MessageType::ConnectFail, 3)
    );
    let reason = "message used serializer that is not accepted: 4";
    let mut marshal = vec![b'u'];
    marshal.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    marshal.extend_from_slice(reason.as_bytes());
    assert_eq!(&fail.payload[..], &marshal[..]);

    // An unknown object with metadata asked for: CONNECTFAIL in the client's serializer.
    let mut s = dial(&uri).await;
    s.write_all(&pyro4_connect("nope", 1).to_bytes_in(Protocol::Pyro4))
        .await
        .unwrap();
    let fail = read_pyro4(&mut s).await;
    assert_eq!(
        (fail.msg_type, fail.serializer),
        (MessageType::ConnectFail, 1)
    );
    assert!(
        String::from_utf8_lossy(&fail.payload).contains("unknown object"),
        "{:?}",
        fail.payload
    );

    // A header whose checksum does not add up: closed from the header alone, no answer.
    let mut s = dial(&uri).await;
    let mut bytes = pyro4_connect("example.welcome", 1)
        .to_bytes_in(Protocol::Pyro4)
        .to_vec();
    bytes[23] ^= 0xff;
    s.write_all(&bytes[..PYRO4_HEADER_SIZE]).await.unwrap();
    let mut rest = Vec::new();
    // At once: a header taken at its word would wait for its body until the handshake
    // timeout (10 s), then close all the same.
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("closed from the header alone, not at the handshake timeout");
    assert_eq!(read.unwrap_or(0), 0);
    // The daemon goes on serving.
    let greeter = crate::support::GreeterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        greeter.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );
    daemon.shutdown();
}

/// A Pyro4 client over `max_connections` is refused in protocol 48, in its serializer (before,
/// the refusal went out in Pyro5's framing, which a Pyro4 client cannot read).
#[tokio::test]
async fn a_pyro4_client_over_max_connections_is_refused_in_protocol_48() {
    let (daemon, uri) = greeting_daemon_of(rmi::Daemon::builder().max_connections(1)).await;
    let held = crate::support::GreeterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        held.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );
    // Pyro4's json is 2 (Pyro5's marshal): answered in json.
    for serializer in [1, 2] {
        let mut s = dial(&uri).await;
        s.write_all(&pyro4_connect("example.welcome", serializer).to_bytes_in(Protocol::Pyro4))
            .await
            .unwrap();
        let fail = read_pyro4(&mut s).await;
        assert_eq!(
            (fail.msg_type, fail.serializer),
            (MessageType::ConnectFail, serializer)
        );
        // Decoded as a Pyro4 client of that serializer decodes it.
        let ser = Protocol::Pyro4.serializer(serializer).unwrap();
        let text: String = ser
            .decode(&fail.payload, &rmi::DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{ser:?}: {e}: {:?}", fail.payload));
        assert!(
            text.contains("too many connections (max_connections = 1)"),
            "{text}"
        );
    }
    daemon.shutdown();
}

/// A Pyro4 client with METADATA off names no object in its CONNECT: its connection is bound
/// to the first object it calls, and a validator that admits clients per object is asked again
/// with that object before the call runs.
#[tokio::test]
async fn a_pyro4_connection_that_names_no_object_is_bound_by_its_first_call_and_validated() {
    use rmi::protocol::frame::FLAGS_EXCEPTION;
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let daemon = rmi::Daemon::builder()
        .validator({
            let seen = seen.clone();
            move |info: &rmi::daemon::HandshakeInfo<'_>| {
                seen.lock().unwrap().push(info.object.to_string());
                match info.object {
                    "vault" => Err("no vault for you".to_string()),
                    _ => Ok("hello".to_string()),
                }
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "example.welcome")
        .unwrap();
    daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "vault")
        .unwrap();
    daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "lobby")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    // Pyro4 with METADATA=False: `{'handshake':'hello'}`, flags 0 (pyro4-wire.md).
    let bare_connect = || {
        let payload = b"# serpent utf-8 python3.2\n{'handshake':'hello'}";
        Message::new(MessageType::Connect, 1, 0, 0, &payload[..]).to_bytes_in(Protocol::Pyro4)
    };
    let invoke = |object: &str, seq: u16| {
        let payload =
            format!("# serpent utf-8 python3.2\n('{object}','welcomeMessage',('Rashmi',),{{}})");
        Message::new(MessageType::Invoke, 1, 0, seq, payload.into_bytes())
            .to_bytes_in(Protocol::Pyro4)
    };
    let payload = |msg: &Message| String::from_utf8_lossy(&msg.payload).into_owned();

    // The first call goes to the vault: the validator, asked with it, refuses; the call fails
    // with its reason and nothing is bound.
    let mut s = dial(&uri).await;
    s.write_all(&bare_connect()).await.unwrap();
    let ok = read_pyro4(&mut s).await;
    assert_eq!(ok.msg_type, MessageType::ConnectOk);
    // The validator's answer alone, no metadata: what Pyro4 hands `_pyroValidateHandshake`.
    let answer: String = Protocol::Pyro4
        .serializer(1)
        .unwrap()
        .decode(&ok.payload, &rmi::DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", payload(&ok)));
    assert_eq!(answer, "hello");
    s.write_all(&invoke("vault", 1)).await.unwrap();
    let refused = read_pyro4(&mut s).await;
    assert!(refused.has_flag(FLAGS_EXCEPTION), "{}", payload(&refused));
    assert!(
        payload(&refused).contains("SecurityError"),
        "{}",
        payload(&refused)
    );
    assert!(
        payload(&refused).contains("no vault for you"),
        "{}",
        payload(&refused)
    );
    // A call to an object the validator accepts binds the connection to it...
    s.write_all(&invoke("example.welcome", 2)).await.unwrap();
    let ok = read_pyro4(&mut s).await;
    assert!(!ok.has_flag(FLAGS_EXCEPTION), "{}", payload(&ok));
    assert_eq!(
        payload(&ok),
        "# serpent utf-8 python3.2\n'Hi welcome Rashmi'"
    );
    s.write_all(&invoke("example.welcome", 3)).await.unwrap();
    assert!(!read_pyro4(&mut s).await.has_flag(FLAGS_EXCEPTION));
    // ...and another object, even one the validator would accept, is refused on it.
    s.write_all(&invoke("lobby", 4)).await.unwrap();
    let other = read_pyro4(&mut s).await;
    assert!(other.has_flag(FLAGS_EXCEPTION));
    assert!(
        payload(&other).contains("opened for object \"example.welcome\""),
        "{}",
        payload(&other)
    );
    s.write_all(&invoke("vault", 5)).await.unwrap();
    assert!(read_pyro4(&mut s).await.has_flag(FLAGS_EXCEPTION));
    // The validator saw the empty object at the CONNECT, then each first call's object; the
    // vault was asked once (the refused first call), never after the connection was bound.
    assert_eq!(
        *seen.lock().unwrap(),
        ["", "vault", "example.welcome"],
        "the validator's questions"
    );
    daemon.shutdown();
}
