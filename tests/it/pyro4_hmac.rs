//! Pyro4's HMAC key (`_pyroHmacKey`) between rmi and Python's Pyro4 4.82, both ways, and
//! between rmi programs: the same key calls, another key or none is refused with Pyro4's words
//! on both sides, and a message signed otherwise on a connection that proved the key closes
//! that connection while the daemon serves everyone else.
//!
//! Without Python the Pyro4 tests skip loudly (and fail under `CI=true`). Loopback only.

use rmi::protocol::frame::Protocol;
use rmi::{Error, HmacKey};

use crate::pyro_client::PythonProcess;
use crate::support::{GreeterProxy, GreeterServer, GreetingMaker};

const KEY: &str = "pyro4 hmac key";

/// A greeter daemon on 127.0.0.1 signing with `key`.
async fn greeter(key: Option<&str>) -> (rmi::Daemon, rmi::Uri) {
    greeter_with(rmi::Daemon::builder(), key).await
}

/// [`greeter`] with `builder`'s other settings.
async fn greeter_with(builder: rmi::DaemonBuilder, key: Option<&str>) -> (rmi::Daemon, rmi::Uri) {
    serving(
        builder,
        key,
        GreeterServer::new(GreetingMaker),
        "example.greeter",
    )
    .await
}

/// A daemon from `builder` with `key`, serving `object` as `id`.
async fn serving(
    mut builder: rmi::DaemonBuilder,
    key: Option<&str>,
    object: impl rmi::Dispatch,
    id: &str,
) -> (rmi::Daemon, rmi::Uri) {
    if let Some(key) = key {
        builder = builder.hmac_key(HmacKey::new(key));
    }
    let daemon = builder.bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register_with_id(object, id).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

/// A greeter proxy to `uri` with `key`.
async fn call(uri: &rmi::Uri, key: Option<&str>, name: &str) -> Result<String, Error> {
    let mut builder = rmi::Proxy::builder(uri.clone());
    if let Some(key) = key {
        builder = builder.hmac_key(HmacKey::new(key));
    }
    let proxy: GreeterProxy = builder.connect().await?;
    proxy.welcome_message(name.into()).await
}

/// A Pyro4 client of `argv[1]` in serializer `argv[2]`: with the key, another key, none, and
/// a key changed on a connection that proved the right one.
const PYRO4_CLIENT: &str = r#"
import sys, Pyro4, Pyro4.errors
uri, serializer = sys.argv[1], sys.argv[2]
Pyro4.config.SERIALIZER = serializer
KEY = b"pyro4 hmac key"

def call(key, name):
    p = Pyro4.Proxy(uri)
    if key is not None:
        p._pyroHmacKey = key
    try:
        return p.welcomeMessage(name)
    except Pyro4.errors.PyroError as e:
        # "cannot connect to ('127.0.0.1', port): <reason>"
        return "%s: %s" % (type(e).__name__, str(e).split(": ", 1)[-1])

print(call(KEY, "Rashmi"))
print(call(b"another key", "Eve"))
print(call(None, "Mallory"))
# Compressed messages: the MAC is over the bytes sent.
Pyro4.config.COMPRESSION = True
p = Pyro4.Proxy(uri)
p._pyroHmacKey = KEY
p._pyroHandshake = "a handshake long enough to be compressed " * 20
print(p.welcomeMessage("compressed " * 30).count("compressed"))
Pyro4.config.COMPRESSION = False
p = Pyro4.Proxy(uri)
p._pyroHmacKey = KEY
print(p.welcomeMessage("first"))
p._pyroHmacKey = b"another key"
try:
    p.welcomeMessage("second")
    print("answered")
except Pyro4.errors.PyroError as e:
    print(type(e).__name__)
print(call(KEY, "again"))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pyro4_client_with_an_hmac_key_calls_an_rmi_daemon_with_the_same_key_only() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    let (daemon, uri) = greeter(Some(KEY)).await;
    for serializer in ["serpent", "json", "marshal", "msgpack"] {
        let args = [uri.to_string(), serializer.to_owned()];
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::python::run_python(python, PYRO4_CLIENT, &args)
        })
        .await
        .unwrap();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "Hi welcome Rashmi",
                // rmi does not sign a refusal of a client that did not prove the key (Pyro4
                // does, which gives anyone who connects a MAC of known words to guess from).
                "CommunicationError: hmac key config not symmetric",
                "CommunicationError: hmac key config not symmetric",
                "30",
                "Hi welcome first",
                "ConnectionClosedError",
                "Hi welcome again",
            ],
            "{serializer}"
        );
    }
    daemon.shutdown();
}

