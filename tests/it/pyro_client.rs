//! Rust as a Pyro client, without configuration (issue 9): a Rust proxy calls Python Pyro5 and
//! Pyro4 objects found by `PYRONAME:` through Python's own name servers (`pyro5-ns`,
//! `python -m Pyro4.naming`), a Rust daemon registers in them and Python calls it, Python
//! exceptions arrive with their class, message and traceback, and rmi-to-rmi calls still
//! negotiate bincode.
//!
//! Nothing is configured on the Rust side: the proxy's CONNECT goes in serpent with an offer of
//! bincode that only rmi daemons answer, and a Pyro4 daemon is recognised by the protocol-48
//! CONNECTFAIL it answers a Pyro5 header with. The venvs are `python.rs`'s and `pyro4.rs`'s;
//! without Python the tests skip loudly (and fail under `CI=true` or `RMI_TEST_NO_SKIP=1`).
//! Loopback only; every server binds port 0 and says where it is.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use rmi::naming::{NameServerProxy, NsLocator};
use rmi::protocol::frame::{check, Message, MessageType, Protocol};
use rmi::protocol::names::SERIALIZER_ANNOTATION;
use rmi::{Error, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{recording_relay, GreeterProxy, GreeterServer, GreetingMaker};

/// Pyro5's venv (python.rs's).
fn python5() -> Option<&'static PathBuf> {
    crate::python::python()
}

/// Pyro4's venv (the one pyro4.rs uses).
fn python4() -> Option<&'static PathBuf> {
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

/// A Python process this test started, killed by its own handle when the test ends.
pub(crate) struct PythonProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl PythonProcess {
    /// Starts `python -u <args>`, stdout piped.
    pub(crate) fn start(python: &Path, args: &[&str]) -> PythonProcess {
        let mut child = Command::new(python)
            .arg("-u")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        PythonProcess { child, stdout }
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it. Bounded by the
    /// process: if it exits first, the read ends and this panics.
    pub(crate) fn wait_for(&mut self, prefix: &str) -> String {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read python output");
            assert!(
                n > 0,
                "python exited before printing {prefix:?}; it said:\n{seen}"
            );
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
            seen.push_str(&line);
        }
    }
}

impl Drop for PythonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a Python name server (`-m Pyro5.nameserver` or `-m Pyro4.naming`) on 127.0.0.1, a
/// port of its choosing, without broadcast; returns it and its port.
async fn python_name_server(python: &'static Path, module: &'static str) -> (PythonProcess, u16) {
    tokio::task::spawn_blocking(move || {
        let mut ns =
            PythonProcess::start(python, &["-m", module, "-n", "127.0.0.1", "-p", "0", "-x"]);
        let uri: rmi::Uri = ns
            .wait_for("URI = ")
            .parse()
            .expect("the name server's uri");
        let port = match uri.location() {
            Some(rmi::Location::Tcp { port, .. }) => *port,
            other => panic!("a name server at {other:?}"),
        };
        (ns, port)
    })
    .await
    .unwrap()
}

/// The name server at 127.0.0.1:`port`, found as `locate_ns` finds one, by its address.
async fn locate(port: u16) -> NameServerProxy {
    NsLocator::new()
        .host("127.0.0.1")
        .port(port)
        .no_broadcast()
        .locate()
        .await
        .expect("locate the Python name server")
}

/// A Python object with the methods a Rust contract mirrors, served by a Pyro5 or Pyro4 daemon
/// and registered under argv[2] in the name server on 127.0.0.1:argv[1]. (`pyro` is `Pyro5.api`
/// or `Pyro4`; both spell these the same.)
const PYTHON_SERVER: &str = r#"
import sys
if sys.argv[3] == "5":
    import Pyro5.api as pyro
    locate = pyro.locate_ns
else:
    import Pyro4 as pyro
    pyro.config.SERIALIZERS_ACCEPTED.add("msgpack")
    locate = pyro.locateNS

class InsufficientFunds(Exception):
    pass

@pyro.expose
class Account(object):
    def __init__(self):
        self._balance = 10.0
    @property
    def balance(self):
        return self._balance
    @balance.setter
    def balance(self, value):
        if value < 0:
            raise ValueError("a balance cannot be negative")
        self._balance = value
    @property
    def note(self):
        return getattr(self, "_note", "none yet")
    @note.setter
    def note(self, value):
        self._note = value
    def welcomeMessage(self, name):
        return "Hi welcome " + name
    def add(self, a, b):
        return a + b
    def echo(self, value):
        return value
    def withdraw(self, amount):
        raise ValueError("cannot withdraw %s: insufficient funds" % amount)
    def divide(self, a, b):
        return a / b
    def greet(self, name, greeting="Hello"):
        return "%s, %s" % (greeting, name)

daemon = pyro.Daemon(host="127.0.0.1")
uri = daemon.register(Account(), "example.account")
locate("127.0.0.1", int(sys.argv[1])).register(sys.argv[2], uri)
print("READY", uri)
daemon.requestLoop()
"#;

/// Starts [`PYTHON_SERVER`] with Pyro `version` ("5" or "4"), registered as `name`.
async fn python_server(
    python: &'static Path,
    ns_port: u16,
    name: &'static str,
    version: &'static str,
) -> PythonProcess {
    tokio::task::spawn_blocking(move || {
        let port = ns_port.to_string();
        let mut server = PythonProcess::start(python, &["-c", PYTHON_SERVER, &port, name, version]);
        server.wait_for("READY ");
        server
    })
    .await
    .unwrap()
}

