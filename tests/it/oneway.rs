//! Oneway calls: sent and forgotten, listed in the metadata, never holding up other calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::support::invoke_frame;

#[rmi::remote]
pub(crate) trait Recorder {
    /// Records `value` after `gate` opens (oneway).
    #[rmi(oneway)]
    async fn record_after_gate(&self, value: u32);
    /// Records `value` (oneway).
    #[rmi(oneway)]
    async fn record(&self, value: u32);
    /// Panics (oneway): logged on the server, never seen by the caller.
    #[rmi(oneway)]
    async fn explode(&self);
    /// Opens the gate.
    async fn open_gate(&self);
    /// What was recorded so far.
    async fn recorded(&self) -> Vec<u32>;
}

#[derive(Default)]
pub(crate) struct RecorderObject {
    values: Mutex<Vec<u32>>,
    gate: Notify,
}

impl Recorder for RecorderObject {
    async fn record_after_gate(&self, value: u32) {
        self.gate.notified().await;
        self.values.lock().unwrap().push(value);
    }

    async fn record(&self, value: u32) {
        self.values.lock().unwrap().push(value);
    }

    async fn explode(&self) {
        panic!("oneway panic");
    }

    async fn open_gate(&self) {
        self.gate.notify_waiters();
    }

    async fn recorded(&self) -> Vec<u32> {
        self.values.lock().unwrap().clone()
    }
}

async fn recorded_eventually(proxy: &RecorderProxy, expected: &[u32]) {
    for _ in 0..300 {
        let mut got = proxy.recorded().await.unwrap();
        got.sort();
        if got == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "never recorded {expected:?}: {:?}",
        proxy.recorded().await.unwrap()
    );
}

#[tokio::test]
async fn oneway_calls_return_at_once_and_do_not_hold_up_the_connection() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(RecorderServer::new(RecorderObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = RecorderProxy::connect(&uri).await.unwrap();

    let meta = proxy.proxy().metadata().await.unwrap();
    let mut oneway = meta.oneway.clone();
    oneway.sort();
    assert_eq!(oneway, ["explode", "record", "record_after_gate"]);
    assert!(meta.methods.contains(&"recorded".to_string()));

    // Returns although the method blocks until the gate opens...
    tokio::time::timeout(Duration::from_secs(30), proxy.record_after_gate(1))
        .await
        .expect("oneway waited")
        .unwrap();
    // ...and the same connection keeps serving calls meanwhile.
    proxy.record(2).await.unwrap();
    recorded_eventually(&proxy, &[2]).await;
    proxy.open_gate().await.unwrap();
    recorded_eventually(&proxy, &[1, 2]).await;

    // A panicking oneway call is logged on the server; the caller and the connection carry on.
    proxy.explode().await.unwrap();
    proxy.record(3).await.unwrap();
    recorded_eventually(&proxy, &[1, 2, 3]).await;
    daemon.shutdown();
}

/// A frame as it crossed the wire: type, flags and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    msg_type: u8,
    flags: u16,
    seq: u16,
}

/// Splits recorded bytes into frames (the 40-byte header says how long each is).
fn frames(bytes: &[u8]) -> Vec<Seen> {
    use rmi::protocol::frame::HEADER_SIZE;
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = &bytes[at..];
        assert!(h.len() >= HEADER_SIZE, "a partial header on the wire");
        let len = |r: std::ops::Range<usize>| u32::from_be_bytes(h[r].try_into().unwrap()) as usize;
        let total = HEADER_SIZE + len(12..16) + len(16..20);
        assert!(h.len() >= total, "a partial frame on the wire");
        out.push(Seen {
            msg_type: h[6],
            flags: u16::from_be_bytes([h[8], h[9]]),
            seq: u16::from_be_bytes([h[10], h[11]]),
        });
        at += total;
    }
    out
}

/// Bytes recorded by a relay, one buffer per direction.
#[derive(Clone, Default)]
struct Wire {
    to_daemon: Arc<Mutex<Vec<u8>>>,
    from_daemon: Arc<Mutex<Vec<u8>>>,
}

/// A TCP relay on loopback in front of `daemon` that records what crosses it; returns its port.
async fn recording_relay(daemon: std::net::SocketAddr) -> (u16, Wire) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let wire = Wire::default();
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        record: Arc<Mutex<Vec<u8>>>,
    ) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            // Recorded before it is passed on: once an answer arrives, it is in the record.
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    tokio::spawn({
        let wire = wire.clone();
        async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(daemon).await.unwrap();
                let (cr, cw) = client.into_split();
                let (dr, dw) = upstream.into_split();
                tokio::spawn(pump(cr, dw, wire.to_daemon.clone()));
                tokio::spawn(pump(dr, cw, wire.from_daemon.clone()));
            }
        }
    });
    (port, wire)
}