/// A Pyro4 daemon on 127.0.0.1 with `_pyroHmacKey`; `rekey` changes it, so that its own
/// answer goes out signed with another key.
const PYRO4_DAEMON: &str = r#"
import Pyro4

Pyro4.config.COMPRESSION = True

class Greeter(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + name
    def rekey(self):
        daemon._pyroHmacKey = b"another key"
        return "rekeyed"

# Metadata long enough for the CONNECTOK to go compressed (signed as sent).
for i in range(20):
    setattr(Greeter, "padding_method_number_%02d" % i, lambda self: None)
Greeter = Pyro4.expose(Greeter)

daemon = Pyro4.Daemon(host="127.0.0.1")
daemon._pyroHmacKey = b"pyro4 hmac key"
print("READY", daemon.register(Greeter(), "example.greeter"), flush=True)
daemon.requestLoop()
"#;

#[rmi::remote]
#[allow(dead_code)]
trait Rekeyed {
    async fn rekey(&self) -> String;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rmi_proxy_with_an_hmac_key_calls_a_pyro4_daemon_with_the_same_key_only() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    let (server, uri) = tokio::task::spawn_blocking(move || {
        let mut server = PythonProcess::start(python, &["-c", PYRO4_DAEMON]);
        let uri = server.wait_for("READY ");
        (server, uri)
    })
    .await
    .unwrap();
    let uri: rmi::Uri = uri.parse().unwrap();
    // The protocol is found as without a key: Pyro5 first, then Pyro4 from the answer.
    assert_eq!(
        call(&uri, Some(KEY), "Rashmi").await.unwrap(),
        "Hi welcome Rashmi"
    );
    let wrong = call(&uri, Some("another key"), "Eve").await.unwrap_err();
    assert!(
        matches!(&wrong, Error::ConnectFailed(m)
            if m.starts_with("the daemon refused the connection: message hmac mismatch")),
        "{wrong}"
    );
    let none = call(&uri, None, "Mallory").await.unwrap_err();
    assert!(
        matches!(&none, Error::ConnectFailed(m) if m.contains("hmac key config not symmetric")),
        "{none}"
    );

    // Many calls on one connection, then an answer signed with another key: the proxy refuses
    // it and the connection, as Pyro4's proxy does.
    let proxy: rmi::Proxy = rmi::Proxy::builder(uri.clone())
        .hmac_key(HmacKey::new(KEY))
        .protocol(Protocol::Pyro4)
        .connect()
        .await
        .unwrap();
    let greeter = GreeterProxy::from_proxy(proxy.clone());
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let greeter = greeter.clone();
            tokio::spawn(async move { greeter.welcome_message(format!("caller {i}")).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap(),
            format!("Hi welcome caller {i}")
        );
    }
    let rekeyed = RekeyedProxy::from_proxy(proxy).rekey().await.unwrap_err();
    assert!(
        rekeyed.is_connection() && rekeyed.to_string().contains("message hmac mismatch"),
        "{rekeyed:?}"
    );
    // The daemon now signs with the other key: so must its clients.
    assert_eq!(
        call(&uri, Some("another key"), "Eve").await.unwrap(),
        "Hi welcome Eve"
    );
    drop(server);
}

#[tokio::test]
async fn rmi_programs_with_one_hmac_key_call_each_other_and_others_are_refused() {
    let (daemon, uri) = greeter(Some(KEY)).await;
    assert_eq!(
        call(&uri, Some(KEY), "Rashmi").await.unwrap(),
        "Hi welcome Rashmi"
    );
    // A serializer set, so a call could go right behind the CONNECT; and compression.
    for ser in [rmi::Serializer::Bincode, rmi::Serializer::Serpent] {
        let greeter: GreeterProxy = rmi::Proxy::builder(uri.clone())
            .hmac_key(HmacKey::new(KEY))
            .serializer(ser)
            .compression(true)
            .connect()
            .await
            .unwrap();
        let long = "x".repeat(5000);
        assert_eq!(
            greeter.welcome_message(long.clone()).await.unwrap(),
            format!("Hi welcome {long}"),
            "{ser:?}"
        );
    }
    for (key, reason) in [
        (Some("another key"), "message hmac mismatch"),
        (None, "hmac key config not symmetric"),
    ] {
        let err = call(&uri, key, "Eve").await.unwrap_err();
        assert!(
            matches!(&err, Error::ConnectFailed(m) if m.contains(reason)),
            "{key:?}: {err}"
        );
    }
    // A daemon without a key refuses a client that signs, as a Pyro4 daemon does; its refusal
    // is unsigned, and the proxy says so in its own words too.
    let (plain, plain_uri) = greeter(None).await;
    let err = call(&plain_uri, Some(KEY), "Eve").await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("hmac key config not symmetric")
            && m.contains("does not carry the MAC of this proxy's HMAC key")),
        "{err}"
    );
    assert_eq!(
        call(&plain_uri, None, "Ada").await.unwrap(),
        "Hi welcome Ada"
    );
    // Still serving the right key after the refusals.
    assert_eq!(
        call(&uri, Some(KEY), "again").await.unwrap(),
        "Hi welcome again"
    );
    plain.shutdown();
    daemon.shutdown();

    // A shared secret and an HMAC key both sign in the HMAC annotation: one or the other.
    let both = rmi::Daemon::builder()
        .shared_secret(rmi::SharedSecret::new("s"))
        .hmac_key(HmacKey::new(KEY))
        .bind("127.0.0.1:0")
        .await
        .map(drop)
        .unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
}

