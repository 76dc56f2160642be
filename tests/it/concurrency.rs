//! Many calls in flight over one shared connection, from many tasks.

use std::time::Duration;

use futures_util::future::join_all;
use rmi::Serializer;

use futures_util::FutureExt;
use rmi::protocol::frame::MessageType;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::support::{
    connect_handshake, invoke_frame, serve_lab, start_daemon, LabObject, LabProxy, LabServer,
};

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
    let watcher = LabProxy::connect(&lab).await.unwrap();
    let slow = tokio::spawn({
        let p = proxy.clone();
        async move { p.sleep(60_000).await }
    });
    // The slow call is running on the daemon before the fast one is sent.
    tokio::time::timeout(Duration::from_secs(10), async {
        while watcher.sleeping().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slow call never started, or the daemon runs one call at a time");
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

/// `usize::MAX` as a limit ("no limit") means as many as can be counted: the daemon serves
/// calls, where each connection panicked after its handshake, and a shutdown still gives a
/// running call its grace period (a connection's running calls are counted in `u32`).
#[tokio::test]
async fn limits_of_usize_max_mean_no_limit() {
    let builder = rmi::Daemon::builder()
        .max_in_flight(usize::MAX)
        .max_connections(usize::MAX);
    let (daemon, lab) = serve_lab(builder).await;
    let proxy = LabProxy::connect(&lab).await.unwrap();
    for met in within(join_all((0..8).map(|_| proxy.rendezvous(8)))).await {
        assert_eq!(met.unwrap(), 8);
    }
    let running = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.sleep(300).await }
    });
    let other = LabProxy::connect(&lab).await.unwrap();
    within(async {
        while other.sleeping().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    daemon.shutdown();
    assert_eq!(within(running).await.unwrap().unwrap(), 300);
}

/// A reply over the proxy's own `max_message_size` (a client that lowered it to protect
/// itself) fails its own call alone: its bytes are read and dropped, and the other calls on
/// the shared connection get their replies. (The connection was closed, and every call in
/// flight on it failed, their results lost.)
#[tokio::test]
async fn a_reply_too_large_for_the_proxy_fails_its_own_call_alone() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .limits(rmi::DecodeLimits {
            max_message_size: 1 << 20,
            ..Default::default()
        })
        .connect()
        .await
        .unwrap();
    let connection = proxy.connection().await.unwrap();
    let slow = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.blob_after(300, 1000).await }
    });
    // (Sent by then, its reply 250 ms away.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = within(proxy.make_blob(2 << 20)).await.unwrap_err();
    assert!(
        matches!(&err, rmi::Error::Protocol(m) if m.contains("max_message_size")),
        "{err}"
    );
    assert_eq!(within(slow).await.unwrap().unwrap().0.len(), 1000);
    assert_eq!(within(proxy.make_blob(10)).await.unwrap().0.len(), 10);
    assert_eq!(proxy.connection().await.unwrap(), connection);
    daemon.shutdown();
}

/// Fails the test when `what` does not finish within ten seconds.
async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), what)
        .await
        .expect("a call was held up by one nobody polls")
}

/// A call alone in flight reads its own reply off the socket. One that is polled once and then
/// neither polled nor dropped must not hold up the replies of calls made meanwhile.
#[tokio::test]
async fn a_lone_call_that_stops_being_polled_holds_up_no_other_call() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab).unwrap().connect().await.unwrap();
    proxy.echo(0, 0, "open".into()).await.unwrap();
    let mut left = Box::pin(proxy.sleep(300));
    assert!(futures_util::poll!(&mut left).is_pending());
    // A ping, one more call, then three at once, all while `left` waits unpolled.
    within(proxy.proxy().ping()).await.unwrap();
    assert_eq!(
        within(proxy.echo(1, 0, "one".into())).await.unwrap().2,
        "one"
    );
    let replies = within(join_all((0..3).map(|i| proxy.echo(2, i, "three".into())))).await;
    assert!(replies.into_iter().all(|r| r.unwrap().2 == "three"));
    // Its own reply waited for it.
    assert_eq!(within(left).await.unwrap(), 300);
    assert_eq!(proxy.echo(3, 0, "after".into()).await.unwrap().2, "after");
    daemon.shutdown();
}

/// With one in-flight slot, a call waiting for it behind a lone call that is polled once and
/// then left must still get through: the slot comes free when the left call's reply is read,
/// and the reader task reads it.
#[tokio::test]
async fn with_one_slot_a_call_behind_an_unpolled_lone_call_still_gets_through() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab)
        .unwrap()
        .max_in_flight(1)
        .connect()
        .await
        .unwrap();
    proxy.echo(0, 0, "open".into()).await.unwrap();
    let mut left = Box::pin(proxy.sleep(200));
    assert!(futures_util::poll!(&mut left).is_pending());
    assert_eq!(
        within(proxy.echo(1, 0, "next".into())).await.unwrap().2,
        "next"
    );
    assert_eq!(within(left).await.unwrap(), 200);
    daemon.shutdown();
}