/// A daemon serving a recorder, and a proxy to it through a [`recording_relay`].
async fn recorded_recorder() -> (rmi::Daemon, RecorderProxy, Wire) {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let direct = daemon
        .register(RecorderServer::new(RecorderObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let (port, wire) = recording_relay(daemon.local_addr().unwrap()).await;
    let uri = rmi::Uri::tcp(direct.object().unwrap(), "127.0.0.1", port);
    let proxy = RecorderProxy::connect(&uri).await.unwrap();
    (daemon, proxy, wire)
}

#[tokio::test]
async fn the_daemon_answers_only_the_calls_that_are_not_oneway() {
    use rmi::protocol::frame::{MessageType, FLAGS_BATCH, FLAGS_EXCEPTION, FLAGS_ONEWAY};
    let (daemon, proxy, wire) = recorded_recorder().await;

    // Every kind of oneway call: a typed oneway method, the untyped call_oneway, a batch sent
    // oneway, a oneway method that panics (no exception comes back either), and one to the
    // daemon's object.
    proxy.record(1).await.unwrap();
    proxy.proxy().call_oneway("record", &(2u32,)).await.unwrap();
    let mut batch = proxy.batch();
    batch.record(3);
    batch.record(4);
    batch.send_oneway().await.unwrap();
    proxy.explode().await.unwrap();
    // A oneway call to the daemon's own object.
    proxy
        .proxy()
        .call_daemon_oneway("ping", &[(); 0])
        .await
        .unwrap();
    // A batch that is answered, for comparison: its one reply is flagged as a batch.
    let mut answered_batch = proxy.batch();
    answered_batch.recorded();
    answered_batch.send().await.unwrap();
    // They all ran (normal calls, answered, check)...
    recorded_eventually(&proxy, &[1, 2, 3, 4]).await;
    // ...and a reply to any of them would have been sent when it finished: give stragglers
    // time, then one more normal call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.recorded().await.unwrap().len(), 4);

    let requests = frames(&wire.to_daemon.lock().unwrap());
    let replies = frames(&wire.from_daemon.lock().unwrap());
    let invokes: Vec<Seen> = requests
        .iter()
        .copied()
        .filter(|f| f.msg_type == MessageType::Invoke as u8)
        .collect();
    let oneway: Vec<Seen> = invokes
        .iter()
        .copied()
        .filter(|f| f.flags & FLAGS_ONEWAY != 0)
        .collect();
    assert_eq!(oneway.len(), 5, "five oneway requests sent: {requests:?}");
    assert_eq!(
        oneway.iter().filter(|f| f.flags & FLAGS_BATCH != 0).count(),
        1,
        "one of them a batch: {requests:?}"
    );
    // Exactly one reply per normal request, with its sequence number; none for the others.
    let mut asked: Vec<u16> = invokes
        .iter()
        .filter(|f| f.flags & FLAGS_ONEWAY == 0)
        .map(|f| f.seq)
        .collect();
    assert!(!asked.is_empty());
    assert_eq!(replies[0].msg_type, MessageType::ConnectOk as u8);
    let results = &replies[1..];
    assert!(
        results
            .iter()
            .all(|f| f.msg_type == MessageType::Result as u8 && f.flags & FLAGS_EXCEPTION == 0),
        "only plain results came back: {results:?}"
    );
    // The batch's reply, and only it, carries FLAGS_BATCH.
    let batches: Vec<u16> = invokes
        .iter()
        .filter(|f| f.flags & FLAGS_BATCH != 0 && f.flags & FLAGS_ONEWAY == 0)
        .map(|f| f.seq)
        .collect();
    assert_eq!(batches.len(), 1, "one answered batch sent: {requests:?}");
    assert_eq!(
        results
            .iter()
            .filter(|f| f.flags & FLAGS_BATCH != 0)
            .map(|f| f.seq)
            .collect::<Vec<_>>(),
        batches,
        "only the batch's reply is flagged as a batch: {results:?}"
    );
    let mut answered: Vec<u16> = results.iter().map(|f| f.seq).collect();
    asked.sort();
    answered.sort();
    assert_eq!(
        answered,
        asked,
        "sequence numbers answered vs asked ({} oneway requests sent: {oneway:?})",
        oneway.len()
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_oneway_invoke_then_a_normal_one_get_exactly_one_result_on_the_wire() {
    use rmi::protocol::frame::{MessageType, FLAGS_CORR_ID, FLAGS_ONEWAY, HEADER_SIZE};
    use rmi::Serializer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(RecorderServer::new(RecorderObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let object = uri.object().unwrap();
    let observer = RecorderProxy::connect(&uri).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(daemon.local_addr().unwrap())
        .await
        .unwrap();
    crate::support::connect_handshake(&mut s, object).await;
    s.write_all(&invoke_frame(object, "record", &(7u32,), 1, FLAGS_ONEWAY))
        .await
        .unwrap();
    // The oneway call has run (and would have been answered by now)...
    recorded_eventually(&observer, &[7]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...then a normal call on the same connection.
    s.write_all(&invoke_frame(object, "recorded", &(), 2, 0))
        .await
        .unwrap();
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    // Everything that arrives until 500 ms after the expected reply.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut settle = None;
    loop {
        let until = settle.unwrap_or(deadline);
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the daemon closed the connection"),
            Ok(Ok(n)) => wire.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
        if settle.is_none() && wire.len() >= HEADER_SIZE {
            settle = Some(tokio::time::Instant::now() + Duration::from_millis(500));
        }
    }
    let seen = frames(&wire);
    assert_eq!(
        seen.iter().map(|f| (f.msg_type, f.seq)).collect::<Vec<_>>(),
        [(MessageType::Result as u8, 2)],
        "exactly one frame, the result of the normal call: {seen:?}"
    );
    // A plain result: no exception, batch, stream or oneway flag, only the correlation id.
    assert_eq!(seen[0].flags, FLAGS_CORR_ID, "{seen:?}");
    let annotations = u32::from_be_bytes(wire[16..20].try_into().unwrap()) as usize;
    let body = &wire[HEADER_SIZE + annotations..];
    let recorded: Vec<u32> = Serializer::Bincode
        .decode(body, &Default::default())
        .unwrap();
    assert_eq!(recorded, [7]);
    daemon.shutdown();
}

/// A Python client calls a Rust oneway method as Pyro does: the method is oneway in the
/// metadata the CONNECTOK carries, so the call returns at once, even though the method waits
/// for a gate that only the next call opens (a call waiting for its reply would time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_rust_oneway_methods_without_waiting() {
    let Some(python) = crate::python::python() else {
        return;
    };
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(RecorderServer::new(RecorderObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    const CLIENT: &str = r#"
import sys
import Pyro5.api, Pyro5.errors
Pyro5.config.COMMTIMEOUT = 5
for n, serializer in enumerate(("serpent", "json", "msgpack", "marshal")):
    Pyro5.config.SERIALIZER = serializer
    with Pyro5.api.Proxy(sys.argv[1]) as recorder:
        recorder._pyroBind()
        print(serializer, sorted(recorder._pyroOneway))
        try:
            print(serializer, "returned", recorder.record_after_gate(n))
        except Pyro5.errors.TimeoutError:
            print(serializer, "blocked")
        recorder.open_gate()
import time
deadline = time.time() + 10
with Pyro5.api.Proxy(sys.argv[1]) as recorder:
    while len(recorder.recorded()) < 4 and time.time() < deadline:
        time.sleep(0.02)
    print("recorded", sorted(recorder.recorded()))
"#;
    let uri = uri.to_string();
    let out =
        tokio::task::spawn_blocking(move || crate::python::run_python(python, CLIENT, &[&uri]))
            .await
            .unwrap();
    for serializer in ["serpent", "json", "msgpack", "marshal"] {
        assert!(
            out.contains(&format!(
                "{serializer} ['explode', 'record', 'record_after_gate']"
            )),
            "the oneway methods in the metadata, {serializer}: {out}"
        );
        assert!(
            out.contains(&format!("{serializer} returned None")),
            "returned at once, {serializer}: {out}"
        );
    }
    assert!(out.contains("recorded [0, 1, 2, 3]"), "{out}");
    daemon.shutdown();
}

#[tokio::test]
async fn a_ping_is_a_ping_frame_each_way_on_the_wire() {
    use rmi::protocol::frame::MessageType;
    let (daemon, proxy, wire) = recorded_recorder().await;
    proxy.proxy().ping().await.unwrap();
    proxy.proxy().ping().await.unwrap();
    let pings = |bytes: &[u8]| {
        frames(bytes)
            .iter()
            .filter(|f| f.msg_type == MessageType::Ping as u8)
            .count()
    };
    assert_eq!(pings(&wire.to_daemon.lock().unwrap()), 2, "two pings sent");
    assert_eq!(pings(&wire.from_daemon.lock().unwrap()), 2, "two answered");
    daemon.shutdown();
}