/// A Pyro4 greeter with the key, registered as "server" in the name server on
/// 127.0.0.1:`argv[1]`, found with the key.
const PYRO4_KEYED_SERVER: &str = r#"
import sys, Pyro4
KEY = b"pyro4 hmac key"

@Pyro4.expose
class Greeter(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + name

daemon = Pyro4.Daemon(host="127.0.0.1")
daemon._pyroHmacKey = KEY
ns = Pyro4.locateNS("127.0.0.1", int(sys.argv[1]), broadcast=False, hmac_key=KEY)
ns.register("server", daemon.register(Greeter()))
print("READY", flush=True)
daemon.requestLoop()
"#;

/// A Pyro4 client of "server" by `PYRONAME:` with the key (Pyro4 looks the name up with the
/// proxy's key), and a look for the name server without it.
const PYRO4_KEYED_CLIENT: &str = r#"
import sys, Pyro4, Pyro4.errors
port = int(sys.argv[1])
p = Pyro4.Proxy("PYRONAME:server@127.0.0.1:%d" % port)
p._pyroHmacKey = b"pyro4 hmac key"
print(p.welcomeMessage("Rashmi"))
try:
    Pyro4.locateNS("127.0.0.1", port, broadcast=False).ping()
    print("found without the key")
except Pyro4.errors.PyroError as e:
    print(type(e).__name__, "|", str(e.__cause__).split(": ", 1)[-1])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyro4_programs_with_an_hmac_key_use_the_rmi_name_server_with_that_key() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    let ns = rmi::naming::NameServer::builder()
        .port(0)
        .no_broadcast()
        .daemon(rmi::Daemon::builder().hmac_key(HmacKey::new(KEY)))
        .start()
        .await
        .unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let server = tokio::task::spawn_blocking(move || {
        let port = port.to_string();
        let mut server = PythonProcess::start(python, &["-c", PYRO4_KEYED_SERVER, &port]);
        server.wait_for("READY");
        server
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        crate::python::run_python(python, PYRO4_KEYED_CLIENT, &[&port.to_string()])
    })
    .await
    .unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Hi welcome Rashmi",
            "NamingError | hmac key config not symmetric"
        ]
    );

    // rmi's locator with the key finds the name server and the Python object through it.
    let locator = rmi::naming::NsLocator::new()
        .host("127.0.0.1")
        .port(port)
        .no_broadcast();
    let found = locator
        .clone()
        .hmac_key(HmacKey::new(KEY))
        .locate()
        .await
        .unwrap();
    let uri = found.lookup("server").await.unwrap();
    assert_eq!(
        call(&uri, Some(KEY), "Ada").await.unwrap(),
        "Hi welcome Ada"
    );
    let refused = locator.locate().await.map(drop).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("hmac key config not symmetric"),
        "{refused}"
    );
    drop(server);
    ns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_registers_and_looks_up_in_a_pyro4_name_server_started_with_a_key() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    let (ns_process, port) = tokio::task::spawn_blocking(move || {
        let mut ns = PythonProcess::start(
            python,
            &[
                "-W",
                "ignore",
                "-m",
                "Pyro4.naming",
                "-n",
                "127.0.0.1",
                "-p",
                "0",
                "-x",
                "-k",
                KEY,
            ],
        );
        let uri: rmi::Uri = ns.wait_for("URI = ").parse().unwrap();
        let Some(rmi::Location::Tcp { port, .. }) = uri.location() else {
            panic!("the name server at {uri}");
        };
        (ns, *port)
    })
    .await
    .unwrap();
    let (daemon, uri) = greeter(Some(KEY)).await;
    let locator = rmi::naming::NsLocator::new()
        .host("127.0.0.1")
        .port(port)
        .no_broadcast();
    let ns = locator
        .clone()
        .hmac_key(HmacKey::new(KEY))
        .locate()
        .await
        .unwrap();
    ns.register("rust.greeter", &uri).await.unwrap();
    let found = ns.lookup("rust.greeter").await.unwrap();
    assert_eq!(found, uri);
    assert_eq!(
        call(&found, Some(KEY), "Rashmi").await.unwrap(),
        "Hi welcome Rashmi"
    );
    let wrong = locator
        .hmac_key(HmacKey::new("another key"))
        .locate()
        .await
        .map(drop)
        .unwrap_err();
    assert!(
        wrong.to_string().contains("message hmac mismatch"),
        "{wrong}"
    );
    daemon.shutdown();
    drop(ns_process);
}