/// The Python class `Account`, as a Rust contract: the wire names are Python's. (Only its
/// proxy is used: the object is Python's.)
#[rmi::remote]
#[allow(dead_code)]
pub(crate) trait Account {
    /// "Hi welcome " + name.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
    /// a + b.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Raises `ValueError`.
    async fn withdraw(&self, amount: u32) -> f64;
    /// a / b: `ZeroDivisionError` when `b` is 0.
    async fn divide(&self, a: f64, b: f64) -> f64;
    /// "<greeting>, <name>": a `None` greeting is left out of the call, so Python's default
    /// applies.
    async fn greet(&self, name: String, greeting: Option<String>) -> String;
    /// The balance: a Python `@property`.
    #[rmi(property)]
    async fn balance(&self) -> f64;
    /// Sets it: `ValueError` when negative.
    #[rmi(setter)]
    async fn set_balance(&self, value: f64);
    /// A note: a Python `@property` that takes `None`.
    #[rmi(property)]
    async fn note(&self) -> Option<String>;
    /// Sets it, `None` included.
    #[rmi(setter)]
    async fn set_note(&self, value: Option<String>);
    /// Python's `echo(value)`, whose argument has no default: a `None` goes as one.
    #[rmi(name = "echo", keep_none)]
    async fn echo_option(&self, value: Option<String>) -> Option<String>;
}

/// Python's `echo` again, its argument's type an alias of an `Option`. (Only its proxy is
/// used.)
#[rmi::remote]
#[allow(dead_code)]
trait Aliased {
    #[rmi(name = "echo", keep_none)]
    async fn echo_alias(&self, value: MaybeText) -> MaybeText;
}

/// An `Option` the macro cannot see through its name.
type MaybeText = Option<String>;

/// Calls the Python `Account` behind `account`, typed and untyped, and checks its exceptions:
/// what every Python-server test below does.
async fn exercise(account: &AccountProxy) {
    assert_eq!(
        account.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );
    assert_eq!(account.add(40, 2).await.unwrap(), 42);
    assert_eq!(
        account.greet("Irmen".into(), None).await.unwrap(),
        "Hello, Irmen"
    );
    assert_eq!(
        account
            .greet("Irmen".into(), Some("Hi".into()))
            .await
            .unwrap(),
        "Hi, Irmen"
    );
    // With `keep_none`, a trailing `None` is sent (before, a typed proxy always left it out,
    // and Python raised `TypeError` for the missing argument: helper-122 #1).
    assert_eq!(account.echo_option(None).await.unwrap(), None);
    // Through an alias too (helper-166 #1: left out, and Python raised `TypeError`).
    let aliased = AliasedProxy::from_proxy(account.proxy().clone());
    assert_eq!(aliased.echo_alias(None).await.unwrap(), None);
    assert_eq!(
        account.echo_option(Some("x".into())).await.unwrap(),
        Some("x".into())
    );
    // Untyped calls reach any method, with any serde values.
    let proxy = account.proxy();
    let sum: String = proxy.call("add", &("con", "cat")).await.unwrap();
    assert_eq!(sum, "concat");
    let value = BTreeMap::from([
        ("primes".to_owned(), vec![2i64, 3, 5, 7]),
        ("big".to_owned(), vec![i64::MAX]),
    ]);
    let back: BTreeMap<String, Vec<i64>> = proxy.call("echo", &(value.clone(),)).await.unwrap();
    assert_eq!(back, value);
    let greeted: String = proxy.call("greet", &("Ada", "Good day")).await.unwrap();
    assert_eq!(greeted, "Good day, Ada");
    // Python's exceptions: class, message, and its traceback as the chain.
    match account.withdraw(100).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.type_name, "builtins.ValueError", "{e:?}");
            assert_eq!(e.message, "cannot withdraw 100: insufficient funds");
            assert!(
                e.chain.first().is_some_and(|l| l.starts_with("Traceback")),
                "{e:?}"
            );
            assert!(
                e.chain.iter().any(|l| l.contains("in withdraw")),
                "the Python frame is in the traceback: {e:?}"
            );
        }
        other => panic!("expected a ValueError, got {other:?}"),
    }
    match account.divide(1.0, 0.0).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.type_name, "builtins.ZeroDivisionError", "{e:?}");
            assert_eq!(e.message, "float division by zero");
        }
        other => panic!("expected a ZeroDivisionError, got {other:?}"),
    }
    // A property, read and set; the setter's exception; the metadata names it.
    let before = account.balance().await.unwrap();
    account.set_balance(before + 15.5).await.unwrap();
    assert_eq!(account.balance().await.unwrap(), before + 15.5);
    match account.set_balance(-1.0).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.type_name, "builtins.ValueError", "{e:?}");
            assert_eq!(e.message, "a balance cannot be negative");
        }
        other => panic!("expected a ValueError, got {other:?}"),
    }
    assert_eq!(account.balance().await.unwrap(), before + 15.5);
    // A property set to `None`: the value goes as an argument all the same (before, it was
    // left out as a trailing `None`, and Python's `__setattr__` raised `IndexError`).
    account.set_note(None).await.unwrap();
    assert_eq!(account.note().await.unwrap(), None);
    account.set_note(Some("paid".into())).await.unwrap();
    assert_eq!(account.note().await.unwrap().as_deref(), Some("paid"));
    let meta = account.proxy().metadata().await.unwrap();
    let mut attrs = meta.attrs.clone();
    attrs.sort();
    assert_eq!(attrs, ["balance", "note"], "{meta:?}");
    let err = proxy
        .call::<_, f64>("__getattr__", &("_balance",))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote(e) if e.type_name == "builtins.AttributeError"),
        "a private attribute is not remote: {err:?}"
    );
    // A method the object does not have: Python's own error, and the connection goes on.
    let err = proxy.call::<_, ()>("nope", &[(); 0]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote(e) if e.type_name == "builtins.AttributeError"),
        "{err:?}"
    );
    assert_eq!(account.add(1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_calls_a_python_pyro5_server_by_pyroname_through_pyro5_ns() {
    let Some(python) = python5() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro5.nameserver").await;
    let _server = python_server(python, ns_port, "example.account", "5").await;
    // Nothing configured: the name server and the object are Python's, so serpent it is.
    let uri = format!("PYRONAME:example.account@127.0.0.1:{ns_port}");
    let account = AccountProxy::connect(uri.as_str()).await.unwrap();
    exercise(&account).await;
    assert_eq!(account.proxy().serializer(), Serializer::Serpent);
    assert_eq!(account.proxy().protocol(), Some(Protocol::Pyro5));
    // A batch made before a negotiating proxy connected works: it is in serpent for Python
    // (as well as in bincode, for an rmi daemon). So does one made after connecting.
    let lazy = AccountProxy::from_uri(uri.as_str()).unwrap();
    let mut early = lazy.batch();
    let first = early.add(1, 2);
    assert_eq!(early.send().await.unwrap().get(&first).unwrap(), 3);
    let mut late = lazy.batch();
    let sum = late.add(1, 2);
    assert_eq!(late.send().await.unwrap().get(&sum).unwrap(), 3);
    assert_eq!(
        account.proxy().connected_uri().unwrap().object(),
        Some("example.account")
    );
    // msgpack when asked for (Pyro5 daemons read every serializer they have installed).
    let packed: AccountProxy = AccountProxy::builder(uri.as_str())
        .unwrap()
        .serializer(Serializer::MsgPack)
        .connect()
        .await
        .unwrap();
    exercise(&packed).await;
    assert_eq!(packed.proxy().serializer(), Serializer::MsgPack);
    // The name server itself, through the typed client.
    let ns = locate(ns_port).await;
    ns.ping().await.unwrap();
    let found = ns.lookup("example.account").await.unwrap();
    assert_eq!(found.object(), Some("example.account"));
    // Pyro5's list(prefix=None, regex=None, return_metadata=False): the typed client's unused
    // trailing arguments are left out.
    let listed = ns.list().await.unwrap();
    assert_eq!(listed.get("example.account"), Some(&found), "{listed:?}");
    assert!(listed.contains_key("Pyro.NameServer"), "{listed:?}");
    assert_eq!(
        ns.list_prefix("example.")
            .await
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        ["example.account"]
    );
    let err = ns.lookup("no.such.name").await.unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("unknown name")),
        "a NamingError from Python is a naming failure: {err:?}"
    );
    let err = AccountProxy::connect(format!("PYRONAME:no.such.name@127.0.0.1:{ns_port}").as_str())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Resolve(_)), "{err:?}");
}

