//! Name-server tools across languages (issue 9): Rust's tutorial server and client
//! (`examples/greeting_server.rs`, `examples/greeting_client.rs`, their code included here)
//! with Python's name servers, which have no leases; `pyro5-nsc` against rmi's name server;
//! and Python's `locate_ns()` finding rmi's name server by broadcast on loopback.
//!
//! The venvs are `python.rs`'s (`python/shared.rs`); without Python the tests skip loudly (and
//! fail under `CI=true` or `RMI_TEST_NO_SKIP=1`). Loopback only: every server binds
//! 127.0.0.1 on a port it picks, and broadcasts go to 127.255.255.255.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmi::naming::{NameServerProxy, NsLocator};
use rmi::Error;

use crate::python::shared::{
    pyro4_python, pyro5_python, python2_pyro4, python_output, start_python_name_server,
    PythonProcess,
};
use crate::support::{GreeterServer, GreetingMaker};

/// The tutorial's server, as `cargo run --example greeting_server` runs it (its `main` reads
/// the environment and waits for Ctrl-C; the tests call its work directly). Both examples
/// include `examples/common/greeter.rs`, hence two copies of it here.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../examples/greeting_server.rs"]
mod greeting_server;

/// The tutorial's client, as `cargo run --example greeting_client` runs it.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../examples/greeting_client.rs"]
mod greeting_client;

/// What `tracing` wrote while a test ran on its thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Starts a Python name server off the runtime's threads.
async fn python_name_server(python: &'static Path, module: &'static str) -> (PythonProcess, u16) {
    tokio::task::spawn_blocking(move || start_python_name_server(python, module))
        .await
        .unwrap()
}

/// Finds the name server at 127.0.0.1:`port` by its address.
fn locator(port: u16) -> NsLocator {
    NsLocator::new().host("127.0.0.1").port(port).no_broadcast()
}

/// Runs `python <args>` with `env` off the runtime's threads.
async fn python_run(
    python: &'static Path,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python_output(python, &args, &env)
    })
    .await
    .unwrap()
}

/// The tutorial's client program (`greeting_client::greet`), on a thread of its own: it is
/// synchronous, with a blocking proxy that refuses to block a thread that drives tasks.
async fn rust_client(locator: NsLocator, uri: String) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            greeting_client::greet(locator, uri, "Rashmi".into()).map_err(|e| format!("{e:#}")),
        );
    });
    rx.await.unwrap().expect("the greeting client")
}

