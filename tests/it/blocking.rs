//! The blocking facade: a plain synchronous program calls a proxy without async code.

use crate::support::{spawn_child_daemon, LabBlockingProxy, LabProxy};

#[test]
fn a_synchronous_program_calls_through_the_blocking_proxy() {
    let (_daemon, uri) = spawn_child_daemon();
    let lab = LabBlockingProxy::connect(&uri).unwrap();
    assert_eq!(
        lab.echo(1, 2, "sync".into()).unwrap(),
        (1, 2, "sync".to_string())
    );
    assert!(matches!(
        lab.explode("sync panic".into()).unwrap_err(),
        rmi::Error::Panicked(_)
    ));

    // Clones share the connection and work from many threads.
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let lab = lab.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    assert_eq!(
                        lab.echo(t, i, format!("{t}/{i}")).unwrap(),
                        (t, i, format!("{t}/{i}"))
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(lab.calls().unwrap(), 102);

    // Settings go through the builder.
    let builder = LabProxy::builder(&uri)
        .unwrap()
        .serializer(rmi::Serializer::MsgPack);
    let msgpack = LabBlockingProxy::connect_with(builder).unwrap();
    assert_eq!(msgpack.echo(7, 7, "mp".into()).unwrap().2, "mp");
}

#[test]
fn the_blocking_proxy_refuses_to_block_an_async_runtime() {
    let (_daemon, uri) = spawn_child_daemon();
    let lab = LabBlockingProxy::connect(&uri).unwrap();
    assert_eq!(lab.echo(1, 1, "outside".into()).unwrap().2, "outside");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A blocking method called from inside an async runtime panics instead of blocking it.
    let panic = rt.block_on(async {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lab.echo(2, 2, "inside".into())
        }))
        .expect_err("a blocking call inside an async runtime did not panic")
    });
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    // tokio's own message ("Cannot start a runtime from within a runtime. ...").
    assert!(text.contains("within a runtime"), "{text}");
    drop(rt);
    // The call never left: only the call made outside ran.
    assert_eq!(lab.calls().unwrap(), 1);
}

/// Threads a runtime keeps for blocking work have its handle entered, but may block: the
/// blocking proxy works there, as tokio's docs send synchronous code there.
#[test]
fn the_blocking_proxy_works_on_threads_meant_for_blocking() {
    let (_daemon, uri) = spawn_child_daemon();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let from_spawn_blocking = rt.block_on(async {
        let uri = uri.clone();
        tokio::task::spawn_blocking(move || {
            let lab = LabBlockingProxy::connect(&uri).unwrap();
            lab.echo(1, 1, "spawn_blocking".into()).unwrap().2
        })
        .await
        .unwrap()
    });
    assert_eq!(from_spawn_blocking, "spawn_blocking");
    let from_block_in_place = rt.block_on(async {
        tokio::task::block_in_place(|| {
            let lab = LabBlockingProxy::connect(&uri).unwrap();
            lab.echo(2, 2, "block_in_place".into()).unwrap().2
        })
    });
    assert_eq!(from_block_in_place, "block_in_place");
    // A plain thread with the runtime's handle entered.
    let _entered = rt.enter();
    let lab = LabBlockingProxy::connect(&uri).unwrap();
    assert_eq!(lab.echo(3, 3, "entered".into()).unwrap().2, "entered");
}

/// A process whose first blocking call comes when it is out of file descriptors gets an error
/// from it, not a panic (helper-167 #5: the blocking runtime was built with `expect`, and
/// tokio's signal driver panics when its socket pair cannot be made). The call runs in a child
/// of this test binary (`blocking_child_entry`) under limits of 4 to 12 descriptors: at every
/// one it returns, and where the runtime cannot start, the error says so.
#[test]
fn a_blocking_call_with_no_descriptors_left_for_its_runtime_is_an_error_not_a_panic() {
    if crate::faults::prlimit_missing(
        "blocking::a_blocking_call_with_no_descriptors_left_for_its_runtime_is_an_error_not_a_panic",
    ) {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut runtime_refused = 0;
    for limit in 4..=12 {
        let out = std::process::Command::new("prlimit")
            .arg(format!("--nofile={limit}:{limit}"))
            .arg(&exe)
            .args([
                "--exact",
                "blocking_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RMI_TEST_BLOCKING_CHILD", "1")
            .output()
            .expect("run the child under prlimit");
        let said = String::from_utf8_lossy(&out.stdout);
        // (Below some limit the binary cannot even load its libraries: nothing to check.)
        if !said.contains("running 1 test") {
            continue;
        }
        assert!(
            out.status.success()
                && said.contains("BLOCKING Err(")
                && said.contains("BLOCKING_WITH Err("),
            "at {limit} descriptors: {said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if said.matches("starting rmi's blocking runtime").count() == 2 {
            runtime_refused += 1;
        }
    }
    assert!(
        runtime_refused > 0,
        "no limit left the runtime without descriptors"
    );
}
