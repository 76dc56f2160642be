//! Reconnecting after a daemon restart, once for all waiting calls, and retry rules.

use std::time::Duration;

use futures_util::future::join_all;
use rmi::Error;

use crate::support::{spawn_child_daemon_on, unused_port, LabProxy};

// Multi-threaded: spawning the child blocks a thread, and the proxy must see the EOF meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_call_reconnects_after_a_restart_once_for_all_callers() {
    let port = unused_port();
    let (first, uri) = spawn_child_daemon_on(port);
    let proxy: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .reconnect_attempts(20)
        .connect()
        .await
        .unwrap();
    let old = proxy.connection().await.unwrap();
    drop(first); // killed
                 // Give the proxy's reader a moment to see the connection close, as it would in a program
                 // whose daemon restarts (a call sent into a dying connection may have run, so it fails).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (_second, uri2) = spawn_child_daemon_on(port);
    assert_eq!(uri, uri2, "same address, same object id");
    // Twenty callers at once: one redial serves them all.
    let conns = join_all((0..20).map(|_| proxy.connection())).await;
    let conns: Vec<u64> = conns.into_iter().map(|c| c.unwrap()).collect();
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "callers reconnected separately: {conns:?}"
    );
    assert_eq!(proxy.echo(1, 1, "back".into()).await.unwrap().2, "back");
    let _ = old;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_or_retrying_calls_are_resent_after_a_connection_loss() {
    let port = unused_port();
    let (first, uri) = spawn_child_daemon_on(port);
    let proxy: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .reconnect_attempts(50)
        .connect()
        .await
        .unwrap();

    // Both calls are running when the daemon dies; a new one comes up on the same port.
    let plain = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(1_500).await }
    });
    let idempotent = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep_idempotent(300).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    let (_second, _) = spawn_child_daemon_on(port);

    let err = plain.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ConnectionClosed(_)),
        "a plain call is not resent: {err}"
    );
    assert_eq!(
        idempotent.await.unwrap().unwrap(),
        300,
        "the idempotent call was resent and ran"
    );

    // A proxy configured with retries resends any method.
    let retrying = proxy.proxy().with_retries(2);
    let retrying = LabProxy::from_proxy(retrying);
    assert_eq!(retrying.sleep(10).await.unwrap(), 10);
}
