//! The binaries end to end: the tutorial through a real `rmi-ns` process, and `rmi-nsc`
//! controlling one. Everything runs on 127.0.0.1 with free ports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The tutorial's contract.
#[rmi::remote]
pub trait Greeter {
    /// Pyro's tutorial method.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct ChildGuard(Child);

impl ChildGuard {
    fn is_alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `rmi-ns` binary on a free port (no broadcast); returns it and its port.
fn spawn_name_server() -> (ChildGuard, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["--host", "127.0.0.1", "--port", "0", "--nobc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines
        .next()
        .expect("rmi-ns printed nothing")
        .expect("read rmi-ns output");
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let addr = line
        .strip_prefix("NS running on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from rmi-ns: {line:?}"));
    let port = addr.rsplit(':').next().unwrap().parse().expect("port");
    (ChildGuard(child), port)
}

#[tokio::test]
async fn tutorial_through_rmi_ns_process_and_pyroname() {
    let (mut ns_process, ns_port) = spawn_name_server();

    // Server: daemon, object, name registration, request loop.
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let ns = rmi::naming::NsLocator::new()
        .host("127.0.0.1")
        .port(ns_port)
        .locate()
        .await
        .unwrap();
    ns.register("server", &uri).await.unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });

    // Client: PYRONAME:server, as the tutorial's client types it (plus where the NS is).
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@127.0.0.1:{ns_port}"))
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );

    // The PYRO: URI the server printed works too.
    let direct = GreeterProxy::connect(uri.to_string()).await.unwrap();
    assert_eq!(
        direct.welcome_message("Irmen".into()).await.unwrap(),
        "Hi welcome Irmen"
    );
    assert!(ns_process.is_alive());
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_controls_a_running_rmi_ns() {
    let (_ns, port) = spawn_name_server();
    let nsc = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmi-nsc"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .output()
            .expect("run rmi-nsc");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(nsc(&["ping"]), (true, "name server ping ok\n".into()));
    assert!(nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]).0);
    let (ok, err) = nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    assert!(nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]).0);
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert!(
        ok && out.contains("PYRO:obj@127.0.0.1:4000") && out.contains("tutorial"),
        "{out}"
    );
    let (_, out) = nsc(&["list", "app."]);
    assert!(
        out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000"),
        "{out}"
    );
    let (_, out) = nsc(&["yplookup-all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["listmatching", "Pyro"]);
    assert!(out.contains("Pyro.NameServer"), "{out}");
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "removed app.greeter\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.greeter"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
}

#[test]
fn rmi_nsc_without_a_name_server_says_so_with_a_hint() {
    // A port nothing listens on: bind one, read it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "ping"])
        .output()
        .expect("run rmi-nsc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("hint: is rmi-ns running?"), "{err}");
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "the cause once: {err}"
    );
}
