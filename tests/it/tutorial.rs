//! Pyro's tutorial by name: a proxy by `PYRONAME:` finds the server again when it moves. (The
//! tutorial through the real `rmi-ns` process is tested in rmi-cli, beside the binary.)

use crate::support::{GreeterProxy, GreeterServer, GreetingMaker};

#[tokio::test]
async fn pyroname_is_resolved_again_when_the_proxy_redials() {
    let (ns, names) = crate::naming::name_server().await;
    let ns_addr = ns.daemon().location().clone();

    let first = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    names
        .register(
            "server",
            &first.register(GreeterServer::new(GreetingMaker)).unwrap(),
        )
        .await
        .unwrap();
    tokio::spawn({
        let d = first.clone();
        async move { d.serve().await }
    });
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@{ns_addr}"))
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message("a".into()).await.unwrap(),
        "Hi welcome a"
    );

    // The server moves to another daemon (another port) and re-registers its name.
    let second = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    names
        .register(
            "server",
            &second.register(GreeterServer::new(GreetingMaker)).unwrap(),
        )
        .await
        .unwrap();
    tokio::spawn({
        let d = second.clone();
        async move { d.serve().await }
    });
    first.shutdown();
    greeter.proxy().close();
    assert_eq!(
        greeter.welcome_message("b".into()).await.unwrap(),
        "Hi welcome b"
    );
    second.shutdown();
}

/// The tutorial's server (`examples/greeting_server.rs`, the binary `cargo test` builds) told
/// to stop by SIGTERM (`kill`, `docker stop`, systemd), as by Ctrl-C: its name goes at once,
/// not when its lease runs out. (Only Ctrl-C was heard: SIGTERM's default action left
/// "server" registered for the lease's TTL, and for ever in Pyro's name servers, which have no
/// leases; helper-156 #3.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_server_removes_its_name_when_terminated() {
    use std::io::BufRead;
    let Some(example) = std::env::current_exe().ok().and_then(|exe| {
        let path = exe.parent()?.parent()?.join("examples/greeting_server");
        path.exists().then_some(path)
    }) else {
        let what = "SKIPPED the_tutorial_server_removes_its_name_when_terminated: \
                    examples/greeting_server is not built (`cargo test --workspace` builds it)";
        assert!(std::env::var("CI").is_err(), "{what}");
        eprintln!("{what}");
        return;
    };
    let (ns, names) = crate::naming::name_server().await;
    let rmi::Location::Tcp { port, .. } = ns.daemon().location().clone() else {
        panic!("a TCP name server");
    };
    let mut child = std::process::Command::new(example)
        .env("RMI_NS_HOST", "127.0.0.1")
        .env("RMI_NS_PORT", port.to_string())
        .env("RMI_LEASE_TTL", "60")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start greeting_server");
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || std::io::BufReader::new(stdout).lines().next())
        .await
        .unwrap();
    let guard = crate::support::ChildGuard(child);
    assert!(
        ready
            .as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|l| l.starts_with("Ready."))),
        "{ready:?}"
    );
    assert!(names.lookup("server").await.is_ok());
    let term = std::process::Command::new("kill")
        .args(["-TERM", &guard.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let mut gone = false;
    for _ in 0..100 {
        if names.lookup("server").await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "\"server\" still registered 5 s after SIGTERM (its lease: 60 s)"
    );
}