/// A Rust daemon on 127.0.0.1 serving the tutorial's greeter.
async fn rust_greeter() -> (rmi::Daemon, rmi::Uri) {
    serve_greeter(rmi::Daemon::bind("127.0.0.1:0").await.unwrap())
}

/// `daemon` serving the tutorial's greeter, in a task of its own.
fn serve_greeter(daemon: rmi::Daemon) -> (rmi::Daemon, rmi::Uri) {
    let uri = daemon
        .register_with_id(GreeterServer::new(GreetingMaker), "example.rust.greeter")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

/// Runs `script` with `args`; returns its stdout.
async fn run(python: &'static Path, script: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let python = python.to_path_buf();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::python::run_python(&python, script, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_server_registered_in_pyro5_ns_is_called_by_python_and_by_rust_in_bincode() {
    let Some(python) = python5() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro5.nameserver").await;
    let (daemon, uri) = rust_greeter().await;
    let ns = locate(ns_port).await;
    ns.register("rust.greeter", &uri).await.unwrap();
    // Python stores it as a string; it reads back as the same URI.
    assert_eq!(ns.lookup("rust.greeter").await.unwrap(), uri);
    const CLIENT: &str = r#"
import sys
import Pyro5.api
ns_port = int(sys.argv[1])
print(Pyro5.api.locate_ns("127.0.0.1", ns_port).lookup("rust.greeter"))
for serializer in ("serpent", "msgpack"):
    Pyro5.config.SERIALIZER = serializer
    with Pyro5.api.Proxy("PYRONAME:rust.greeter@127.0.0.1:%d" % ns_port) as greeter:
        print(greeter.welcomeMessage(serializer))
"#;
    let out = run(python, CLIENT, vec![ns_port.to_string()]).await;
    assert_eq!(
        out,
        format!("{uri}\nHi welcome serpent\nHi welcome msgpack\n")
    );
    // A Rust client finds the Rust object through Python's name server, and the two speak
    // bincode: negotiated, with nothing configured.
    let greeter =
        GreeterProxy::connect(format!("PYRONAME:rust.greeter@127.0.0.1:{ns_port}").as_str())
            .await
            .unwrap();
    assert_eq!(
        greeter.welcome_message("Rust".into()).await.unwrap(),
        "Hi welcome Rust"
    );
    assert_eq!(greeter.proxy().serializer(), Serializer::Bincode);
    // By metadata, through Pyro5's yplookup.
    ns.register_with(
        "rust.tagged",
        &uri,
        true,
        ["rust.greeting".to_owned()].into(),
    )
    .await
    .unwrap();
    let by_meta =
        GreeterProxy::connect(format!("PYROMETA:rust.greeting@127.0.0.1:{ns_port}").as_str())
            .await
            .unwrap();
    assert_eq!(
        by_meta.welcome_message("meta".into()).await.unwrap(),
        "Hi welcome meta"
    );
    let err = ns
        .register_with("rust.tagged", &uri, true, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("already registered")),
        "safe=True refused by Python: {err:?}"
    );
    assert!(ns.remove("rust.greeter").await.unwrap());
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_calls_a_python_pyro4_server_by_pyroname_through_the_pyro4_name_server() {
    let Some(python) = python4() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro4.naming").await;
    let _server = python_server(python, ns_port, "example.account", "4").await;
    // The URI says nothing of Pyro4: the proxy finds out from the daemon's answer.
    let uri = format!("PYRONAME:example.account@127.0.0.1:{ns_port}");
    let account = AccountProxy::connect(uri.as_str()).await.unwrap();
    exercise(&account).await;
    assert_eq!(account.proxy().protocol(), Some(Protocol::Pyro4));
    assert_eq!(account.proxy().serializer(), Serializer::Serpent);
    // Reconnecting starts from what it learned.
    account.proxy().close();
    assert_eq!(account.add(2, 2).await.unwrap(), 4);
    assert_eq!(account.proxy().protocol(), Some(Protocol::Pyro4));
    // Counted through a relay: finding out costs one dial more, once; a reconnect dials once.
    let daemon_port = match locate(ns_port)
        .await
        .lookup("example.account")
        .await
        .unwrap()
        .location()
    {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let relay = crate::support::Relay::start(daemon_port).await;
    let counted =
        AccountProxy::connect(format!("PYRO:example.account@127.0.0.1:{}", relay.port).as_str())
            .await
            .unwrap();
    assert_eq!(counted.add(1, 1).await.unwrap(), 2);
    assert_eq!(relay.accepted(), 2, "a Pyro5 CONNECT, then Pyro4's");
    counted.proxy().close();
    assert_eq!(counted.add(2, 2).await.unwrap(), 4);
    assert_eq!(
        relay.accepted(),
        3,
        "the reconnect dialed Pyro4 straight away"
    );
    // Set explicitly: Pyro4 and msgpack (which this server accepts).
    let packed: AccountProxy = AccountProxy::builder(uri.as_str())
        .unwrap()
        .protocol(Protocol::Pyro4)
        .serializer(Serializer::MsgPack)
        .connect()
        .await
        .unwrap();
    exercise(&packed).await;
    assert_eq!(packed.proxy().serializer(), Serializer::MsgPack);
    // Asking a Pyro4 daemon for Pyro5 is an explicit error, not a hang.
    let err = AccountProxy::builder(uri.as_str())
        .unwrap()
        .protocol(Protocol::Pyro5)
        .reconnect_attempts(0)
        .connect::<AccountProxy>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Pyro4"), "{err}");
    // The Pyro4 name server: its NamingError is a naming failure too.
    let ns = locate(ns_port).await;
    assert_eq!(
        ns.list_prefix("example.")
            .await
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        ["example.account"]
    );
    let err = ns.lookup("no.such.name").await.unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("unknown name")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_server_registered_in_the_pyro4_name_server_is_called_by_pyro4_and_by_rust() {
    let Some(python) = python4() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro4.naming").await;
    let (daemon, uri) = rust_greeter().await;
    // The URI goes as Pyro4's URI class, which Pyro4 rebuilds and stores.
    let ns = locate(ns_port).await;
    ns.register_with(
        "rust.greeter",
        &uri,
        false,
        ["rust.greeting".to_owned()].into(),
    )
    .await
    .unwrap();
    assert_eq!(ns.lookup("rust.greeter").await.unwrap(), uri);
    const CLIENT: &str = r#"
import sys
import Pyro4
ns_port = int(sys.argv[1])
uri = Pyro4.locateNS("127.0.0.1", ns_port).lookup("rust.greeter")
print(uri)
with Pyro4.Proxy("PYRONAME:rust.greeter@127.0.0.1:%d" % ns_port) as greeter:
    print(greeter.welcomeMessage("serpent"))
# (Pyro4's name server takes no msgpack; the Rust daemon does.)
Pyro4.config.SERIALIZER = "msgpack"
with Pyro4.Proxy(uri) as greeter:
    print(greeter.welcomeMessage("msgpack"))
"#;
    let out = run(python, CLIENT, vec![ns_port.to_string()]).await;
    assert_eq!(
        out,
        format!("{uri}\nHi welcome serpent\nHi welcome msgpack\n")
    );
    // Rust to Rust through the Pyro4 name server: the name server is Pyro4, the object is
    // rmi's, and the proxy speaks Pyro5 and bincode to it.
    let greeter =
        GreeterProxy::connect(format!("PYRONAME:rust.greeter@127.0.0.1:{ns_port}").as_str())
            .await
            .unwrap();
    assert_eq!(
        greeter.welcome_message("Rust".into()).await.unwrap(),
        "Hi welcome Rust"
    );
    assert_eq!(greeter.proxy().serializer(), Serializer::Bincode);
    assert_eq!(greeter.proxy().protocol(), Some(Protocol::Pyro5));
    // By metadata: Pyro4's name server has no yplookup; its list filters by metadata instead.
    let by_meta =
        GreeterProxy::connect(format!("PYROMETA:rust.greeting@127.0.0.1:{ns_port}").as_str())
            .await
            .unwrap();
    assert_eq!(
        by_meta.welcome_message("meta".into()).await.unwrap(),
        "Hi welcome meta"
    );
    daemon.shutdown();
}

/// Frames in `bytes` (client to daemon), in order.
fn frames(bytes: &[u8]) -> Vec<Message> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(header) = check(&buf, usize::MAX) {
        out.push(Message::parse(&mut buf, &header).unwrap());
    }
    out
}

#[tokio::test]
async fn rmi_to_rmi_still_negotiates_bincode_and_an_explicit_serializer_wins() {
    let (daemon, uri) = rust_greeter().await;
    let port = match uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let (relay_port, recorded) = recording_relay(port).await;
    let through = rmi::Uri::tcp("example.rust.greeter", "127.0.0.1", relay_port);
    let greeter = GreeterProxy::from_uri(&through).unwrap();
    assert_eq!(
        greeter.proxy().serializer(),
        Serializer::Bincode,
        "before connecting: what an rmi daemon picks"
    );
    assert_eq!(
        greeter.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );
    assert_eq!(greeter.proxy().serializer(), Serializer::Bincode);
    assert_eq!(greeter.proxy().protocol(), Some(Protocol::Pyro5));
    // A batch made now is in bincode too.
    let mut batch = greeter.batch();
    let slot = batch.welcome_message("b".into());
    assert_eq!(
        batch.send().await.unwrap().get(&slot).unwrap(),
        "Hi welcome b"
    );
    // After a reconnect, the same.
    greeter.proxy().close();
    assert_eq!(
        greeter.welcome_message("c".into()).await.unwrap(),
        "Hi welcome c"
    );
    assert_eq!(greeter.proxy().serializer(), Serializer::Bincode);

    // On the wire: each CONNECT in serpent offering bincode; every call in bincode.
    let sent = frames(&recorded.lock().await.clone());
    let kinds: Vec<(MessageType, u8)> = sent.iter().map(|m| (m.msg_type, m.serializer)).collect();
    assert_eq!(
        kinds,
        [
            (MessageType::Connect, Serializer::SERPENT_ID),
            (MessageType::Invoke, Serializer::BINCODE_ID),
            (MessageType::Invoke, Serializer::BINCODE_ID),
            (MessageType::Connect, Serializer::SERPENT_ID),
            (MessageType::Invoke, Serializer::BINCODE_ID),
        ]
    );
    assert_eq!(
        sent[0]
            .annotation(&SERIALIZER_ANNOTATION)
            .map(|v| v.to_vec()),
        Some(vec![Serializer::BINCODE_ID])
    );

    // An explicit serializer is used for everything, and offered alone (the daemon's answer
    // says it is rmi's, which runs a connection's calls concurrently).
    recorded.lock().await.clear();
    let packed: GreeterProxy = GreeterProxy::builder(&through)
        .unwrap()
        .serializer(Serializer::MsgPack)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        packed.welcome_message("d".into()).await.unwrap(),
        "Hi welcome d"
    );
    assert_eq!(packed.proxy().serializer(), Serializer::MsgPack);
    let sent = frames(&recorded.lock().await.clone());
    let kinds: Vec<(MessageType, u8)> = sent.iter().map(|m| (m.msg_type, m.serializer)).collect();
    assert_eq!(
        kinds,
        [
            (MessageType::Connect, Serializer::MSGPACK_ID),
            (MessageType::Invoke, Serializer::MSGPACK_ID),
        ]
    );
    assert_eq!(
        sent[0]
            .annotation(&SERIALIZER_ANNOTATION)
            .map(|o| o.to_vec()),
        Some(vec![Serializer::MSGPACK_ID])
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_daemon_answers_the_offer_with_a_serializer_it_speaks_and_only_then() {
    use rmi::protocol::codec::ConnectRequest;
    let (daemon, uri) = rust_greeter().await;
    let connect = |offer: Option<&'static [u8]>| {
        let payload = Serializer::Serpent
            .encode(&ConnectRequest {
                handshake: "hello".into(),
                object: "example.rust.greeter".into(),
            })
            .unwrap();
        let mut msg = Message::new(MessageType::Connect, Serializer::SERPENT_ID, 0, 0, payload);
        if let Some(ids) = offer {
            msg.annotations
                .push((SERIALIZER_ANNOTATION, bytes::Bytes::from_static(ids)));
        }
        msg
    };
    for (offer, answer) in [
        (None, None),
        (
            Some(&[Serializer::BINCODE_ID][..]),
            Some(Serializer::BINCODE_ID),
        ),
        // Unknown ids are skipped; the first known one wins.
        (
            Some(&[200, Serializer::MSGPACK_ID, Serializer::BINCODE_ID][..]),
            Some(Serializer::MSGPACK_ID),
        ),
        (Some(&[200][..]), None),
    ] {
        let mut s = crate::support::dial(&uri).await;
        s.write_all(&connect(offer).to_bytes()).await.unwrap();
        let mut head = [0u8; rmi::protocol::frame::HEADER_SIZE];
        s.read_exact(&mut head).await.unwrap();
        let header = rmi::protocol::frame::Header::parse(&head, usize::MAX).unwrap();
        let mut rest = vec![0u8; header.total_len() - head.len()];
        s.read_exact(&mut rest).await.unwrap();
        let reply = Message::parse(
            &mut BytesMut::from(&[&head[..], &rest[..]].concat()[..]),
            &header,
        )
        .unwrap();
        assert_eq!(reply.msg_type, MessageType::ConnectOk);
        assert_eq!(
            reply.serializer,
            Serializer::SERPENT_ID,
            "answered in the CONNECT's"
        );
        assert_eq!(
            reply.annotation(&SERIALIZER_ANNOTATION).map(|v| v.to_vec()),
            answer.map(|id| vec![id]),
            "offer {offer:?}"
        );
    }
    daemon.shutdown();
}

/// A Python daemon with `COMPRESSION=True` compresses its CONNECTOK when the object's metadata
/// is large; a Rust proxy inflates it (within its `max_message_size`) and calls on.
#[tokio::test]
async fn a_rust_proxy_reads_a_compressed_connectok_from_a_python_daemon() {
    use rmi::protocol::codec::ConnectRequest;
    use rmi::protocol::frame::FLAGS_COMPRESSED;
    let Some(python) = python5() else { return };
    // Sixty methods: the metadata in the CONNECTOK is well over Pyro's 200-byte threshold.
    const SERVER: &str = r#"
import Pyro5.api
Pyro5.config.COMPRESSION = True
attrs = {"m%02d_with_a_long_name_so_the_metadata_is_large" % i: (lambda self, i=i: i) for i in range(60)}
attrs["welcomeMessage"] = lambda self, name: "Hi welcome " + name
Many = Pyro5.api.expose(type("Many", (object,), attrs))
daemon = Pyro5.api.Daemon(host="127.0.0.1")
print("READY", daemon.register(Many(), "example.many"), flush=True)
daemon.requestLoop()
"#;
    let (server, uri) = tokio::task::spawn_blocking(move || {
        let mut server = PythonProcess::start(python, &["-c", SERVER]);
        let uri = server.wait_for("READY ");
        (server, uri)
    })
    .await
    .unwrap();
    let uri: rmi::Uri = uri.parse().unwrap();
    let rmi::Location::Tcp { host, port } = uri.location().unwrap().clone() else {
        panic!("a TCP uri")
    };

    // The premise, on the raw wire: the CONNECTOK comes compressed.
    let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .unwrap();
    let hello = ConnectRequest {
        handshake: "hello".into(),
        object: "example.many".into(),
    };
    let ser = Serializer::Serpent;
    let connect = Message::new(
        MessageType::Connect,
        ser.id(),
        0,
        0,
        ser.encode(&hello).unwrap(),
    );
    s.write_all(&connect.to_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let ok = loop {
        if let Ok(header) = check(&buf, usize::MAX >> 1) {
            break Message::parse(&mut buf, &header).unwrap();
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(&mut buf))
            .await
            .expect("a CONNECTOK within 10 s")
            .unwrap();
        assert_ne!(n, 0, "the Python daemon closed the connection");
    };
    assert_eq!(ok.msg_type, MessageType::ConnectOk);
    assert_ne!(
        ok.flags & FLAGS_COMPRESSED,
        0,
        "Pyro compressed its CONNECTOK"
    );
    drop(s);

    // A Rust proxy reads it and calls.
    let greeter = GreeterProxy::connect(&uri).await.unwrap();
    assert_eq!(
        greeter.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );
    let n: i64 = greeter
        .proxy()
        .call("m07_with_a_long_name_so_the_metadata_is_large", &())
        .await
        .unwrap();
    assert_eq!(n, 7);
    drop(server);
}

/// A Rust proxy sends any value as its handshake, as Pyro's `proxy._pyroHandshake` does: a
/// Python daemon's `validateHandshake` receives the dict, and its answer reaches the proxy's
/// validator; a user it refuses cannot connect.
#[tokio::test]
async fn a_rust_proxy_sends_a_dict_handshake_to_a_python_daemon() {
    let Some(python) = python5() else { return };
    const SERVER: &str = r#"
import Pyro5.api, Pyro5.errors

class Daemon(Pyro5.api.Daemon):
    def validateHandshake(self, conn, data):
        if not isinstance(data, dict) or data.get("user") != "ada":
            raise Pyro5.errors.SecurityError("user %r may not connect" % (data,))
        return {"greeting": "hello " + data["user"], "token": data["token"] + 1}

@Pyro5.api.expose
class Greeter(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + name

daemon = Daemon(host="127.0.0.1")
print("READY", daemon.register(Greeter(), "example.greeter"), flush=True)
daemon.requestLoop()
"#;
    let (server, uri) = tokio::task::spawn_blocking(move || {
        let mut server = PythonProcess::start(python, &["-c", SERVER]);
        let uri = server.wait_for("READY ");
        (server, uri)
    })
    .await
    .unwrap();
    let uri: rmi::Uri = uri.parse().unwrap();
    #[derive(serde::Serialize)]
    struct Credentials<'a> {
        user: &'a str,
        token: i64,
    }
    let answer = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = answer.clone();
    let proxy: rmi::Proxy = rmi::Proxy::builder(uri.clone())
        .handshake_value(&Credentials {
            user: "ada",
            token: 42,
        })
        .unwrap()
        .validate_handshake(move |text: &str| {
            *seen.lock().unwrap() = text.to_owned();
            Ok(())
        })
        .connect()
        .await
        .unwrap();
    let greeter = GreeterProxy::from_proxy(proxy);
    assert_eq!(
        greeter.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );
    let answer = answer.lock().unwrap().clone();
    assert!(
        answer.contains("hello ada") && answer.contains("43"),
        "the daemon's answer, as the proxy saw it: {answer}"
    );
    let refused = rmi::Proxy::builder(uri)
        .handshake_value(&Credentials {
            user: "eve",
            token: 1,
        })
        .unwrap()
        .connect::<rmi::Proxy>()
        .await
        .map(drop)
        .unwrap_err();
    assert!(refused.to_string().contains("may not connect"), "{refused}");
    drop(server);
}

/// `welcomeMessage` as object `example.swap` on 127.0.0.1:`argv[2]`, in Pyro `argv[1]`.
const SWAP_SERVER: &str = r#"
import sys
if sys.argv[1] == "4":
    import Pyro4 as Pyro
else:
    import Pyro5.api as Pyro
@Pyro.expose
class G:
    def welcomeMessage(self, name):
        return "Pyro" + sys.argv[1] + " welcome " + name
d = Pyro.Daemon(host="127.0.0.1", port=int(sys.argv[2]))
d.register(G(), "example.swap")
print("READY", flush=True)
d.requestLoop()
"#;

async fn swap_server(python: &'static Path, version: &'static str, port: u16) -> PythonProcess {
    tokio::task::spawn_blocking(move || {
        let port = port.to_string();
        let mut server = PythonProcess::start(python, &["-c", SWAP_SERVER, version, &port]);
        server.wait_for("READY");
        server
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_learned_pyro4_speaks_pyro5_again_when_a_pyro5_daemon_takes_the_port() {
    let (Some(python4), Some(python5)) = (python4(), python5()) else {
        return;
    };
    let port = crate::support::unused_port();
    let pyro4 = swap_server(python4, "4", port).await;
    let proxy = rmi::Proxy::builder(rmi::Uri::tcp("example.swap", "127.0.0.1", port))
        .connect_timeout(std::time::Duration::from_secs(2))
        .reconnect_attempts(10)
        .build();
    let hi: String = proxy.call("welcomeMessage", &("a",)).await.unwrap();
    assert_eq!(hi, "Pyro4 welcome a");
    assert_eq!(proxy.protocol(), Some(Protocol::Pyro4));
    // The Pyro4 daemon goes; a Pyro5 one takes its port. The proxy's next dial speaks what it
    // learned, Pyro4, which the Pyro5 daemon does not answer; it must then try Pyro5 again.
    drop(pyro4);
    let _pyro5 = swap_server(python5, "5", port).await;
    let hi: String = proxy.call("welcomeMessage", &("b",)).await.unwrap();
    assert_eq!(hi, "Pyro5 welcome b");
    assert_eq!(proxy.protocol(), Some(Protocol::Pyro5));
}

/// A resolver's lookup cache against Pyro5's name server, which has no `watch`: lookups are
/// answered (by the name server, each time, as without a cache), and the cache does not try to
/// open its watch again every two seconds for the life of the process, each try a connection
/// and a handshake (it waits a minute: the method will not have appeared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_cache_on_pyro5_ns_answers_and_does_not_keep_reconnecting_for_a_watch() {
    let Some(python) = python5() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro5.nameserver").await;
    let relay = crate::support::Relay::start(ns_port).await;
    let (daemon, uri) = rust_greeter().await;
    locate(ns_port)
        .await
        .register("rust.cached", &uri)
        .await
        .unwrap();
    let cached = rmi::naming::NamingResolver::new(
        NsLocator::new()
            .host("127.0.0.1")
            .port(relay.port)
            .no_broadcast(),
    )
    .cache(std::time::Duration::from_secs(60));
    let name: rmi::Uri = format!("PYRONAME:rust.cached@127.0.0.1:{}", relay.port)
        .parse()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(cached.resolve_uri(&name).await.unwrap(), uri);
    }
    assert!(!cached.cache_watching(&name));
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    // One connection for the watch's try and one kept for the lookups; retries every 100 ms,
    // 200, 400 … 2 s made ten by now, and retries every 2 s alone three more.
    let connections = relay.accepted();
    assert!(
        connections <= 3,
        "{connections} connections to a name server without watch in 4.5 s"
    );
    daemon.shutdown();
}

/// A `PYRONAME:` proxy that found a Python Pyro4 daemon, and dials again once the name moved
/// to an rmi daemon, speaks Pyro5 and bincode to it: what a proxy learned a daemon speaks is
/// kept for that daemon's address only. (Before, it spoke Pyro4 and serpent to every later
/// daemon, which an rmi daemon answers, for the proxy's life.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_met_pyro4_speaks_pyro5_to_the_rmi_daemon_its_name_moved_to() {
    let Some(python) = python4() else { return };
    let (_ns, ns_port) = python_name_server(python, "Pyro4.naming").await;
    let _server = python_server(python, ns_port, "moving.greeter", "4").await;
    let greeter =
        GreeterProxy::connect(format!("PYRONAME:moving.greeter@127.0.0.1:{ns_port}").as_str())
            .await
            .unwrap();
    assert_eq!(
        greeter.welcome_message("Pyro4".into()).await.unwrap(),
        "Hi welcome Pyro4"
    );
    assert_eq!(greeter.proxy().protocol(), Some(Protocol::Pyro4));

    let (daemon, uri) = rust_greeter().await;
    locate(ns_port)
        .await
        .register("moving.greeter", &uri)
        .await
        .unwrap();
    greeter.proxy().close();
    assert_eq!(
        greeter.welcome_message("rmi".into()).await.unwrap(),
        "Hi welcome rmi"
    );
    assert_eq!(greeter.proxy().connected_uri(), Some(uri));
    assert_eq!(greeter.proxy().protocol(), Some(Protocol::Pyro5));
    assert_eq!(greeter.proxy().serializer(), Serializer::Bincode);
    daemon.shutdown();
}

/// A Pyro5 client whose request is over the daemon's `max_message_size`: refused with Pyro's
/// `MessageTooLargeError` (a `CommunicationError`), so the Python proxy lets go of the
/// connection the daemon closes and its next call goes out on a new one. (An rmi class reached
/// it as `RuntimeError`: it kept the socket, and its next call failed with
/// `ConnectionClosedError`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_request_too_large_is_refused_and_the_next_call_goes_through() {
    let Some(python) = python5() else { return };
    let daemon = rmi::Daemon::builder()
        .limits(rmi::DecodeLimits {
            max_message_size: 1 << 20,
            ..Default::default()
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let out = run(python, OVERSIZED_CLIENT, vec![uri.to_string()]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["refused: MessageTooLargeError", "Hi welcome again"],
        "{out}"
    );
    daemon.shutdown();
}

/// A Pyro5 client sending one call over 1 MiB, then a small one on the same proxy.
const OVERSIZED_CLIENT: &str = r#"
import sys
import Pyro5.api, Pyro5.errors
with Pyro5.api.Proxy(sys.argv[1]) as greeter:
    try:
        greeter.welcomeMessage("x" * 2_000_000)
        print("answered")
    except Pyro5.errors.CommunicationError as e:
        print("refused:", type(e).__name__)
    print(greeter.welcomeMessage("again"))
"#;

/// A daemon's leased names whose rmi name server is replaced, on its port, by Pyro5's, which
/// has no leases: the names go plain, registered again one by one. A `register` that meets
/// the switch and is cut short by its caller leaves the rest to the keeper's next round.
/// (They stayed unregistered for good: no keeper ran for plain names.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_going_plain_cut_short_are_registered_by_the_keeper() {
    use std::time::Duration;
    let Some(python) = python5() else { return };
    const NAMES: usize = 1000;
    let ns = rmi::naming::NameServer::builder()
        .host("127.0.0.1")
        .port(0)
        .no_broadcast()
        .start()
        .await
        .unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let names = locate(port).await;
    let (daemon, uri) = rust_greeter().await;
    // A keep-alive round every 8 s: the `register` below meets the switch first.
    let held = names.lease(Duration::from_secs(24)).await.unwrap();
    for i in 0..NAMES {
        held.register(&format!("plain.{i}"), &uri).await.unwrap();
    }
    ns.shutdown();
    ns.wait().await.unwrap();
    drop(ns);
    let _pyro = tokio::task::spawn_blocking(move || {
        let port = port.to_string();
        let args = [
            "-m",
            "Pyro5.nameserver",
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "-x",
        ];
        let mut ns = PythonProcess::start(python, &args);
        ns.wait_for("URI = ");
        ns
    })
    .await
    .unwrap();
    let pyro = locate(port).await;
    let cut =
        tokio::time::timeout(Duration::from_millis(50), held.register("plain.late", &uri)).await;
    assert!(cut.is_err(), "the switch was not cut short: {cut:?}");
    let before = pyro.list_prefix("plain.").await.unwrap().len();
    eprintln!("{before} of {NAMES} names registered plainly when the switch was cut short");
    assert!(before < NAMES, "the switch had ended");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pyro.list_prefix("plain.").await.unwrap().len() < NAMES {
        assert!(
            std::time::Instant::now() < deadline,
            "names still unregistered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!held.is_leased().await);
    held.revoke().await.unwrap();
    assert!(pyro.list_prefix("plain.").await.unwrap().is_empty());
    daemon.shutdown();
}

/// A Pyro5 daemon on a Unix domain socket (`Daemon(unixsocket=...)`), the tutorial's method.
const UNIX_SERVER: &str = r#"
import sys
import Pyro5.api as pyro

@pyro.expose
class Greeter(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + name

daemon = pyro.Daemon(unixsocket=sys.argv[1])
print("READY", daemon.register(Greeter(), "example.greeter"))
daemon.requestLoop()
"#;

/// Unix domain sockets both ways: a Rust proxy calls a Pyro5 daemon on one, and Pyro5's
/// client calls an rmi daemon on one, the URIs (`PYRO:obj@./u:PATH`, a path holding an `@`)
/// read by each side as the other wrote them. (Pyro5 refuses a `:` in a socket path.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_carry_calls_both_ways_between_rust_and_pyro5() {
    let Some(python) = python5() else { return };
    let dir = tempfile::Builder::new()
        .prefix("rmi-py@")
        .tempdir()
        .unwrap();
    let python_sock = dir.path().join("python.sock");
    let path = python_sock.to_str().unwrap().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        let mut server = PythonProcess::start(python, &["-c", UNIX_SERVER, &path]);
        let uri = server.wait_for("READY ");
        (server, uri)
    })
    .await
    .unwrap();
    assert_eq!(
        server.1,
        format!("PYRO:example.greeter@./u:{}", python_sock.display())
    );
    let greeter = GreeterProxy::connect(server.1.as_str()).await.unwrap();
    assert_eq!(
        greeter
            .welcome_message("over a socket file".into())
            .await
            .unwrap(),
        "Hi welcome over a socket file"
    );

    let rust_sock = dir.path().join("rust.sock");
    let (daemon, uri) = serve_greeter(rmi::Daemon::builder().bind_unix(&rust_sock).await.unwrap());
    let script = r#"
import sys
import Pyro5.api
with Pyro5.api.Proxy(sys.argv[1]) as greeter:
    print(greeter.welcomeMessage("Rashmi"))
"#;
    let said = run(python, script, vec![uri.to_string()]).await;
    assert_eq!(said.trim(), "Hi welcome Rashmi");
    daemon.shutdown();
    drop(server);
}

/// An rmi backend for [`RELAYING_TIER`]: takes a number.
#[rmi::remote]
trait Backend {
    async fn notify(&self, user: u64) -> u64;
}

struct BackendObject;

impl Backend for BackendObject {
    async fn notify(&self, user: u64) -> u64 {
        user
    }
}

/// A Pyro5 service whose method does its work, then calls an rmi backend with an argument of
/// the wrong type, and lets the backend's error propagate (Pyro5 relays it with all its
/// attributes).
const RELAYING_TIER: &str = r#"
import sys
import Pyro5.api
LEDGER = []

@Pyro5.api.expose
class Tier(object):
    def transfer(self, user):
        LEDGER.append(user)
        with Pyro5.api.Proxy(sys.argv[1]) as backend:
            backend.notify(str(user))
    def ledger(self):
        return len(LEDGER)

daemon = Pyro5.api.Daemon(host="127.0.0.1")
print("READY", daemon.register(Tier(), "example.tier"), flush=True)
daemon.requestLoop()
"#;

/// A Python tier that relays an rmi backend's "bad arguments" after its own method ran: the
/// Rust caller must not be told that the call did not run (helper-168 #1: the relayed
/// `_rmiKind` was believed, `is_not_executed()` said true, and a caller following the README
/// would repeat a call that had done its work). The backend's own caller, a direct one, still
/// gets `BadArguments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rmi_error_relayed_by_a_python_tier_does_not_say_the_call_did_not_run() {
    let Some(python) = python5() else { return };
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let backend = daemon
        .register_with_id(BackendServer::new(BackendObject), "example.backend")
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let direct = rmi::Proxy::builder(backend.clone())
        .serializer(Serializer::Serpent)
        .build();
    let err = direct.call::<_, u64>("notify", &("7",)).await.unwrap_err();
    assert!(
        matches!(&err, Error::BadArguments(_)) && err.is_not_executed(),
        "from the rmi daemon itself: {err:?}"
    );
    let arg = backend.to_string();
    let (_server, uri) = tokio::task::spawn_blocking(move || {
        let mut server = PythonProcess::start(python, &["-c", RELAYING_TIER, &arg]);
        let uri = server.wait_for("READY ");
        (server, uri)
    })
    .await
    .unwrap();
    let tier = rmi::Proxy::builder(uri.parse().unwrap()).build();
    // Python's TypeError, which says nothing of whether the call ran.
    let relayed = |err: &Error| {
        !err.is_not_executed()
            && matches!(err, Error::Remote(e) if e.type_name == "builtins.TypeError")
    };
    let err = tier.call::<_, ()>("transfer", &(7,)).await.unwrap_err();
    assert!(relayed(&err), "relayed by Python after its work: {err:?}");
    let ran: u32 = tier.call("ledger", &()).await.unwrap();
    assert_eq!(ran, 1);
    // In a batch too: Pyro5 wraps the relayed exception, attributes and all.
    let mut batch = tier.batch();
    let transfer = batch.add::<_, ()>("transfer", &(8,));
    let err = batch.send().await.unwrap().get(&transfer).unwrap_err();
    assert!(relayed(&err), "relayed in a batch: {err:?}");
    let ran: u32 = tier.call("ledger", &()).await.unwrap();
    assert_eq!(ran, 2);
    daemon.shutdown();
}