/// Calls from several tasks, now alone in flight, now together, with pings among them: the
/// reading passes between the calls and the reader task without a reply lost or misdelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_now_alone_now_together_all_get_their_own_replies() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab).unwrap().connect().await.unwrap();
    let tasks = (0..4u32).map(|task| {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            for call in 0..150u32 {
                let text = format!("task {task} call {call}");
                let reply = proxy.echo(task, call, text.clone()).await.unwrap();
                assert_eq!(reply, (task, call, text), "a reply reached the wrong call");
                match (call + task) % 7 {
                    0 => proxy.proxy().ping().await.unwrap(),
                    1 => tokio::time::sleep(Duration::from_millis(1)).await,
                    2 => tokio::task::yield_now().await,
                    _ => {}
                }
            }
        })
    });
    let all = tokio::time::timeout(Duration::from_secs(60), join_all(tasks))
        .await
        .expect("calls hung");
    for t in all {
        t.unwrap();
    }
    assert_eq!(proxy.calls().await.unwrap(), 600);
    daemon.shutdown();
}

/// A call waiting for its reply holds its future: thousands in flight should cost kilobytes
/// each at most, not the size of the code that opens connections (which only a call that
/// dials runs, and which is boxed for it).
#[tokio::test]
async fn a_call_in_flight_is_a_small_future() {
    let (daemon, lab, _) = start_daemon().await;
    let proxy: LabProxy = LabProxy::builder(&lab).unwrap().connect().await.unwrap();
    let raw = proxy.proxy();
    let typed = proxy.echo(1, 2, "x".into());
    let untyped = raw.call::<_, String>("echo", &(1u32, 2u32, "x"));
    let sizes = (
        std::mem::size_of_val(&typed),
        std::mem::size_of_val(&untyped),
    );
    eprintln!(
        "call futures: typed {} bytes, untyped {} bytes",
        sizes.0, sizes.1
    );
    // Measured: about 1,600 and 1,536 bytes (5,744 and 5,680 with the dial inline).
    let limit = 2 * 1024;
    assert!(sizes.0 <= limit && sizes.1 <= limit, "{sizes:?} > {limit}");
    drop((typed, untyped));
    daemon.shutdown();
}

/// The replies whole in `buf` (dropped from it), all `Result`s: how many.
fn count_results(buf: &mut Vec<u8>) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Ok(header) = rmi::protocol::frame::check(&buf[at..], 1 << 20) {
        assert_eq!(header.msg_type, MessageType::Result);
        at += header.total_len();
        n += 1;
    }
    buf.drain(..at);
    n
}

/// Reads once from `pipe` (within ten seconds) into `buf`; how many whole replies it now
/// holds (dropped from it).
async fn read_results(pipe: &mut DuplexStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    let n = within(pipe.read(&mut chunk)).await.unwrap();
    assert!(n > 0, "the daemon closed the connection");
    buf.extend_from_slice(&chunk[..n]);
    count_results(buf)
}

/// A connection whose requests are all at hand (a backlog of 20,000 pipelined calls already in
/// its pipe) must not keep a daemon on one thread to itself while it works through them: the
/// calls it runs inline take turns with other connections. Over in-memory pipes on the test's
/// one thread, the order is deterministic: no socket ever makes the flooding connection wait,
/// so only the daemon's own turn-taking lets the other one in, and how soon it does is the
/// same on every run.
#[tokio::test]
async fn a_connection_with_a_backlog_takes_turns_with_others_on_one_thread() {
    const FLOOD: usize = 20_000;
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    daemon
        .register_with_id(LabServer::new(LabObject::default()), "lab")
        .unwrap();
    let serve = |pipe: tokio::io::DuplexStream, peer: &'static str| {
        let d = daemon.clone();
        tokio::spawn(async move { d.serve_stream(pipe, peer).await })
    };
    // Room for the whole backlog both ways: writing it, or answering it, never waits.
    let (mut flood, flood_end) = tokio::io::duplex(16 << 20);
    serve(flood_end, "flood");
    connect_handshake(&mut flood, "lab").await;
    let mut requests = Vec::new();
    for call in 0..FLOOD {
        let args = (7u32, call as u32, "");
        requests.extend(invoke_frame("lab", "echo", &args, call as u16, 0));
    }
    flood.write_all(&requests).await.unwrap();

    // Another connection: its handshake and one call.
    let (mut other, other_end) = tokio::io::duplex(1 << 16);
    serve(other_end, "other");
    connect_handshake(&mut other, "lab").await;
    let call = invoke_frame("lab", "echo", &(1_000u32, 0u32, "other"), 1, 0);
    other.write_all(&call).await.unwrap();
    let mut buf = Vec::new();
    while read_results(&mut other, &mut buf).await == 0 {}

    // How much of the backlog was answered by then: whatever is in the flood's pipe now.
    let mut answered = 0;
    let mut flood_buf = Vec::new();
    tokio::task::coop::unconstrained(async {
        while let Some(more) = read_results(&mut flood, &mut flood_buf).now_or_never() {
            answered += more;
        }
    })
    .await;
    // A turn is about 128 calls (tokio's cooperative budget; 225 were answered when this was
    // written). Reads alone would give a turn only every few thousand: each brings hundreds of
    // requests, and the budget counts reads.
    assert!(
        answered <= 1_000,
        "the other connection was answered after {answered} of the backlog's {FLOOD} calls"
    );
    // The rest of the backlog is answered too.
    while answered < FLOOD {
        answered += read_results(&mut flood, &mut flood_buf).await;
    }
    daemon.shutdown();
}