/// A keyed proxy takes only a connect answer signed with its key: a daemon that accepts it
/// without the key's MAC (an impostor; a Pyro5 daemon, which knows no HMAC, accepts anything)
/// is refused, and the proxy sends it nothing more, its call least of all. Here a relay strips
/// the MAC off a keyed daemon's real CONNECTOK (helper-150 #1: no daemon that accepts a keyed
/// proxy without signing had ever been shown one).
#[tokio::test]
async fn a_keyed_proxy_refuses_a_connect_answer_without_the_keys_mac() {
    use rmi::protocol::frame::{Message, MessageType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (daemon, uri) = greeter(Some(KEY)).await;
    let Some(rmi::Location::Tcp { port, .. }) = uri.location().cloned() else {
        panic!("{uri}");
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relayed = rmi::Uri::tcp(
        uri.object().unwrap(),
        "127.0.0.1",
        listener.local_addr().unwrap().port(),
    );
    let relay = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut daemon = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (connect, kind) = crate::first_call::next_frame(&mut client).await.unwrap();
        assert_eq!(kind, MessageType::Connect);
        daemon.write_all(&connect).await.unwrap();
        let (answer, kind) = crate::first_call::next_frame(&mut daemon).await.unwrap();
        assert_eq!(kind, MessageType::ConnectOk);
        let protocol = Protocol::detect(&answer).unwrap();
        let header = protocol.parse_header(&answer, 1 << 20).unwrap();
        let mut answer = Message::parse(&mut answer[..].into(), &header).unwrap();
        let signed = answer.annotations.len();
        answer.annotations.retain(|(id, _)| id != b"HMAC");
        assert_eq!(answer.annotations.len(), signed - 1, "the daemon signed");
        client
            .write_all(&answer.to_bytes_in(protocol))
            .await
            .unwrap();
        // What the proxy sends after the answer, up to its close.
        let mut after = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut after),
        )
        .await;
        after
    });
    let err = call(&relayed, Some(KEY), "Eve").await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("carries no MAC")),
        "{err}"
    );
    let after = relay.await.unwrap();
    assert!(
        after.is_empty(),
        "{} bytes sent after an unsigned answer",
        after.len()
    );
    daemon.shutdown();
}

