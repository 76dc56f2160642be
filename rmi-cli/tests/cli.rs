//! The binaries end to end: the tutorial through a real `rmi-ns` process, and `rmi-nsc`
//! controlling one. Everything runs on 127.0.0.1 with free ports.

mod support;

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
    // pyro5-nsc's spellings, and the kebab-case ones rmi-nsc took before.
    let (_, out) = nsc(&["yplookup_all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["yplookup-all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["yplookup_all", "greeting", "nothing"]);
    assert_eq!(out, "(no names)\n");
    let (_, out) = nsc(&["yplookup_any", "nothing", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["listmatching", "Pyro"]);
    assert!(out.contains("Pyro.NameServer"), "{out}");
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "removed app.greeter\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.greeter"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
    for i in 0..3 {
        assert!(nsc(&["register", &format!("tmp.{i}"), "PYRO:obj@127.0.0.1:4000"]).0);
    }
    assert_eq!(
        nsc(&["removematching", "tmp\\.[01]"]),
        (true, "removed 2 names\n".into())
    );
    let (_, out) = nsc(&["list"]);
    assert!(
        out.contains("tmp.2") && !out.contains("tmp.1") && out.contains("Pyro.NameServer"),
        "{out}"
    );
}

#[test]
fn rmi_nsc_has_pyro5_nscs_commands_and_watch() {
    let out = Command::new(env!("CARGO_BIN_EXE_rmi-nsc"))
        .arg("--help")
        .output()
        .expect("run rmi-nsc");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "list",
        "listmatching",
        "lookup",
        "register",
        "remove",
        "removematching",
        "yplookup_all",
        "yplookup_any",
        "setmeta",
        "ping",
        "watch",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{help}"
        );
    }
}

#[test]
fn rmi_nsc_finds_rmi_ns_by_the_broadcast_settings_in_the_environment() {
    // rmi-ns with its responder on a free UDP port, its TCP port not the one rmi-nsc tries.
    let (_ns, lines) = support::spawn_rmi_ns_with(
        &["--host", "127.0.0.1", "--port", "0", "--bcport", "0"],
        &[],
        2,
    );
    let bcport = lines[1]
        .rsplit(':')
        .next()
        .unwrap_or_else(|| panic!("{lines:?}"))
        .to_owned();
    let ns_port = support::port_of(&lines[0]);
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let env = [
        ("RMI_NS_PORT", unused.as_str()),
        ("RMI_NS_BCADDR", "127.255.255.255"),
        ("RMI_NS_BCPORT", bcport.as_str()),
    ];
    let (ok, out) = support::nsc(&["-v", "ping"], &env);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("PYRO:Pyro.NameServer@127.0.0.1:{ns_port}")),
        "found by broadcast: {out}"
    );
    // The same as flags.
    let (ok, out) = support::nsc(&["-p", &unused, "--bcport", &bcport, "-v", "ping"], &[]);
    assert!(ok, "{out}");
    // Without the broadcast, nothing answers there.
    let (ok, out) = support::nsc(&["-x", "ping"], &env);
    assert!(!ok && out.contains("hint: is rmi-ns running?"), "{out}");
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
