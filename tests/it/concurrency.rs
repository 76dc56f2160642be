//! Many calls in flight over one shared connection, from many tasks.

use std::time::Duration;

use futures_util::future::join_all;
use rmi::Serializer;

use crate::support::{start_daemon, LabProxy};

async fn thousand_calls_from_fifty_tasks(serializer: Serializer) {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .serializer(serializer)
        .connect()
        .await
        .unwrap();
    let tasks = (0..50u32).map(|task| {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            // Each task has its 20 calls in flight at once.
            let calls = (0..20u32).map(|call| {
                let proxy = proxy.clone();
                async move {
                    let text = format!("task {task} call {call}");
                    let reply = proxy.echo(task, call, text.clone()).await.unwrap();
                    assert_eq!(reply, (task, call, text), "a reply reached the wrong call");
                }
            });
            join_all(calls).await;
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(proxy.calls().await.unwrap(), 1000);
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_over_one_proxy_bincode() {
    thousand_calls_from_fifty_tasks(Serializer::Bincode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_over_one_proxy_msgpack() {
    thousand_calls_from_fifty_tasks(Serializer::MsgPack).await;
}

#[tokio::test]
async fn pipelined_calls_run_concurrently_on_the_daemon() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    // Eight calls that each wait until all eight are running: only possible if the daemon
    // runs a connection's requests concurrently.
    let calls = (0..8).map(|_| proxy.rendezvous(8));
    let done = tokio::time::timeout(Duration::from_secs(30), join_all(calls))
        .await
        .expect("calls ran one at a time");
    assert!(done.into_iter().all(|r| r.unwrap() == 8));
    daemon.shutdown();
}

#[tokio::test]
async fn replies_come_back_out_of_order() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    let slow = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(60_000).await }
    });
    // A later call on the same connection is answered while the first is still running.
    let fast = tokio::time::timeout(Duration::from_secs(30), proxy.echo(1, 2, "fast".into())).await;
    assert_eq!(
        fast.expect("head-of-line blocked").unwrap(),
        (1, 2, "fast".to_string())
    );
    assert!(!slow.is_finished());
    slow.abort();
    assert!(
        slow.await.unwrap_err().is_cancelled(),
        "the slow call was still running, not finished"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn calls_over_the_in_flight_limit_wait_for_a_slot() {
    // Four calls that wait for four: they all fit in a limit of four.
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .max_in_flight(4)
        .connect()
        .await
        .unwrap();
    let four = join_all((0..4).map(|_| proxy.rendezvous(4)));
    let met = tokio::time::timeout(Duration::from_secs(30), four)
        .await
        .expect("four calls within the limit of four never met");
    for result in met {
        assert_eq!(result.unwrap(), 4);
    }
    daemon.shutdown();

    // Five calls that wait for five never meet: the fifth waits for a slot the other four hold.
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .max_in_flight(4)
        .connect()
        .await
        .unwrap();
    let five = join_all((0..5).map(|_| proxy.rendezvous(5)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), five)
            .await
            .is_err(),
        "five calls met through a limit of four"
    );
    // The four sent calls still hold their slots (their replies never came); the daemon keeps
    // serving other connections, and it saw only four of the five calls.
    let other = LabProxy::connect(&lab).await.unwrap();
    assert_eq!(
        other.calls().await.unwrap(),
        4,
        "calls that reached the daemon"
    );
    assert_eq!(other.echo(0, 0, "after".into()).await.unwrap().2, "after");
    daemon.shutdown();
}