/// An rmi proxy refused because the daemon is at its `max_connections`: with the daemon's key
/// the refusal is signed and read as it is; with another key it is not signed (the daemon
/// signs only for a client that proved the key: a refusal of known words signed for any
/// client would let it test guesses of the key offline), so that proxy hears of a key that
/// does not match, not of a MAC that does not (helper-150 #2).
#[tokio::test]
async fn a_refusal_at_max_connections_is_signed_only_for_a_client_with_the_key() {
    let (daemon, uri) = greeter_with(rmi::Daemon::builder().max_connections(1), Some(KEY)).await;
    let holder: GreeterProxy = rmi::Proxy::builder(uri.clone())
        .hmac_key(HmacKey::new(KEY))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        holder.welcome_message("holder".into()).await.unwrap(),
        "Hi welcome holder"
    );
    let with_key = call(&uri, Some(KEY), "Ann").await.unwrap_err();
    assert!(
        matches!(&with_key, Error::ConnectFailed(m) if m.contains("too many connections")
            && !m.contains("MAC")),
        "{with_key}"
    );
    let other_key = call(&uri, Some("another key"), "Eve").await.unwrap_err();
    assert!(
        matches!(&other_key, Error::ConnectFailed(m) if m.contains("too many connections")
            && m.contains("hmac key config not symmetric")
            && !m.contains("message hmac mismatch")),
        "{other_key}"
    );
    drop(holder);
    daemon.shutdown();
}

/// A Pyro4 client with the daemon's HMAC key, refused because the daemon is at its
/// `max_connections`, is told so: the refusal is signed, as the client proved the key. (Before,
/// it went unsigned, and Pyro4 said "hmac key config not symmetric": a key problem to chase
/// where there was none.) A client without the key gets the refusal unsigned, which it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pyro4_client_with_the_key_refused_at_max_connections_is_told_why() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    let (daemon, uri) = greeter_with(rmi::Daemon::builder().max_connections(1), Some(KEY)).await;
    let holder = rmi::Proxy::builder(uri.clone()).hmac_key(HmacKey::new(KEY));
    let holder: GreeterProxy = holder.connect().await.unwrap();
    assert_eq!(
        holder.welcome_message("holder".into()).await.unwrap(),
        "Hi welcome holder"
    );
    let script = r#"
import sys, Pyro4, Pyro4.errors
def call(key):
    p = Pyro4.Proxy(sys.argv[1])
    if key is not None:
        p._pyroHmacKey = key
    try:
        return p.welcomeMessage("Rashmi")
    except Pyro4.errors.PyroError as e:
        return "%s: %s" % (type(e).__name__, str(e).split(": ", 1)[-1])
print(call(b"pyro4 hmac key"))
print(call(None))
"#;
    let target = uri.to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::python::run_python(python, script, &[target.as_str()])
    })
    .await
    .unwrap();
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("too many connections"),
        "the client with the key: {out}"
    );
    assert!(
        lines[1].contains("too many connections"),
        "the client without: {out}"
    );
    drop(holder);
    daemon.shutdown();
}

