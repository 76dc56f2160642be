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
    example_removes_its_name_when_stopped("greeting_server", "Ready.", "server", "-TERM").await;
}

/// The callback example's server, stopped with Ctrl-C (SIGINT), removes its name at once: it
/// registers it under a lease it revokes. (It registered it plainly, so the name stayed after
/// a clean stop, for ever; helper-156 #5.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_server_removes_its_name_on_ctrl_c() {
    example_removes_its_name_when_stopped(
        "callback_server",
        "Server ready.",
        "example.callback",
        "-INT",
    )
    .await;
}

/// Runs the built example `example` against an in-process name server, waits for its first
/// line to start with `ready`, checks that `name` is registered, sends it `signal` (`kill`'s
/// flag), and checks that the name is gone within 3 s: removed by the example (the lease it
/// would otherwise go with lasts 6 s or more). Skipped, saying so, when the example is not
/// built (`cargo test --workspace` builds them; under CI, a failure).
#[cfg(unix)]
async fn example_removes_its_name_when_stopped(
    example: &str,
    ready: &str,
    name: &str,
    signal: &str,
) {
    use std::io::BufRead;
    let Some(path) = std::env::current_exe().ok().and_then(|exe| {
        let path = exe.parent()?.parent()?.join("examples").join(example);
        path.exists().then_some(path)
    }) else {
        let what = format!(
            "SKIPPED the test of examples/{example}: it is not built (`cargo test --workspace` \
             builds it)"
        );
        assert!(std::env::var("CI").is_err(), "{what}");
        eprintln!("{what}");
        return;
    };
    let (ns, names) = crate::naming::name_server().await;
    let rmi::Location::Tcp { port, .. } = ns.daemon().location().clone() else {
        panic!("a TCP name server");
    };
    let mut child = std::process::Command::new(path)
        .env("RMI_NS_HOST", "127.0.0.1")
        .env("RMI_NS_PORT", port.to_string())
        .env("RMI_LEASE_TTL", "60")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {example}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || std::io::BufReader::new(stdout).lines().next())
        .await
        .unwrap();
    let guard = crate::support::ChildGuard(child);
    assert!(
        first
            .as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|l| l.starts_with(ready))),
        "{example}: {first:?}"
    );
    assert!(names.lookup(name).await.is_ok());
    let sent = std::process::Command::new("kill")
        .args([signal, &guard.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let mut gone = false;
    for _ in 0..60 {
        if names.lookup(name).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "{example}: \"{name}\" still registered 3 s after kill {signal}"
    );
}