/// Rust's tutorial server registers in a Python name server (`module`), which has no leases:
/// the holder falls back to plain registration and says so; the Rust client and a Python
/// client (`python_client`, given the name server's port) find it by `PYRONAME:server`.
async fn greeting_examples_with(
    python: &'static Path,
    module: &'static str,
    python_client: impl FnOnce(u16) -> (Vec<String>, Vec<(&'static str, String)>),
) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer({
            let c = captured.clone();
            move || c.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_ns_process, ns_port) = python_name_server(python, module).await;
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    // The server's code path: locate, register the object, lease, register "server".
    let (uri, names) = greeting_server::register_greeter(
        &daemon,
        locator(ns_port),
        rmi::naming::DEFAULT_LEASE_TTL,
    )
    .await
    .expect("the greeting server registers in Python's name server");
    assert!(
        !names.is_leased().await,
        "Python's name server has no leases"
    );
    assert_eq!(names.lease(), None);
    let warned = captured.text();
    assert!(
        warned.contains("WARN") && warned.contains("no leases"),
        "a warning says the names are registered plainly: {warned:?}"
    );
    let ns = locator(ns_port).locate().await.unwrap();
    assert_eq!(ns.lookup("server").await.unwrap(), uri);
    // The client's code path, by name and by the URI the server printed.
    assert_eq!(
        rust_client(locator(ns_port), "PYRONAME:server".into()).await,
        "Hi welcome Rashmi"
    );
    assert_eq!(
        rust_client(locator(ns_port), uri.to_string()).await,
        "Hi welcome Rashmi"
    );
    // A Python client finds the Rust server through its own name server.
    let (args, env) = python_client(ns_port);
    let (ok, out) = python_run(python, args, env).await;
    assert!(ok && out.ends_with("Hi welcome Rashmi\n"), "{out}");
    // Registering again is plain too: the same name replaced, a safe one refused when taken.
    names.register("server", &uri).await.unwrap();
    let tags: BTreeSet<String> = ["greeting".to_owned()].into();
    names
        .register_with("server.tagged", &uri, true, tags.clone())
        .await
        .unwrap();
    let err = names
        .register_with("server.tagged", &uri, true, tags.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("already registered")),
        "{err:?}"
    );
    assert_eq!(
        ns.lookup_with_metadata("server.tagged").await.unwrap(),
        (uri.clone(), tags)
    );
    assert_eq!(names.names().await, ["server", "server.tagged"]);
    // Another process takes over "server.tagged": the clean shutdown leaves it alone and
    // removes only what still points at this server.
    let other: rmi::Uri = "PYRO:other@127.0.0.1:4000".parse().unwrap();
    ns.register("server.tagged", &other).await.unwrap();
    // A registration cut short (its caller gave up once the request was out) that reached
    // the name server is removed at the clean shutdown too: a plain name never expires.
    {
        use futures_util::FutureExt;
        let mut cut = Box::pin(names.register("server.cut", &uri));
        // Polled once: its request is written, then it is dropped. (Rarely, the name server
        // answers within that one poll, and the registration is whole: removed all the same.)
        if let Some(done) = (&mut cut).now_or_never() {
            done.unwrap();
            println!("the registration was answered in its first poll");
        }
    }
    let mut arrived = false;
    for _ in 0..100 {
        if ns.lookup("server.cut").await.is_ok() {
            arrived = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        arrived,
        "the cut-short registration never reached the name server"
    );
    daemon.shutdown();
    assert_eq!(names.revoke().await.unwrap(), 2);
    assert!(ns.lookup("server.cut").await.is_err(), "left behind");
    let err = ns.lookup("server").await.unwrap_err();
    assert!(
        matches!(&err, Error::Resolve(m) if m.contains("unknown name")),
        "{err:?}"
    );
    assert_eq!(ns.lookup("server.tagged").await.unwrap(), other);
    // Nothing kept the lease-less names alive in the background: no keep-alive errors.
    assert!(
        !captured.text().contains("keep-alive"),
        "{}",
        captured.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_greeting_server_and_client_work_with_pyro5_ns() {
    let Some(python) = pyro5_python() else { return };
    const CLIENT: &str = r#"
import sys
import Pyro5.api
with Pyro5.api.Proxy("PYRONAME:server@127.0.0.1:" + sys.argv[1]) as greeter:
    print(greeter.welcomeMessage("Rashmi"))
"#;
    greeting_examples_with(python, "Pyro5.nameserver", |port| {
        (vec!["-c".into(), CLIENT.into(), port.to_string()], vec![])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_greeting_server_and_client_work_with_the_pyro4_name_server() {
    let Some(python) = pyro4_python() else { return };
    // The tutorial's own Pyro4 client, unmodified, finds the name server by environment.
    let client: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/pyro4/client.py");
    greeting_examples_with(python, "Pyro4.naming", move |port| {
        let script = r#"
import io, runpy, sys
sys.stdin = io.StringIO("PYRONAME:server\nRashmi\n")
runpy.run_path(sys.argv[1], run_name="__main__")
"#;
        (
            vec!["-c".into(), script.into(), client.display().to_string()],
            vec![
                ("PYRO_NS_HOST", "127.0.0.1".into()),
                ("PYRO_NS_PORT", port.to_string()),
            ],
        )
    })
    .await;
}

/// rmi's name server in this process on 127.0.0.1, with its broadcast responder on
/// 127.255.255.255 (`broadcast`) or none; returns it, its port and the responder's port.
async fn rmi_name_server(broadcast: bool) -> (rmi::naming::NameServerHandle, u16, Option<u16>) {
    let builder = rmi::naming::NameServer::builder().host("127.0.0.1").port(0);
    let builder = if broadcast {
        builder.broadcast("127.255.255.255", 0)
    } else {
        builder.no_broadcast()
    };
    let ns = builder.start().await.unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let bc_port = ns.broadcast_addr().map(|a| a.port());
    (ns, port, bc_port)
}

/// `pyro5-nsc -n 127.0.0.1 -p PORT`, Python's name-server tool, pointed at a name server.
struct Nsc {
    python: &'static Path,
    port: u16,
}

impl Nsc {
    /// Runs one command; returns whether it succeeded and what it printed.
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let port = self.port.to_string();
        let args: Vec<String> = ["-m", "Pyro5.nsc", "-n", "127.0.0.1", "-p", &port]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        python_run(self.python, args, vec![]).await
    }

    /// Registers app.greeter (tagged greeting, tutorial) and app.other (tagged tutorial).
    async fn register_two(&self) {
        assert_eq!(
            self.run(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"])
                .await,
            (true, "Registered app.greeter\n".into())
        );
        assert!(
            self.run(&["register", "app.other", "PYRO:other@127.0.0.1:4002"])
                .await
                .0
        );
        assert_eq!(
            self.run(&["setmeta", "app.greeter", "greeting", "tutorial"])
                .await,
            (true, "Metadata updated\n".into())
        );
        assert!(self.run(&["setmeta", "app.other", "tutorial"]).await.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyro5_nsc_ping_register_setmeta_and_remove_work_against_the_rmi_name_server() {
    let Some(python) = pyro5_python() else { return };
    let (ns, port, _) = rmi_name_server(false).await;
    let nsc = Nsc { python, port };
    assert_eq!(
        nsc.run(&["ping"]).await,
        (true, "Name server ping ok.\n".into())
    );
    nsc.register_two().await;
    let (ok, out) = nsc
        .run(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"])
        .await;
    assert!(
        !ok && out.contains("NamingError") && out.contains("already registered"),
        "register is safe in pyro5-nsc: {out}"
    );
    let names = NameServerProxy::connect(ns.uri()).await.unwrap();
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        names.lookup_with_metadata("app.greeter").await.unwrap(),
        (
            "PYRO:obj@127.0.0.1:4000".parse().unwrap(),
            tags(&["greeting", "tutorial"])
        )
    );
    assert_eq!(
        nsc.run(&["setmeta", "app.other"]).await,
        (true, "Metadata cleared\n".into())
    );
    assert_eq!(
        names.lookup_with_metadata("app.other").await.unwrap().1,
        tags(&[])
    );
    assert_eq!(
        nsc.run(&["remove", "app.greeter"]).await,
        (true, "Removed app.greeter\n".into())
    );
    assert_eq!(
        nsc.run(&["remove", "app.greeter"]).await,
        (true, "Nothing removed\n".into())
    );
    // What pyro5-nsc did is what the registry holds.
    assert_eq!(
        names
            .list_prefix("app.")
            .await
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        ["app.other"]
    );
    ns.shutdown();
}

/// pyro5-nsc's `list`, `listmatching` and `lookup` pass `return_metadata=True`, and its
/// `yplookup_*` name `return_metadata`: Pyro5's signatures, whose answers then carry each
/// name's metadata as a Python set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyro5_nsc_list_lookup_and_yplookup_work_against_the_rmi_name_server() {
    let Some(python) = pyro5_python() else { return };
    let (ns, port, _) = rmi_name_server(false).await;
    let nsc = Nsc { python, port };
    nsc.register_two().await;
    // list: every name, the name server's own included, with metadata (Python prints sets in
    // no fixed order, so the tags are looked for one by one).
    let (ok, out) = nsc.run(&["list"]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("--------START LIST \n"), "{out}");
    assert!(
        out.contains(&format!(
            "Pyro.NameServer --> PYRO:Pyro.NameServer@127.0.0.1:{port}\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000\n    metadata: {"),
        "{out}"
    );
    assert!(
        out.contains("'greeting'") && out.contains("'tutorial'"),
        "{out}"
    );
    assert!(
        out.contains("app.other --> PYRO:other@127.0.0.1:4002\n"),
        "{out}"
    );
    assert!(out.ends_with("--------END LIST \n"), "{out}");
    let (ok, out) = nsc.run(&["list", "app."]).await;
    assert!(ok && out.contains("- prefix 'app.'"), "{out}");
    assert!(
        out.contains("app.greeter -->")
            && out.contains("app.other -->")
            && !out.contains("Pyro.NameServer"),
        "{out}"
    );
    let (ok, out) = nsc.run(&["listmatching", r"app\.g.*"]).await;
    assert!(
        ok && out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000") && !out.contains("app.other"),
        "{out}"
    );
    let (ok, out) = nsc.run(&["lookup", "app.greeter"]).await;
    assert!(ok, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("PYRO:obj@127.0.0.1:4000"), "{out}");
    let meta = lines.next().unwrap_or_default();
    assert!(
        meta.starts_with("metadata: {")
            && meta.contains("'greeting'")
            && meta.contains("'tutorial'"),
        "{out}"
    );
    let (ok, out) = nsc.run(&["yplookup_all", "greeting", "tutorial"]).await;
    assert!(
        ok && out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000") && !out.contains("app.other"),
        "{out}"
    );
    let (ok, out) = nsc.run(&["yplookup_any", "tutorial", "nothing.else"]).await;
    assert!(
        ok && out.contains("app.greeter -->") && out.contains("app.other -->"),
        "{out}"
    );
    let (ok, out) = nsc.run(&["yplookup_any", "nothing.else"]).await;
    assert!(ok && !out.contains("-->"), "{out}");
    assert!(nsc.run(&["remove", "app.greeter"]).await.0);
    let (ok, out) = nsc.run(&["lookup", "app.greeter"]).await;
    assert!(
        !ok && out.contains("NamingError") && out.contains("unknown name"),
        "{out}"
    );
    ns.shutdown();
}

/// Pyro5's name server API with and without `return_metadata`, by keyword and positionally
/// (`list(prefix, regex, return_metadata)` too), and `set_metadata(name, None)`,
/// in each of Pyro5's serializers: the shapes Pyro5's own name server answers, the metadata a
/// set (a list under json and msgpack, which have no sets; under serpent an empty one arrives
/// as `()`, as from Pyro5's name server, serpent having no empty-set literal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pyro5_sees_pyro5s_shapes_for_return_metadata_from_the_rmi_name_server() {
    let Some(python) = pyro5_python() else { return };
    let (ns, port, _) = rmi_name_server(false).await;
    let names = NameServerProxy::connect(ns.uri()).await.unwrap();
    let uri: rmi::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
    names
        .register_with("app.greeter", &uri, false, ["b".into(), "a".into()].into())
        .await
        .unwrap();
    names
        .register("app.plain", &"PYRO:p@127.0.0.1:4001".parse().unwrap())
        .await
        .unwrap();
    const CLIENT: &str = r#"
import sys
import Pyro5.api
ns = Pyro5.api.Proxy("PYRO:Pyro.NameServer@127.0.0.1:" + sys.argv[1])
def meta(m):
    return type(m).__name__ + ":" + ",".join(sorted(m))
print(type(ns.lookup("app.greeter")).__name__, ns.lookup("app.greeter", False))
uri, m = ns.lookup("app.greeter", True)
print(uri, meta(m))
uri, m = ns.lookup("app.plain", return_metadata=True)
print(uri, meta(m))
def uris(found):
    return [(n, str(u)) for n, u in sorted(found.items())]
def with_meta(found):
    return [(n, str(u), meta(m)) for n, (u, m) in sorted(found.items())]
print(uris(ns.list(prefix="app.")))
print(with_meta(ns.list(prefix="app.", return_metadata=True)))
print(with_meta(ns.list(regex=r"app\.g", return_metadata=True)))
print(with_meta(ns.yplookup(meta_all=["a"])))
print(uris(ns.yplookup(["a", "b"], None, False)))
print(uris(ns.yplookup(meta_any=["b", "c"], return_metadata=False)))
print(with_meta(ns.list("app.", None, True)))
print(uris(ns.list("app.", None, 0)))
try:
    ns.list(None, None, True, return_metadata=True)
except Exception as e:
    print(type(e).__name__, e)
ns.set_metadata("app.greeter", None)
uri, m = ns.lookup("app.greeter", True)
print(uri, meta(m))
ns.set_metadata("app.greeter", ["b", "a"])
try:
    ns.register("app.plain", "PYRO:q@127.0.0.1:4003", 1)
except Exception as e:
    print(type(e).__name__, e)
try:
    ns.yplookup(meta_all=["a"], meta_any=["b"])
except Exception as e:
    print(type(e).__name__, e)
"#;
    let serializers = [
        ("serpent", "set", "tuple"),
        ("json", "list", "list"),
        ("msgpack", "list", "list"),
    ];
    for (serializer, set, empty) in serializers {
        let env = vec![("PYRO_SERIALIZER", serializer.to_owned())];
        let args = vec!["-c".into(), CLIENT.into(), port.to_string()];
        let (ok, out) = python_run(python, args, env).await;
        assert!(ok, "{serializer}: {out}");
        let greeter = "'app.greeter', 'PYRO:obj@127.0.0.1:4000'";
        let plain = "'app.plain', 'PYRO:p@127.0.0.1:4001'";
        let expected = [
            "URI PYRO:obj@127.0.0.1:4000".to_owned(),
            format!("PYRO:obj@127.0.0.1:4000 {set}:a,b"),
            format!("PYRO:p@127.0.0.1:4001 {empty}:"),
            format!("[({greeter}), ({plain})]"),
            format!("[({greeter}, '{set}:a,b'), ({plain}, '{empty}:')]"),
            format!("[({greeter}, '{set}:a,b')]"),
            format!("[({greeter}, '{set}:a,b')]"),
            format!("[({greeter})]"),
            format!("[({greeter})]"),
            // Pyro5's list(prefix, regex, return_metadata) and set_metadata(name, None),
            // positionally.
            format!("[({greeter}, '{set}:a,b'), ({plain}, '{empty}:')]"),
            format!("[({greeter}), ({plain})]"),
            "TypeError list() got multiple values for argument 'return_metadata'".to_owned(),
            format!("PYRO:obj@127.0.0.1:4000 {empty}:"),
            // safe=1: any true value is safe, as in Pyro.
            "NamingError name already registered: app.plain".to_owned(),
            // Pyro's class for two filters at once (helper-125 #3).
            "ValueError you can't use meta_all or meta_any at the same time".to_owned(),
        ];
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            expected,
            "{serializer}: {out}"
        );
    }
    ns.shutdown();
}

/// Pyro4's `lookup(name, return_metadata)` and `list(..., return_metadata)` against rmi's
/// name server: `(uri, metadata)` then, by keyword or positionally, the metadata a list as
/// Pyro4's own name server sends it (Python 2 cannot read a set literal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pyro4_gets_metadata_from_the_rmi_name_server_when_it_asks() {
    let Some(python) = pyro4_python() else { return };
    let (ns, port, _) = rmi_name_server(false).await;
    let names = NameServerProxy::connect(ns.uri()).await.unwrap();
    let uri: rmi::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
    names
        .register_with("app.greeter", &uri, false, ["b".into(), "a".into()].into())
        .await
        .unwrap();
    const CLIENT: &str = r#"
import sys
import Pyro4
Pyro4.config.SERIALIZER = sys.argv[2]
ns = Pyro4.Proxy("PYRO:Pyro.NameServer@127.0.0.1:" + sys.argv[1])
uri, meta = ns.lookup("app.greeter", True)
print(type(uri).__name__, uri, type(meta).__name__, sorted(meta))
listed = ns.list(None, None, None, None, True)
uri, meta = listed["app.greeter"]
print(str(uri), type(meta).__name__, sorted(meta))
listed = ns.list(metadata_any=["a"], return_metadata=True)
print([(n, str(u), sorted(m)) for n, (u, m) in listed.items()])
print([(n, str(u)) for n, u in ns.list(prefix="app.", return_metadata=False).items()])
"#;
    // Lists under every serializer, as Pyro4's name server sends them (`list(metadata)`); under
    // marshal they went as sets, which a client indexing them could not take.
    for serializer in ["serpent", "marshal", "json", "msgpack"] {
        let args = vec![
            "-c".into(),
            CLIENT.into(),
            port.to_string(),
            serializer.into(),
        ];
        let (ok, out) = python_run(python, args, vec![]).await;
        assert!(ok, "{serializer}: {out}");
        assert_eq!(
            out,
            "URI PYRO:obj@127.0.0.1:4000 list ['a', 'b']\n\
             PYRO:obj@127.0.0.1:4000 list ['a', 'b']\n\
             [('app.greeter', 'PYRO:obj@127.0.0.1:4000', ['a', 'b'])]\n\
             [('app.greeter', 'PYRO:obj@127.0.0.1:4000')]\n",
            "{serializer}"
        );
    }
    ns.shutdown();
}

/// Pyro4 on Python 2.7 against rmi's name server: metadata arrives as lists under serpent
/// (Python 2 cannot read a set literal), and under marshal a Python 2 `str` (bytes) is read as
/// text, in a URI's class dict too. Python 2 is optional: where it is missing, a loud skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyro4_on_python_2_reads_metadata_and_registers_uris_under_serpent_and_marshal() {
    let Some((python, env)) = python2_pyro4() else {
        return;
    };
    let (ns, port, _) = rmi_name_server(false).await;
    const CLIENT: &str = r#"
import sys
import Pyro4
Pyro4.config.SERIALIZER = sys.argv[2]
ns = Pyro4.Proxy("PYRO:Pyro.NameServer@127.0.0.1:" + sys.argv[1])
name = "py2." + sys.argv[2]
ns.register(name, Pyro4.URI("PYRO:obj@127.0.0.1:4000"), metadata=["b", "a"])
uri, meta = ns.lookup(name, True)
print("%s %s" % (uri, sorted(meta)))
uri, meta = ns.list(prefix=name, return_metadata=True)[name]
print("%s %s" % (uri, sorted(meta)))
print(sorted(ns.list(metadata_all=["a"]).keys()))
print(ns.remove(name))
"#;
    for serializer in ["serpent", "marshal"] {
        let (python, env) = (python.clone(), env.clone());
        let args = [
            "-c".to_owned(),
            CLIENT.to_owned(),
            port.to_string(),
            serializer.to_owned(),
        ];
        let (ok, out) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            python_output(&python, &args, &env)
        })
        .await
        .unwrap();
        assert!(ok, "{serializer}: {out}");
        assert_eq!(
            out,
            format!(
                "PYRO:obj@127.0.0.1:4000 [u'a', u'b']\n\
                 PYRO:obj@127.0.0.1:4000 [u'a', u'b']\n\
                 [u'py2.{serializer}']\n\
                 1\n"
            ),
            "{serializer}"
        );
    }
    ns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pyro5_locate_ns_finds_the_rmi_name_server_by_broadcast() {
    let Some(python) = pyro5_python() else { return };
    let (ns, port, bc_port) = rmi_name_server(true).await;
    let bc_port = bc_port.expect("a broadcast responder");
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    NameServerProxy::connect(ns.uri())
        .await
        .unwrap()
        .register("example.greeting", &uri)
        .await
        .unwrap();
    // Nothing listens on NS_PORT, so locate_ns's direct try on NS_HOST fails and it
    // broadcasts GET_NSURI to 127.255.255.255, where rmi's responder answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    const CLIENT: &str = r#"
import Pyro5.api
ns = Pyro5.api.locate_ns()
print(ns._pyroUri)
ns.ping()
print(ns.lookup("example.greeting"))
with Pyro5.api.Proxy("PYRONAME:example.greeting") as greeter:
    print(greeter.welcomeMessage("broadcast"))
"#;
    let env = vec![
        ("PYRO_NS_HOST", "127.0.0.1".to_owned()),
        ("PYRO_NS_PORT", closed_port.to_string()),
        ("PYRO_NS_BCPORT", bc_port.to_string()),
        ("PYRO_BROADCAST_ADDRS", "127.255.255.255".to_owned()),
    ];
    let (ok, out) = python_run(python, vec!["-c".into(), CLIENT.into()], env).await;
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!("PYRO:Pyro.NameServer@127.0.0.1:{port}\n{uri}\nHi welcome broadcast\n")
    );
    daemon.shutdown();
    ns.shutdown();
}