/// The length of the text of call `n` of client `client`: mostly small, some around the 64 KiB
/// at which the read buffers are swapped rather than reused, a few near `max_message_size`.
fn text_len(client: u32, n: u32, max: usize) -> usize {
    let x =
        (client.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503)).wrapping_mul(2_246_822_519);
    match x % 100 {
        0 => max - 4096 - (x as usize % 1024),
        1..=9 => 60_000 + (x as usize % 10_000),
        10..=29 => 1_000 + (x as usize % 9_000),
        30..=34 => 0,
        _ => x as usize % 200,
    }
}

/// The test plan's T-LOAD-1 and T-LOAD-5: 40 clients, each on its own connection in bincode or
/// msgpack with 8 calls in flight, texts from empty to near `max_message_size`, while other
/// clients' calls panic and two connections stall part way through a request: every reply is
/// its own call's, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_of_mixed_sizes_among_failures_each_get_their_own_replies() {
    const MAX: usize = 1 << 20;
    let builder = rmi::Daemon::builder().limits(rmi::DecodeLimits {
        max_message_size: MAX,
        ..Default::default()
    });
    let (daemon, lab) = crate::support::serve_lab(builder).await;
    let object = lab.object().unwrap().to_owned();
    // Two connections that stall half way through a request.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = crate::support::dial(&lab).await;
        connect_handshake(&mut s, &object).await;
        let call = invoke_frame(&object, "echo", &(0u32, 0u32, "x".repeat(10_000)), 1, 0);
        s.write_all(&call[..call.len() / 2]).await.unwrap();
        stalled.push(s);
    }
    // Calls that panic, all along.
    let panicking = LabProxy::connect(&lab).await.unwrap();
    let panics = tokio::spawn(async move {
        for _ in 0..50 {
            assert!(panicking.explode("boom".into()).await.is_err());
        }
    });
    let clients = (0..40u32).map(|client| {
        let lab = lab.clone();
        tokio::spawn(async move {
            let serializer = if client % 2 == 0 {
                Serializer::Bincode
            } else {
                Serializer::MsgPack
            };
            let proxy: LabProxy = LabProxy::builder(&lab)
                .unwrap()
                .serializer(serializer)
                .limits(rmi::DecodeLimits {
                    max_message_size: MAX,
                    ..Default::default()
                })
                .connect()
                .await
                .unwrap();
            let mut bytes = 0;
            for wave in 0..3u32 {
                let calls = (0..8u32).map(|i| {
                    let proxy = proxy.clone();
                    let n = wave * 8 + i;
                    let len = text_len(client, n, MAX);
                    let fill = char::from(b'a' + (n % 26) as u8);
                    async move {
                        let text: String = std::iter::repeat_n(fill, len).collect();
                        let reply = proxy.echo(client, n, text.clone()).await.unwrap();
                        assert!(
                            reply.0 == client && reply.1 == n && reply.2 == text,
                            "client {client} call {n} ({len} bytes) got client {} call {} ({} bytes)",
                            reply.0,
                            reply.1,
                            reply.2.len()
                        );
                        len
                    }
                });
                bytes += join_all(calls).await.into_iter().sum::<usize>();
            }
            bytes
        })
    });
    let mut total = 0;
    for client in join_all(clients).await {
        total += client.unwrap();
    }
    panics.await.unwrap();
    assert!(
        total > 4 * MAX,
        "the sizes reached the large cases: {total} bytes"
    );
    // The stalled connections held nothing up; the daemon still serves.
    drop(stalled);
    let proxy = LabProxy::connect(&lab).await.unwrap();
    assert_eq!(proxy.echo(1, 2, "ok".into()).await.unwrap().2, "ok");
    daemon.shutdown();
}