/// Over Pyro4's protocol, whose header counts the annotations in 16 bits, a call whose
/// annotations would not fit fails alone, not sent, and the connection serves on. (Before, the
/// annotations past the count were left out of the frame after the MAC was computed over
/// them: the daemon refused the message and closed the connection, failing every call on it;
/// without a key, the annotation was dropped without a word: helper-128 #2.)
#[tokio::test]
async fn annotations_over_pyro4s_count_fail_their_call_only() {
    for key in [Some("the-key"), None] {
        let (daemon, uri) = greeter(key).await;
        let mut builder = rmi::Proxy::builder(uri.clone()).protocol(Protocol::Pyro4);
        if let Some(key) = key {
            builder = builder.hmac_key(HmacKey::new(key));
        }
        let proxy: GreeterProxy = builder.connect().await.unwrap();
        assert_eq!(
            proxy.welcome_message("first".into()).await.unwrap(),
            "Hi welcome first"
        );
        let loaded =
            GreeterProxy::from_proxy(proxy.proxy().with_annotation(*b"BIGA", vec![0u8; 70_000]));
        let err = loaded.welcome_message("big".into()).await.unwrap_err();
        assert!(
            err.is_not_executed() && err.to_string().contains("Pyro4's header can count"),
            "{key:?}: {err}"
        );
        assert_eq!(
            proxy.welcome_message("after".into()).await.unwrap(),
            "Hi welcome after",
            "{key:?}"
        );
        daemon.shutdown();
    }
}

/// An object whose method sets a reply annotation of the size asked for.
#[rmi::remote]
trait Annotator {
    /// Returns `size`, with a `BIGR` reply annotation of `size` bytes.
    async fn annotate(&self, size: u64) -> u64;
    /// Fails with `app.Refused`, with a `BIGR` reply annotation of `size` bytes.
    #[rmi(raises)]
    async fn annotate_and_fail(&self, size: u64) -> Result<u64, rmi::RemoteError>;
    /// The daemon's id of the connection the call came on.
    async fn connection(&self) -> u64;
}

struct AnnotatorObject;

impl Annotator for AnnotatorObject {
    async fn annotate(&self, size: u64) -> u64 {
        let ctx = rmi::context::current().expect("a context");
        ctx.set_response_annotation(*b"BIGR", vec![0u8; size as usize]);
        size
    }

    async fn annotate_and_fail(&self, size: u64) -> Result<u64, rmi::RemoteError> {
        self.annotate(size).await;
        Err(rmi::RemoteError::new(
            rmi::RemoteErrorKind::Other,
            "app.Refused",
            "refused",
        ))
    }

    async fn connection(&self) -> u64 {
        rmi::context::current().expect("a context").connection()
    }
}

/// A daemon's reply whose annotations Pyro4's header cannot count (a method's 70 KB reply
/// annotation) fails that call with the bound named, with Pyro4's HMAC key and without, and
/// the connection serves on. (Before, the frame left the annotation out: under the key the
/// MAC no longer matched, the proxy refused the reply and dropped the connection; without it
/// the annotation vanished unsaid.)
#[tokio::test]
async fn reply_annotations_over_pyro4s_count_fail_their_call_only() {
    for key in [Some("the-key"), None] {
        let object = AnnotatorServer::new(AnnotatorObject);
        let (daemon, uri) = serving(rmi::Daemon::builder(), key, object, "annotator").await;
        let mut proxy = rmi::Proxy::builder(uri.clone()).protocol(Protocol::Pyro4);
        if let Some(key) = key {
            proxy = proxy.hmac_key(HmacKey::new(key));
        }
        let proxy: AnnotatorProxy = proxy.connect().await.unwrap();
        assert_eq!(proxy.annotate(1_000).await.unwrap(), 1_000, "{key:?}");
        let first = proxy.connection().await.unwrap();
        let err = proxy.annotate(70_000).await.unwrap_err();
        assert!(
            matches!(&err, Error::Remote(e) if e.type_name == "rmi.MessageTooLarge")
                && err.to_string().contains("Pyro4's header can count"),
            "{key:?}: {err:?}"
        );
        assert_eq!(proxy.annotate(10).await.unwrap(), 10, "{key:?}");
        // A method's own error stays its error, sent without the annotations.
        let err = proxy.annotate_and_fail(70_000).await.unwrap_err();
        assert!(
            matches!(&err, Error::Remote(e) if e.type_name == "app.Refused"),
            "{key:?}: {err:?}"
        );
        assert_eq!(
            proxy.connection().await.unwrap(),
            first,
            "{key:?}: the connection served on"
        );
        daemon.shutdown();
    }
}
