//! Hardening, second round (issue 8): memory an idle connection holds, bytes queued for a slow
//! reader, streams of vanished connections, batches, whole-message size limits, huge
//! timeouts, wedged proxies, log floods and TLS mix-ups. Attacks run against a child-process
//! daemon over raw sockets where they could hurt it, and the child must still serve after.

use std::time::{Duration, Instant};

use rmi::protocol::codec::encode_invoke;
use rmi::protocol::frame::{Message, MessageType};
use rmi::{Error, Serializer, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    assert_serving, connect_handshake, dial, spawn_child_daemon_with, start_daemon, Blob,
    ChildGuard, LabProxy, Loud,
};

const MIB: u64 = 1024;

fn invoke_frame(method: &str, args: &impl serde::Serialize, seq: u16) -> Message {
    let payload = encode_invoke(Serializer::Bincode, "lab", method, args).unwrap();
    Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, seq, payload)
}

/// Reads one whole message's bytes off a raw socket (header, then the rest).
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; rmi::protocol::frame::HEADER_SIZE];
    stream.read_exact(&mut head).await?;
    let header = rmi::protocol::frame::Header::parse(&head, usize::MAX).expect("a header");
    let mut rest = vec![0u8; header.total_len() - head.len()];
    stream.read_exact(&mut rest).await?;
    Ok(rest)
}

/// The INVOKE payload length of `blob_len` on `object` with a blob of `n` bytes (bincode).
fn blob_len_payload(object: &str, n: usize) -> usize {
    encode_invoke(
        Serializer::Bincode,
        object,
        "blob_len",
        &(Blob(vec![0; n]),),
    )
    .unwrap()
    .len()
}

/// The blob length whose `blob_len` payload is exactly `payload` bytes (in the range where
/// bincode's length prefix has one size, the payload grows byte for byte with the blob).
fn blob_for_payload(object: &str, payload: usize) -> usize {
    let overhead = blob_len_payload(object, 1024) - 1024;
    let n = payload - overhead;
    assert_eq!(
        blob_len_payload(object, n),
        payload,
        "no blob gives {payload} bytes"
    );
    n
}

/// Samples the child's RSS every 50 ms for `period`; returns the largest.
async fn peak_rss_kib(child: &ChildGuard, period: Duration) -> u64 {
    let until = Instant::now() + period;
    let mut peak = child.rss_kib();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(child.rss_kib());
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_fall_back_to_a_small_buffer_after_a_large_message() {
    const CONNECTIONS: usize = 6;
    // Above glibc's largest mmap threshold (32 MiB), so what the daemon frees goes back to the
    // system and RSS shows what it still holds.
    const BLOB: usize = 40 << 20;
    let (mut child, uri) = spawn_child_daemon_with(0, "");
    let lab = LabProxy::connect(&uri).await.unwrap();
    lab.echo(0, 0, "warm".into()).await.unwrap();
    let before = child.rss_kib();
    let frame = invoke_frame("blob_len", &(Blob(vec![1; BLOB]),), 1).to_bytes();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = dial(&uri).await;
        connect_handshake(&mut s, "lab").await;
        s.write_all(&frame).await.unwrap();
        read_message(&mut s).await.expect("the call is answered");
        held.push(s); // stays open and idle
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = child.rss_kib();
    let grown_mib = idle.saturating_sub(before) / MIB;
    println!(
        "RSS before {} MiB, with {CONNECTIONS} idle connections after one 40 MiB message each: {} MiB (+{grown_mib} MiB)",
        before / MIB,
        idle / MIB
    );
    // Kept buffers would hold 6 × 40 MiB = 240 MiB.
    assert!(
        grown_mib < 100,
        "idle connections still hold their largest message: +{grown_mib} MiB"
    );
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_queued_for_a_client_that_never_reads_are_bounded_in_bytes() {
    const BLOB: usize = 4 << 20;
    const REQUESTS: u16 = 64;
    // A small byte budget; the in-flight limit is the default 1,024, so only bytes bound this.
    let (mut child, uri) = spawn_child_daemon_with(0, "max_queued=8388608;write_ms=60000");
    let lab = LabProxy::connect(&uri).await.unwrap();
    lab.echo(0, 0, "warm".into()).await.unwrap();
    let calls_before = lab.calls().await.unwrap();
    let before = child.rss_kib();
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    // A sustained attack: requests keep coming, one every 20 ms, and no reply is ever read.
    for seq in 1..=REQUESTS {
        s.write_all(&invoke_frame("make_blob", &(BLOB,), seq).to_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak = peak_rss_kib(&child, Duration::from_millis(500)).await;
    let grown_mib = peak.saturating_sub(before) / MIB;
    let ran = lab.calls().await.unwrap() - calls_before - 1;
    println!(
        "never-reading client, {REQUESTS} requests for 4 MiB results, max_queued_bytes 8 MiB: {ran} ran, RSS +{grown_mib} MiB"
    );
    // Without a byte budget all 64 run and their 256 MiB of results stay queued.
    assert!(
        ran < REQUESTS as usize / 2,
        "the daemon kept reading requests: {ran} ran"
    );
    assert!(grown_mib < 128, "queued replies grew to +{grown_mib} MiB");
    drop(s);
    assert_serving(&mut child, &uri).await;
}

/// Registers the lab object as "lab" in `daemon` and serves it one connection over an
/// in-memory pipe of `capacity` bytes (no kernel buffer hides a slow reader); returns the
/// client's end, past the handshake, and the task serving it.
async fn lab_over_pipe(
    daemon: &rmi::Daemon,
    capacity: usize,
) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
    daemon
        .register_with_id(
            crate::support::LabServer::new(crate::support::LabObject::default()),
            "lab",
        )
        .unwrap();
    pipe_to_lab(daemon, capacity).await
}

/// Another connection to the lab object `lab_over_pipe` registered in `daemon`.
async fn pipe_to_lab(
    daemon: &rmi::Daemon,
    capacity: usize,
) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
    let (mut s, server) = tokio::io::duplex(capacity);
    let served = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve_stream(server, "pipe").await }
    });
    connect_handshake(&mut s, "lab").await;
    (s, served)
}

/// The `error` fields of the events logged on this thread while it is installed: which limit
/// closed a connection.
#[derive(Clone, Default)]
struct LoggedErrors(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LoggedErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Visit(Option<String>);
        impl tracing::field::Visit for Visit {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "error" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut visit = Visit(None);
        event.record(&mut visit);
        self.0.lock().unwrap().extend(visit.0);
    }
}

impl LoggedErrors {
    /// Installs the recorder for this thread (the test's current-thread runtime runs the
    /// daemon here too).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::prelude::*;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn any(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e.contains(needle))
    }
}

#[tokio::test]
async fn a_client_reading_a_trickle_is_cut_off_by_min_write_rate() {
    // Over an in-memory pipe, so no kernel buffer hides the trickle: the client takes 16 KiB
    // every 50 ms (320 KiB/s). write_timeout (500 ms) never fires, since every write makes some
    // progress; min_write_rate (2 MiB/s) does: 8 MiB may take 0.5 + 4 s, the trickle ~25 s.
    let logged = LoggedErrors::default();
    let _log = logged.install();
    let daemon = rmi::Daemon::builder()
        .write_timeout(Some(Duration::from_millis(500)))
        .min_write_rate(Some(2 << 20))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (mut s, _) = lab_over_pipe(&daemon, 16 << 10).await;
    s.write_all(&invoke_frame("make_blob", &(8usize << 20,), 1).to_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got += n,
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "trickle reader: cut off after {:?} having read {} KiB of an 8 MiB reply",
        started.elapsed(),
        got / 1024
    );
    assert!(closed, "the daemon kept writing a trickle for 15 s");
    assert!(got < 8 << 20, "the whole reply was delivered at a trickle");
    // The log names the limit that cut the connection, and how far the write got (some of
    // the reply, not none of it: the client read {got} bytes).
    assert!(
        logged.any("slower than min_write_rate") && !logged.any("(write_timeout)"),
        "{:?}",
        logged.0.lock().unwrap()
    );
    assert!(
        !logged.any(": 0 of "),
        "the client read {got} bytes, yet the log says none were written: {:?}",
        logged.0.lock().unwrap()
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_large_request_sent_above_min_read_rate_is_served_past_frame_timeout() {
    // frame_timeout 300 ms, min_read_rate 256 KiB/s (the default): a message may take 0.3 s
    // after its first byte plus a second per 256 KiB received. A 2 MiB request sent at 64 KiB
    // every 25 ms (2.5 MiB/s, about 0.8 s: longer than frame_timeout; each piece earns ten
    // times the time it takes) is answered; the same request at 8 KiB every 100 ms (80 KiB/s)
    // is cut off long before its end, and the log names both settings. (Before, frame_timeout was flat: any message was cut off
    // 0.3 s after its first byte, whatever its size.)
    let logged = LoggedErrors::default();
    let _log = logged.install();
    let daemon = rmi::Daemon::builder()
        .frame_timeout(Some(Duration::from_millis(300)))
        .min_read_rate(Some(256 << 10))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let request = invoke_frame("blob_len", &(Blob(vec![7; 2 << 20]),), 1).to_bytes();

    let (mut fast, _) = lab_over_pipe(&daemon, 64 << 10).await;
    let started = Instant::now();
    for chunk in request.chunks(64 << 10) {
        fast.write_all(chunk)
            .await
            .expect("the daemon closed the connection of a request sent at 2.5 MiB/s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sent_in = started.elapsed();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        rmi::transport::FrameReader::new(&mut fast, 64 << 20).read_frame(),
    )
    .await
    .expect("answered within 10 s")
    .expect("a reply, not a closed connection")
    .expect("a reply, not the end of the stream");
    assert!(
        !reply.has_flag(rmi::protocol::frame::FLAGS_EXCEPTION),
        "the large request failed"
    );
    let len: usize = Serializer::Bincode
        .decode(&reply.payload, &Default::default())
        .unwrap();
    assert_eq!(len, 2 << 20);
    println!("2 MiB request at 2.5 MiB/s: sent in {sent_in:?} (frame_timeout 300 ms), answered");

    let (mut slow, _) = pipe_to_lab(&daemon, 64 << 10).await;
    let started = Instant::now();
    let mut sent = 0;
    for chunk in request.chunks(8 << 10) {
        if slow.write_all(chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    println!(
        "2 MiB request at 80 KiB/s: cut off after {:?}, {} KiB sent",
        started.elapsed(),
        sent >> 10
    );
    assert!(closed.is_ok(), "the daemon never closed the slow sender");
    assert!(
        sent < request.len(),
        "the slow sender sent its whole request"
    );
    assert!(
        logged.any("(frame_timeout plus") && logged.any("at min_read_rate 262144 bytes/s"),
        "{:?}",
        logged.0.lock().unwrap()
    );
    daemon.shutdown();
}

/// A client that starts an hour-long oneway call and closes its connection (a FIN, as a proxy
/// dropped or a script ending sends): the call runs on, but the connection's place is free at
/// once, so with `max_connections` 2 and a watcher holding one, a new client is served.
/// (Before, the oneway call kept the connection's writer, and so its place, its socket and its
/// task, until the call ended: an hour of "too many connections" with nobody connected.)
#[tokio::test]
async fn a_client_closing_with_a_oneway_call_running_frees_its_place() {
    let (daemon, lab) = crate::support::serve_lab(rmi::Daemon::builder().max_connections(2)).await;
    let watcher = LabProxy::connect(&lab).await.unwrap();
    let caller = LabProxy::connect(&lab).await.unwrap();
    caller
        .proxy()
        .call_oneway("sleep", &(3_600_000u64,))
        .await
        .unwrap();
    for _ in 0..500 {
        if watcher.sleeping().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(watcher.sleeping().await.unwrap(), 1, "the oneway call runs");
    caller.proxy().close();
    drop(caller);
    let mut served = None;
    for _ in 0..100 {
        match LabProxy::builder(&lab)
            .unwrap()
            .reconnect_attempts(0)
            .connect::<LabProxy>()
            .await
        {
            Ok(p) => {
                served = Some(p);
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("max_connections"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let newcomer = served.expect("a new client was refused for 2 s after the caller closed");
    newcomer.calls().await.unwrap();
    assert_eq!(
        watcher.sleeping().await.unwrap(),
        1,
        "the oneway call runs on"
    );
    daemon.shutdown();

    // With no room among `max_orphaned_calls` (1 here, for two calls), the closed connection
    // keeps its place until its oneway calls end, as before: they are not dropped.
    let (daemon, lab) =
        crate::support::serve_lab(rmi::Daemon::builder().max_orphaned_calls(1)).await;
    let watcher = LabProxy::connect(&lab).await.unwrap();
    let caller = LabProxy::connect(&lab).await.unwrap();
    for _ in 0..2 {
        caller
            .proxy()
            .call_oneway("sleep", &(3_600_000u64,))
            .await
            .unwrap();
    }
    for _ in 0..500 {
        if watcher.sleeping().await.unwrap() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    caller.proxy().close();
    drop(caller);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        watcher.sleeping().await.unwrap(),
        2,
        "oneway calls without room were dropped"
    );
    daemon.shutdown();
}

/// A stream whose reads fail once told to (a TLS peer's corrupt record, a custom transport's
/// error), writes passing through.
struct FailingReads {
    inner: tokio::io::DuplexStream,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for FailingReads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FailingReads {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection whose read fails (not an end of stream: a reset) while its reply is being
/// written to a peer that does not read: the write is given up, and the reply's in-flight
/// slot with it. The connection then has no call running, so nothing is left to wait for:
/// the daemon shuts down within its grace period, and `max_orphaned_calls` keeps its room.
/// (Before, the reply's slot was lost with the write: the connection looked as if a call
/// still ran, took a place among the orphaned calls for good, and `serve()` waited for that
/// call forever after `shutdown()`.)
#[tokio::test]
async fn a_reply_given_up_in_its_write_by_a_reset_leaves_no_call_behind() {
    // A long grace period: only a connection with nothing left running lets `serve()` return
    // at once (one whose writer were still parked would wait for the grace period's end).
    let daemon = rmi::Daemon::builder()
        .grace_period(Duration::from_secs(10))
        .max_orphaned_calls(1)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    daemon
        .register_with_id(
            crate::support::LabServer::new(crate::support::LabObject::default()),
            "lab",
        )
        .unwrap();
    let serving = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut s, server) = tokio::io::duplex(64 << 10);
    tokio::spawn({
        let d = daemon.clone();
        let stream = FailingReads {
            inner: server,
            fail: fail.clone(),
        };
        async move { d.serve_stream(stream, "pipe").await }
    });
    connect_handshake(&mut s, "lab").await;
    // An 8 MB reply into a 64 KiB pipe nobody reads: its write waits.
    s.write_all(&invoke_frame("make_blob", &(8usize << 20,), 1).to_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    // A byte wakes the daemon's read, which now fails.
    s.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Others are served meanwhile.
    let lab = LabProxy::connect(&Uri::tcp(
        "lab",
        "127.0.0.1",
        daemon.local_addr().unwrap().port(),
    ))
    .await
    .unwrap();
    lab.calls().await.unwrap();
    daemon.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(2), serving).await;
    assert!(
        served.is_ok(),
        "serve() had not returned 2 s after shutdown (grace period 10 s): a call was left behind"
    );
    drop(s);
}

#[tokio::test]
async fn a_reader_above_min_write_rate_gets_the_whole_reply_however_long_it_takes() {
    // min_write_rate 1 MiB/s, write_timeout 500 ms: an 8 MiB reply may take 8.5 s. The client
    // takes 64 KiB every 10 ms (6.4 MiB/s, so ~1.3 s, with room for a 6x slower machine): far
    // longer than write_timeout, well within the rate, and it must get every byte.
    let daemon = rmi::Daemon::builder()
        .write_timeout(Some(Duration::from_millis(500)))
        .min_write_rate(Some(1 << 20))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (mut s, _) = lab_over_pipe(&daemon, 64 << 10).await;
    s.write_all(&invoke_frame("make_blob", &(8usize << 20,), 1).to_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let mut head = [0u8; rmi::protocol::frame::HEADER_SIZE];
    s.read_exact(&mut head).await.unwrap();
    let header = rmi::protocol::frame::Header::parse(&head, usize::MAX).expect("a header");
    let mut left = header.total_len() - head.len();
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let want = left.min(buf.len());
        let n = s.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "closed with {left} bytes of the reply unread");
        left -= n;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("steady reader: 8 MiB in {:?}", started.elapsed());
    daemon.shutdown();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_by_write_timeout_and_the_log_says_so() {
    // write_timeout 300 ms, and a min_write_rate so low (1 byte/s) that its deadline is days
    // away: the stall limit closes the connection, and is the one named.
    let logged = LoggedErrors::default();
    let _log = logged.install();
    let daemon = rmi::Daemon::builder()
        .write_timeout(Some(Duration::from_millis(300)))
        .min_write_rate(Some(1))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (mut s, served) = lab_over_pipe(&daemon, 16 << 10).await;
    s.write_all(&invoke_frame("make_blob", &(1usize << 20,), 1).to_bytes())
        .await
        .unwrap();
    // Never read again: the connection ends within 10 s (the limit is 300 ms).
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the stalled connection was closed within 10 s")
        .unwrap();
    assert!(
        logged.any("(write_timeout)") && !logged.any("min_write_rate"),
        "{:?}",
        logged.0.lock().unwrap()
    );
    drop(s);
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_after_its_connection_was_reset_expires_after_the_linger() {
    // A linger of a second: the stream is there that long, which polling cannot miss.
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=1000");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    for round in 0..3 {
        let mut s = dial(&uri).await;
        connect_handshake(&mut s, "lab").await;
        // The stream opens 300 ms after the call arrives. The connection is reset at 50 ms,
        // and at 100 ms another call's reply makes the daemon's writer fail, so the connection
        // is over (and its streams told to linger) before the stream opens.
        s.write_all(&invoke_frame("slow_numbers", &(300u64, 5u32), 1).to_bytes())
            .await
            .unwrap();
        s.write_all(&invoke_frame("sleep", &(100u64,), 2).to_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        #[allow(deprecated)] // the point is to send a reset
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // RST
        let started = Instant::now();
        let mut seen: Option<Instant> = None;
        let gone = loop {
            let open = watcher.open_streams().await.unwrap();
            if open > 0 {
                seen.get_or_insert_with(Instant::now);
            }
            if seen.is_some() && open == 0 {
                break true;
            }
            // Its 1 s linger, with room for a busy machine (not ten times it).
            if seen.is_some_and(|at| at.elapsed() > Duration::from_millis(3_000))
                || started.elapsed() > Duration::from_secs(5)
            {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(seen.is_some(), "round {round}: the stream never opened");
        assert!(
            gone,
            "round {round}: a stream of a reset connection outlived its linger"
        );
    }
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_adopted_by_a_vanished_connection_expires_too() {
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=300");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    // A proxy opens a stream and reads one item; a raw connection then adopts it (reads it
    // with its id) and vanishes with a reset while its read is still in flight.
    let owner = LabProxy::connect(&uri).await.unwrap();
    let mut stream = owner.slow_numbers(0, 1_000).await.unwrap();
    use futures_util::StreamExt;
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);
    let id = stream.id().to_owned();
    std::mem::forget(stream); // no close_stream: only expiry may remove it
    owner.proxy().close();
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    let payload = encode_invoke(
        Serializer::Bincode,
        "Pyro.Daemon",
        "get_next_stream_item",
        &(id,),
    )
    .unwrap();
    let frame = Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 1, payload);
    s.write_all(&frame.to_bytes()).await.unwrap();
    read_message(&mut s).await.unwrap();
    #[allow(deprecated)] // the point is to send a reset
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let started = Instant::now();
    while watcher.open_streams().await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a stream adopted by a vanished connection never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_let_go_while_its_call_runs_on() {
    // The daemon reads on while the call runs, and sees the reset there.
    let frame = invoke_frame("sleep", &(3_600_000u64,), 1);
    a_reset_lets_go_of_a_connection_whose_call_runs_on("", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_let_go_while_it_waits_for_a_slot() {
    // One call at a time: the daemon reads no more while the call runs.
    let frame = invoke_frame("sleep", &(3_600_000u64,), 1);
    a_reset_lets_go_of_a_connection_whose_call_runs_on("max_in_flight=1", frame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_let_go_while_it_waits_for_its_byte_budget() {
    // A 1 MB budget, a call holding 1.2 MB: the daemon reads no more while it runs.
    let frame = invoke_frame("hold_blob", &(3_600_000u64, Blob(vec![0; 1_200_000])), 1);
    a_reset_lets_go_of_a_connection_whose_call_runs_on("max_queued=1000000", frame).await;
}

/// Calls left running by connections their clients reset run on within the daemon's room for
/// them (`max_orphaned_calls`, 6 here), counted until they end: a connection ending with more
/// than there is room for has its calls dropped. Before, each reset left its connection's
/// calls running, without bound: a client resetting and connecting again (each time freeing
/// its place) kept adding `max_in_flight` calls (found by a review, 2026-12-06).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_left_running_by_reset_connections_are_bounded() {
    let (mut child, uri) = spawn_child_daemon_with(0, "max_in_flight=4;max_orphans=6");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    // Four calls sent on a connection of their own, which is reset once they all run.
    let orphan_four = |ms: u64| {
        let (uri, watcher) = (uri.clone(), watcher.clone());
        async move {
            let before = watcher.sleeping().await.unwrap();
            let mut s = dial(&uri).await;
            connect_handshake(&mut s, "lab").await;
            let mut burst = Vec::new();
            for seq in 1..=4u16 {
                burst.extend_from_slice(&invoke_frame("sleep", &(ms,), seq).to_bytes());
            }
            s.write_all(&burst).await.unwrap();
            let started = Instant::now();
            while watcher.sleeping().await.unwrap() < before + 4 {
                assert!(started.elapsed() < Duration::from_secs(5), "never ran");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            #[allow(deprecated)] // the point is to send a reset
            s.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        }
    };
    let settles_at = |want: usize, what: &'static str| {
        let watcher = watcher.clone();
        async move {
            let started = Instant::now();
            while watcher.sleeping().await.unwrap() != want {
                assert!(started.elapsed() < Duration::from_secs(15), "{what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // And stays so a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(watcher.sleeping().await.unwrap(), want, "{what}");
        }
    };
    // Four calls of 6 s run on: there is room for six. (Six seconds: the three rounds below,
    // about one on a quiet machine, must all be over before they end.)
    orphan_four(6_000).await;
    settles_at(4, "the first four run on").await;
    // Four more, an hour each, have no room: dropped, in round after round.
    for _ in 0..3 {
        orphan_four(3_600_000).await;
        settles_at(4, "calls past the room are dropped").await;
    }
    // Once the first four end, their room is free again: four more run on.
    settles_at(0, "the first four ended").await;
    orphan_four(3_600_000).await;
    settles_at(4, "four run on in the room freed").await;
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_read_before_a_reset_still_run() {
    // One call at a time: while the first runs, the daemon waits for a slot with the three
    // oneway calls behind it already read (they came in the same segment), and the caller
    // resets the connection. The reset does not drop them: they run, in turn.
    let (mut child, uri) = spawn_child_daemon_with(0, "max_in_flight=1");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let before = watcher.calls().await.unwrap();
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    // All oneway, so that no reply's failed write ends the connection first.
    let mut sleep = invoke_frame("sleep", &(300u64,), 1);
    sleep.flags |= rmi::protocol::frame::FLAGS_ONEWAY;
    let mut burst = sleep.to_bytes().to_vec();
    for seq in 2..5u16 {
        let mut oneway = invoke_frame("echo", &(seq as u32, 0u32, String::new()), seq);
        oneway.flags |= rmi::protocol::frame::FLAGS_ONEWAY;
        burst.extend_from_slice(&oneway.to_bytes());
    }
    s.write_all(&burst).await.unwrap();
    reset_once_a_call_runs(&watcher, before, s).await;
    let started = Instant::now();
    while watcher.calls().await.unwrap() < before + 4 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "oneway calls read before the reset never ran: {} of 4 calls",
            watcher.calls().await.unwrap() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serving(&mut child, &uri).await;
}

/// Waits (up to 5 s) until the lab object has run a call since it had run `before`, then resets
/// `s` (an RST, not a FIN: linger zero).
async fn reset_once_a_call_runs(watcher: &LabProxy, before: usize, s: TcpStream) {
    let started = Instant::now();
    while watcher.calls().await.unwrap() == before {
        assert!(started.elapsed() < Duration::from_secs(5), "never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    #[allow(deprecated)] // the point is to send a reset
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// A connection whose call (`frame`, an hour long) runs on a daemon set up with `settings`
/// (and `max_connections = 2`): once its caller resets it, its place comes free though the
/// call runs on.
async fn a_reset_lets_go_of_a_connection_whose_call_runs_on(settings: &str, frame: Message) {
    // Two connections at most: the watcher's and one more.
    let settings = format!("max_connections=2;{settings}");
    let (mut child, uri) = spawn_child_daemon_with(0, &settings);
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let before = watcher.calls().await.unwrap();
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    // A call that runs for an hour; its caller resets the connection once it runs.
    s.write_all(&frame.to_bytes()).await.unwrap();
    reset_once_a_call_runs(&watcher, before, s).await;
    // Its connection's place comes free though the call runs on: another client is served.
    let started = Instant::now();
    loop {
        let served = tokio::time::timeout(Duration::from_secs(2), async {
            let lab = LabProxy::connect(&uri).await?;
            lab.echo(1, 2, "in".into()).await
        })
        .await;
        match served {
            Ok(Ok(echoed)) => {
                assert_eq!(echoed.2, "in");
                break;
            }
            other => assert!(
                started.elapsed() < Duration::from_secs(5),
                "a reset connection whose call runs on still takes its place: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(child.is_alive());
    assert_eq!(watcher.echo(3, 4, "ok".into()).await.unwrap().2, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connections_streams_linger_while_its_calls_run_on() {
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=300");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    // A stream opened, then a call that runs for an hour; then the caller is done sending.
    s.write_all(&invoke_frame("slow_numbers", &(0u64, 5u32), 1).to_bytes())
        .await
        .unwrap();
    read_message(&mut s).await.unwrap();
    s.write_all(&invoke_frame("sleep", &(3_600_000u64,), 2).to_bytes())
        .await
        .unwrap();
    assert_eq!(watcher.open_streams().await.unwrap(), 1);
    s.shutdown().await.unwrap();
    // No request can come on that connection any more: its stream lingers from now, not
    // from when the hour-long call ends.
    let started = Instant::now();
    while watcher.open_streams().await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stream of a closed connection waits for its running call to end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serving(&mut child, &uri).await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_by_a_vanished_connection_leaves_its_item_for_the_next_reader() {
    use futures_util::StreamExt;
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=10000");
    let owner = LabProxy::connect(&uri).await.unwrap();
    // Each item a second after it is asked for.
    let mut stream = owner.ticking(1_000, 3).await.unwrap();
    let id = stream.id().to_owned();
    // A raw connection asks for the next item with the stream's id, then resets while the
    // item is still most of a second away.
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    let payload = encode_invoke(
        Serializer::Bincode,
        "Pyro.Daemon",
        "get_next_stream_item",
        &(id,),
    )
    .unwrap();
    let frame = Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 1, payload);
    s.write_all(&frame.to_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    #[allow(deprecated)] // the point is to send a reset
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    // The owner reads on: the vanished reader's wait took nothing from it.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the item comes")
        .unwrap()
        .unwrap();
    assert_eq!(first, 0, "the vanished reader's wait took item 0");
    assert_eq!(stream.next().await.unwrap().unwrap(), 1);
    assert_serving(&mut child, &uri).await;
}

/// A daemon that takes one call at a time (`max_in_flight = 1`), a watcher and its call count
/// before, and a proxy (`lab`) whose `sleep(ms)` call runs (`sleeping`): while it does, the
/// daemon reads nothing more from `lab`'s connection.
struct Stalled {
    child: ChildGuard,
    uri: Uri,
    watcher: LabProxy,
    before: usize,
    lab: LabProxy,
    sleeping: tokio::task::JoinHandle<Result<u64, Error>>,
}

async fn stalled(ms: u64) -> Stalled {
    let (child, uri) = spawn_child_daemon_with(0, "max_in_flight=1");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let before = watcher.calls().await.unwrap();
    let lab = LabProxy::connect(&uri).await.unwrap();
    let started = Instant::now();
    let sleeping = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(ms).await }
    });
    while watcher.calls().await.unwrap() == before {
        assert!(started.elapsed() < Duration::from_secs(2), "never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Stalled {
        child,
        uri,
        watcher,
        before,
        lab,
        sleeping,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_proxy_lets_go_of_a_socket_its_daemon_stopped_reading() {
    let Stalled {
        mut child,
        uri,
        watcher,
        before,
        lab,
        sleeping,
    } = stalled(3_000).await;
    let seen = Instant::now();
    // 48 MiB, more than the sockets' buffers hold: the proxy's writer parks half way.
    let hurried = LabProxy::from(lab.proxy().with_timeout(Duration::from_millis(300)));
    let err = hurried.blob_len(Blob(vec![0; 48 << 20])).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    lab.proxy().close();
    assert!(
        sleeping.await.unwrap().is_err(),
        "its connection was closed"
    );
    // The sleep ends 3 s after it was seen to start, at the latest. A writer still parked on
    // the socket would then write the rest, and the daemon would run the call of a proxy that
    // had closed the connection.
    tokio::time::sleep((seen + Duration::from_secs(6)).saturating_duration_since(Instant::now()))
        .await;
    assert_eq!(
        watcher.calls().await.unwrap(),
        before + 1,
        "the closed connection's writer went on writing"
    );
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_oneway_calls_timeout_covers_its_write_and_an_unsent_one_is_taken_back() {
    let Stalled {
        mut child,
        uri,
        watcher,
        before,
        lab,
        sleeping,
    } = stalled(5_000).await;
    // 48 MiB, more than the sockets' buffers hold: half written when its deadline passes
    // (a second is long enough for the writer task to have taken it up).
    let blob = Blob(vec![0; 48 << 20]);
    let err = tokio::time::timeout(
        Duration::from_secs(3),
        lab.proxy()
            .with_timeout(Duration::from_secs(1))
            .call_oneway("blob_len", &(blob,)),
    )
    .await
    .expect("the deadline covers the write")
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!matches!(err, Error::NotSent(_)), "half written: {err}");
    // Queued behind it, never written: taken back, and said so.
    let err = tokio::time::timeout(
        Duration::from_secs(2),
        lab.proxy()
            .with_timeout(Duration::from_millis(300))
            .call_oneway("echo", &(1u32, 2u32, "never".to_owned())),
    )
    .await
    .expect("the deadline covers the write")
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(matches!(err, Error::NotSent(_)), "never written: {err}");
    // A call awaiting its reply, queued behind it too: taken back at its deadline as well, so
    // the daemon never runs a call its caller gave up on.
    let hurried = LabProxy::from(lab.proxy().with_timeout(Duration::from_millis(300)));
    let err = tokio::time::timeout(
        Duration::from_secs(2),
        hurried.echo(5, 6, "never either".into()),
    )
    .await
    .expect("the deadline passes")
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(matches!(err, Error::NotSent(_)), "never written: {err}");
    // And one without a timeout of its own, its future dropped (the caller's own timeout).
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        lab.echo(7, 8, "never at all".into()),
    )
    .await;
    assert!(dropped.is_err(), "no reply can come: {dropped:?}");
    // Once the sleep ends, the daemon reads the rest of the first, and never sees the others.
    assert_eq!(sleeping.await.unwrap().unwrap(), 5_000);
    let counted = async {
        while watcher.calls().await.unwrap() < before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the half-written oneway call arrives and runs");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        watcher.calls().await.unwrap(),
        before + 2,
        "a withdrawn call ran"
    );
    assert_eq!(lab.echo(3, 4, "on".into()).await.unwrap().2, "on");
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_of_waiting_calls_count_against_max_queued_bytes() {
    // Each call carries a 600 KB annotation.
    let lab = async |uri: &Uri| {
        let lab = LabProxy::connect(uri).await.unwrap();
        LabProxy::from(lab.proxy().with_annotation(*b"FATT", vec![7u8; 600_000]))
    };
    let call = |lab: LabProxy| async move { lab.sleep(1_500).await.map(|ms| ms as usize) };
    five_large_calls_that_wait_on_a_1_mb_budget(lab, call, 1_500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_of_waiting_calls_count_at_their_inflated_size() {
    // Each call carries 600 KB of zeros, compressed to under 1 KB.
    let lab = async |uri: &Uri| {
        let builder = LabProxy::builder(uri).unwrap();
        builder.compression(true).connect().await.unwrap()
    };
    let call = |lab: LabProxy| async move { lab.hold_blob(1_500, Blob(vec![0; 600_000])).await };
    five_large_calls_that_wait_on_a_1_mb_budget(lab, call, 600_000).await;
}

/// Five calls at once from the proxy `lab` makes, each a `call` that holds about 600 KB while
/// it waits 1.5 s, to a daemon whose byte budget is 1 MB: the daemon reads a second call (the
/// first leaves room), then no more until one ends, so at most two run at once; and all five
/// run in the end (each returning `expect`).
async fn five_large_calls_that_wait_on_a_1_mb_budget<Fut>(
    lab: impl AsyncFnOnce(&Uri) -> LabProxy,
    call: impl Fn(LabProxy) -> Fut,
    expect: usize,
) where
    Fut: std::future::Future<Output = Result<usize, Error>> + Send + 'static,
{
    let (mut child, uri) = spawn_child_daemon_with(0, "max_queued=1000000");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let before = watcher.calls().await.unwrap();
    let lab = lab(&uri).await;
    let calls: Vec<_> = (0..5).map(|_| tokio::spawn(call(lab.clone()))).collect();
    // Watched all along, not sampled once: how many run at once at most.
    let mut most = 0;
    let started = Instant::now();
    while !calls.iter().all(|c| c.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the calls never ended"
        );
        most = most.max(watcher.sleeping().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (1..=2).contains(&most),
        "{most} calls of 600 KB each running at once on a 1 MB budget"
    );
    for call in calls {
        let returned = call.await.unwrap().unwrap();
        assert_eq!(returned, expect, "every call runs in the end");
    }
    assert_eq!(watcher.calls().await.unwrap() - before, 5);
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_longer_than_max_batch_calls_is_refused_before_any_call_runs() {
    let (mut child, uri) = spawn_child_daemon_with(0, "max_batch=100");
    let lab = LabProxy::connect(&uri).await.unwrap();
    let before = lab.calls().await.unwrap();
    let mut batch = lab.batch();
    for i in 0..101 {
        batch.echo(i, 0, String::new());
    }
    let err = batch.send().await.unwrap_err();
    assert!(err.to_string().contains("max_batch_calls (100)"), "{err}");
    assert_eq!(lab.calls().await.unwrap(), before, "no call of it ran");
    let mut batch = lab.batch();
    let slots: Vec<_> = (0..100).map(|i| batch.echo(i, 0, String::new())).collect();
    let results = batch.send().await.unwrap();
    assert_eq!(results.get(&slots[99]).unwrap().0, 99);
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_lets_other_clients_through_and_stops_when_its_caller_goes() {
    // One runtime thread: a batch that never yielded would hold every other client.
    const CALLS: u32 = 300_000;
    let (mut child, uri) = spawn_child_daemon_with(0, "workers=1;max_batch=1000000");
    let lab = LabProxy::connect(&uri).await.unwrap();
    let batcher = LabProxy::connect(&uri).await.unwrap();
    let mut batch = batcher.batch();
    for i in 0..CALLS {
        batch.echo(i, 0, String::new());
    }
    let mut batch_done = tokio::spawn(batch.send());
    // Once the batch has started, another client's call must complete before it ends.
    while lab.calls().await.unwrap() < 1_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lab.echo(1, 1, "through".into()).await.unwrap();
    assert!(
        !batch_done.is_finished(),
        "the batch finished before the other call could be measured against it; raise CALLS"
    );
    // The caller vanishes: the batch stops.
    batch_done.abort();
    let _ = (&mut batch_done).await;
    batcher.proxy().close();
    drop(batcher);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = lab.calls().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = lab.calls().await.unwrap();
    println!("batch of {CALLS}: {a} calls ran before its caller left");
    assert!(
        b - a <= 1 && (a as u32) < CALLS,
        "the batch ran on after its caller left: {a} then {b} of {CALLS}"
    );
    assert_serving(&mut child, &uri).await;
}

#[tokio::test]
async fn a_request_too_large_with_its_annotations_fails_that_call_only() {
    let (daemon, lab_uri, _) = start_daemon().await;
    const MAX: usize = 64 << 10;
    let limits = rmi::DecodeLimits {
        max_message_size: MAX,
        ..Default::default()
    };
    let lab: LabProxy = rmi::Proxy::builder(lab_uri.clone())
        .limits(limits)
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    // A payload 8 bytes under the limit; the deadline annotation (8 + 8 bytes) pushes it over.
    let object = lab_uri.object().unwrap();
    let payload_len = |n: usize| blob_len_payload(object, n);
    let n = blob_for_payload(object, MAX - 8);
    assert!(payload_len(n) > MAX - 16, "the payload alone fits");
    let blob = Blob(vec![0; n]);
    let err = lab.blob_len(blob).await.unwrap_err();
    assert!(
        err.is_not_executed() && err.to_string().contains("max_message_size"),
        "{err}"
    );
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    daemon.shutdown();
}

#[tokio::test]
async fn a_result_too_large_with_its_annotations_fails_that_call_only() {
    // The daemon's limit counts its reply's annotations: a streamed result's id, or a MAC.
    let limits = rmi::DecodeLimits {
        max_message_size: 64 << 10,
        ..Default::default()
    };
    let (daemon, uri) = crate::support::serve_lab(
        rmi::Daemon::builder()
            .limits(limits)
            .shared_secret(rmi::SharedSecret::new("a secret of the test")),
    )
    .await;
    let lab: LabProxy = rmi::Proxy::builder(uri)
        .shared_secret(rmi::SharedSecret::new("a secret of the test"))
        .connect()
        .await
        .unwrap();
    // The bincode payload is the blob plus a few bytes; the 40-byte MAC pushes it over.
    let err = lab.make_blob((64 << 10) - 20).await.unwrap_err();
    assert!(err.to_string().contains("max_message_size"), "{err}");
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_timeouts_do_not_panic_on_either_side() {
    let (mut child, uri) = spawn_child_daemon_with(0, "");
    let lab: LabProxy = rmi::Proxy::builder(uri.clone())
        .timeout(Duration::MAX)
        .connect()
        .await
        .unwrap();
    assert_eq!(lab.echo(1, 1, "max".into()).await.unwrap().2, "max");
    let lab = lab.with_timeout(Duration::MAX);
    assert_eq!(lab.sleep(1).await.unwrap(), 1);
    // A deadline of u64::MAX milliseconds straight from the wire.
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    let mut frame = invoke_frame("echo", &(7u32, 7u32, "wire"), 1);
    frame.annotations.push((
        rmi::protocol::names::DEADLINE_ANNOTATION,
        bytes::Bytes::copy_from_slice(&u64::MAX.to_be_bytes()),
    ));
    s.write_all(&frame.to_bytes()).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), read_message(&mut s))
        .await
        .expect("answered")
        .unwrap();
    assert!(reply.ends_with(b"wire"), "the call ran and answered");
    assert_serving(&mut child, &uri).await;
}

#[tokio::test]
async fn a_proxy_whose_slots_are_all_held_by_abandoned_calls_redials() {
    let (daemon, lab_uri, _) = start_daemon().await;
    let lab: LabProxy = rmi::Proxy::builder(lab_uri)
        .max_in_flight(4)
        .abandoned_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let first = lab.connection().await.unwrap();
    // Four callers give up on calls that will not return for a minute.
    for _ in 0..4 {
        let _ = tokio::time::timeout(Duration::from_millis(50), lab.sleep(60_000)).await;
    }
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), lab.connection())
        .await
        .expect("the proxy wedged: no call got through in 10 s")
        .unwrap();
    println!(
        "wedged proxy recovered after {:?} (abandoned_timeout 300 ms)",
        started.elapsed()
    );
    assert_ne!(next, first, "the call went through a new connection");
    daemon.shutdown();
}

/// A caller waiting for a slot held by a call still awaited is woken when a slot frees (or when
/// a call given up on leaves every slot held by calls given up on), not every
/// `abandoned_timeout`: at zero, before, about every millisecond for as long as it waited
/// (helper-136); nor at each call given up on while another is still awaited (helper-141 #2).
#[tokio::test]
async fn a_caller_waiting_for_a_slot_is_not_woken_for_nothing_at_a_zero_abandoned_timeout() {
    struct Counting(std::task::Waker, std::sync::atomic::AtomicUsize);
    impl futures_util::task::ArcWake for Counting {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            this.0.wake_by_ref();
        }
    }
    let (daemon, lab_uri, _) = start_daemon().await;
    let lab: LabProxy = rmi::Proxy::builder(lab_uri)
        .max_in_flight(21)
        .abandoned_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    let first = lab.connection().await.unwrap();
    let holder = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(500).await }
    });
    // Twenty more, given up on one by one while the caller below waits (dropped, with no
    // deadline sent: the daemon runs them on), while `holder` is still awaited, so the
    // connection is not wedged.
    for i in 0..20u64 {
        let lab = lab.clone();
        tokio::spawn(async move {
            let given_up = Duration::from_millis(100 + 10 * i);
            let _ = tokio::time::timeout(given_up, lab.sleep(500)).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut waiting = std::pin::pin!(lab.connection());
    let mut counting = None;
    let next = std::future::poll_fn(|cx| {
        let counting = counting.get_or_insert_with(|| {
            std::sync::Arc::new(Counting(cx.waker().clone(), Default::default()))
        });
        let waker = futures_util::task::waker(counting.clone());
        std::future::Future::poll(
            waiting.as_mut(),
            &mut std::task::Context::from_waker(&waker),
        )
    })
    .await
    .unwrap();
    assert_eq!(holder.await.unwrap().unwrap(), 500);
    let wakes = counting
        .unwrap()
        .1
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        wakes < 10,
        "woken {wakes} times while it waited about 450 ms for a slot"
    );
    assert_eq!(next, first, "the same connection: nothing was given up on");
    daemon.shutdown();
}

/// The daemon stops answering on a connection that stays open (a frozen process, a Python
/// daemon stuck in one call, a relay gone silent), and every caller has a deadline shorter
/// than `abandoned_timeout`: each call times out, abandoned, and once they hold every slot the
/// next caller past `abandoned_timeout` from then redials. (Before, only a caller that waited
/// the whole `abandoned_timeout` itself looked, so with shorter deadlines the proxy failed
/// every call with a timeout for good.)
///
/// The connection is kept audible (pings answered every 50 ms), so that only the wedge, not
/// silence, can be what makes the proxy redial.
#[tokio::test]
async fn a_wedged_proxy_redials_even_when_every_caller_has_a_shorter_deadline() {
    let (daemon, relay, lab) = lab_behind_a_relay(Some(4)).await;
    let first = lab.connection().await.unwrap();
    // Every slot held by a call given up on (dropped, with no deadline sent: the daemon runs
    // them on for a minute).
    let patient = LabProxy::from_proxy(lab.proxy().with_options(rmi::CallOptions::default()));
    for _ in 0..4 {
        let given_up = tokio::time::timeout(Duration::from_millis(50), patient.sleep(60_000)).await;
        assert!(given_up.is_err(), "{given_up:?}");
    }
    let pinger = tokio::spawn({
        let lab = lab.clone();
        async move {
            loop {
                lab.proxy().ping().await.expect("pings are answered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let took = calls_until_a_new_connection(&lab, &relay, first).await;
    pinger.abort();
    println!(
        "wedged proxy recovered after {took:?} (abandoned_timeout 300 ms, call timeout 100 ms)"
    );
    daemon.shutdown();
}

/// The same with the default `max_in_flight` (1,024): calls made one at a time, each timing
/// out, would hold every slot only after 1,024 of them (100 s here, 17 minutes at a 1 s
/// timeout). The connection, silent since the first was given up on, is dropped by the first
/// call past `abandoned_timeout` (found by a review, 2026-12-06).
#[tokio::test]
async fn a_silent_proxy_redials_with_in_flight_slots_to_spare() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let first = lab.connection().await.unwrap();
    relay.blackhole();
    let took = calls_until_a_new_connection(&lab, &relay, first).await;
    println!("silent proxy (1,024 slots) recovered after {took:?} (abandoned_timeout 300 ms)");
    daemon.shutdown();
}

/// A large argument stuck half written on a silent connection: the calls queued behind it are
/// taken back unsent, so they never hold a slot, and before, the proxy failed every call with
/// `NotSent(Timeout)` until the kernel gave the socket up (about 15 minutes of
/// retransmissions on a real network; never, here). It now redials (found by a review,
/// 2026-12-06).
#[tokio::test]
async fn a_silent_proxy_with_a_write_stuck_on_it_redials() {
    let (daemon, relay, lab) = lab_behind_a_relay(Some(4)).await;
    let first = lab.connection().await.unwrap();
    relay.blackhole();
    let err = lab
        .proxy()
        .with_timeout(Duration::from_millis(300))
        .call::<_, usize>("blob_len", &(Blob(vec![7; 48 << 20]),))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let took = calls_until_a_new_connection(&lab, &relay, first).await;
    println!("proxy with a stuck write recovered after {took:?} (abandoned_timeout 300 ms)");
    daemon.shutdown();
}

/// The same with a oneway call stuck in its write: given up at its deadline, it counts as a
/// call given up on until its write ends, so the next call past `abandoned_timeout` with
/// nothing read redials. (Before, a oneway call left no trace: every later call was taken back
/// from behind the stuck write as `NotSent(Timeout)`, and the proxy stayed wedged; found by a
/// review, helper-107.)
#[tokio::test]
async fn a_silent_proxy_with_a_oneway_write_stuck_on_it_redials() {
    let (daemon, relay, lab) = lab_behind_a_relay(Some(4)).await;
    let first = lab.connection().await.unwrap();
    relay.blackhole();
    let err = lab
        .proxy()
        .with_timeout(Duration::from_millis(300))
        .call_oneway("blob_len", &(Blob(vec![7; 48 << 20]),))
        .await
        .unwrap_err();
    assert!(err.is_timeout() && !err.is_not_executed(), "{err:?}");
    let took = calls_until_a_new_connection(&lab, &relay, first).await;
    println!("proxy with a stuck oneway write recovered after {took:?} (abandoned_timeout 300 ms)");
    daemon.shutdown();
}

/// A oneway call still queued behind a large write when its connection closes never left:
/// it fails as `NotSent`, safe to send again. (Before, `ConnectionClosed`: perhaps run.)
#[tokio::test]
async fn a_oneway_call_queued_when_its_connection_closes_reports_it_was_not_sent() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let lab = LabProxy::from_proxy(lab.proxy().with_timeout(Duration::from_secs(30)));
    lab.connection().await.unwrap();
    relay.blackhole();
    let stuck = tokio::spawn({
        let lab = lab.clone();
        async move { lab.blob_len(Blob(vec![7; 48 << 20])).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn({
        let proxy = lab.proxy().clone();
        async move { proxy.call_oneway("echo", &(1u32, 2u32, "x")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    lab.proxy().close();
    let err = stuck.await.unwrap().unwrap_err();
    assert!(!matches!(err, Error::NotSent(_)), "{err:?}");
    let err = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the oneway call was answered")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::NotSent(_)) && err.is_connection(),
        "{err:?}"
    );
    daemon.shutdown();
}

/// A call given up on while its daemon runs it on does not cost the connection as long as the
/// daemon answers something (here the calls made meanwhile): only a connection on which
/// nothing at all is read is taken for dead.
#[tokio::test]
async fn a_proxy_keeps_a_connection_that_answers_while_a_call_given_up_on_runs() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let probe = unhurried(&lab);
    let first = probe.connection().await.unwrap();
    // Given up by dropping its future: with no deadline sent, the daemon runs it on (a call
    // that timed out would have sent its deadline, and the daemon would have ended it).
    let patient = LabProxy::from_proxy(lab.proxy().with_options(rmi::CallOptions::default()));
    let given_up = tokio::time::timeout(Duration::from_millis(100), patient.sleep(1_500)).await;
    assert!(given_up.is_err(), "{given_up:?}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_000) {
        assert_eq!(probe.connection().await.unwrap(), first);
        assert_eq!(
            probe.sleeping().await.unwrap(),
            1,
            "the call given up on runs on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay.accepted(), 1);
    daemon.shutdown();
}

/// A ping given up on (its timeout) on a connection that went silent counts as a call given
/// up on: past `abandoned_timeout` with nothing read, the next call redials. (Before, a ping
/// written and never answered stayed awaited for the connection's life, and it kept the
/// proxy from ever taking the connection for dead: every later call timed out.)
#[tokio::test]
async fn a_silent_proxy_whose_ping_was_given_up_on_redials() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let first = lab.connection().await.unwrap();
    relay.blackhole();
    let err = lab.proxy().ping().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let took = calls_until_a_new_connection(&lab, &relay, first).await;
    println!("silent proxy after a ping recovered after {took:?} (abandoned_timeout 300 ms)");
    daemon.shutdown();
}

/// The daemon's answers to pings show it alive as its replies do: a connection whose call was
/// given up on while the daemon runs it on is kept while pings are answered. (Before, answers
/// to pings did not count, and the first call past `abandoned_timeout` dropped the connection.)
#[tokio::test]
async fn a_proxy_keeps_a_connection_that_answers_pings_while_a_call_given_up_on_runs() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let probe = unhurried(&lab);
    let first = probe.connection().await.unwrap();
    // Given up by dropping its future: with no deadline sent, the daemon runs it on.
    let patient = LabProxy::from_proxy(lab.proxy().with_options(rmi::CallOptions::default()));
    let given_up = tokio::time::timeout(Duration::from_millis(100), patient.sleep(1_500)).await;
    assert!(given_up.is_err(), "{given_up:?}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_000) {
        probe.proxy().ping().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(probe.connection().await.unwrap(), first);
    assert_eq!(relay.accepted(), 1);
    daemon.shutdown();
}

/// A call given up on while its daemon runs it on, and then nothing asked for longer than
/// `abandoned_timeout` (its caller idle): the connection is silent, but the daemon is alive,
/// and the next call finds so by a ping and keeps the connection, with what lives on it (a
/// `session` instance). Before, that call dropped a healthy connection and the caller's
/// session silently became a new one (helper-146 #1).
#[tokio::test]
async fn a_proxy_idle_after_giving_up_on_a_call_keeps_a_daemon_that_answers_a_ping() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let probe = unhurried(&lab);
    let first = probe.connection().await.unwrap();
    let patient = LabProxy::from_proxy(lab.proxy().with_options(rmi::CallOptions::default()));
    let given_up = tokio::time::timeout(Duration::from_millis(50), patient.sleep(3_000)).await;
    assert!(given_up.is_err(), "{given_up:?}");
    // Idle for longer than abandoned_timeout (300 ms), twice over.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(probe.connection().await.unwrap(), first);
        assert_eq!(
            probe.sleeping().await.unwrap(),
            1,
            "the call given up on runs on"
        );
    }
    assert_eq!(relay.accepted(), 1);
    daemon.shutdown();
}

/// A call still queued behind a large write when its connection closes never reached the
/// daemon: it is sent again on a new connection (and would report `NotSent` if it could not
/// be), while the call whose write was under way reports that it may have run. (Before, both
/// failed with `ConnectionClosed`; found by a review, 2026-12-06.)
#[tokio::test]
async fn a_call_queued_when_its_connection_closes_is_sent_again_on_a_new_one() {
    let (daemon, relay, lab) = lab_behind_a_relay(None).await;
    let lab = LabProxy::from_proxy(lab.proxy().with_timeout(Duration::from_secs(30)));
    let first = lab.connection().await.unwrap();
    relay.blackhole();
    let stuck = tokio::spawn({
        let lab = lab.clone();
        async move { lab.blob_len(Blob(vec![7; 48 << 20])).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn({
        let lab = lab.clone();
        async move { lab.connection().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    lab.proxy().close();
    let err = stuck.await.unwrap().unwrap_err();
    assert!(
        err.is_connection() && !matches!(err, Error::NotSent(_)),
        "the call under way may have run: {err:?}"
    );
    let next = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued call was answered")
        .unwrap()
        .expect("the queued call went out again");
    assert_ne!(next, first);
    assert_eq!(relay.accepted(), 2);
    daemon.shutdown();
}

/// The same proxy (and connection) as `lab`, with a timeout of 10 s: for the calls that must
/// succeed, which a loaded machine could hold up past `lab`'s 100 ms.
fn unhurried(lab: &LabProxy) -> LabProxy {
    LabProxy::from_proxy(lab.proxy().with_timeout(Duration::from_secs(10)))
}

/// A lab daemon, a relay to it, and a proxy through the relay with 100 ms call timeouts and
/// a 300 ms `abandoned_timeout` (and `max_in_flight`, if given).
async fn lab_behind_a_relay(
    max_in_flight: Option<usize>,
) -> (rmi::Daemon, crate::support::Relay, LabProxy) {
    let (daemon, lab_uri, _) = start_daemon().await;
    let port = match lab_uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let relay = crate::support::Relay::start(port).await;
    let via_relay = Uri::tcp(lab_uri.object().unwrap(), "127.0.0.1", relay.port);
    let mut builder = rmi::Proxy::builder(via_relay)
        .timeout(Duration::from_millis(100))
        .abandoned_timeout(Duration::from_millis(300));
    if let Some(n) = max_in_flight {
        builder = builder.max_in_flight(n);
    }
    (daemon, relay, builder.connect().await.unwrap())
}

/// Calls (each failing with a timeout or on a closed connection) until one goes through a
/// new connection, the relay's second; within 20 s, or the proxy is wedged. How long it took.
async fn calls_until_a_new_connection(
    lab: &LabProxy,
    relay: &crate::support::Relay,
    first: u64,
) -> Duration {
    let started = Instant::now();
    let next = loop {
        match lab.connection().await {
            Ok(next) => break next,
            Err(e) => assert!(e.is_timeout() || e.is_connection(), "{e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy wedged: every call timed out for 20 s"
        );
    };
    assert_ne!(next, first, "the call went through a new connection");
    assert_eq!(relay.accepted(), 2);
    started.elapsed()
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_daemon_is_told_so_and_the_other_way_round() {
    use rmi::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ca.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.signing_key.serialize_der()));
    let server = rmi::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let tls_daemon = rmi::Daemon::builder()
        .tls(std::sync::Arc::new(server))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let uri = tls_daemon
        .register(crate::support::GreeterServer::new(
            crate::support::GreetingMaker,
        ))
        .unwrap();
    tokio::spawn({
        let d = tls_daemon.clone();
        async move { d.serve().await }
    });
    let err = rmi::Proxy::builder(uri.clone())
        .connect::<rmi::Proxy>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("looks like TLS"), "{err}");

    let (plain, lab, _) = start_daemon().await;
    let mut roots = rmi::rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rmi::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let port = lab.location().and_then(|l| match l {
        rmi::Location::Tcp { port, .. } => Some(*port),
        _ => None,
    });
    let by_name = Uri::tcp(lab.object().unwrap(), "localhost", port.unwrap());
    let err = rmi::Proxy::builder(by_name)
        .tls(std::sync::Arc::new(client))
        .connect::<rmi::Proxy>()
        .await
        .unwrap_err();
    assert!(
        rmi::error::Report(&err)
            .to_string()
            .contains("may not serve TLS"),
        "{}",
        rmi::error::Report(&err)
    );
    plain.shutdown();
    tls_daemon.shutdown();
}

#[tokio::test]
async fn the_largest_errors_are_not_answered_with_a_panic() {
    // Error values are plain data: a remote error of 1 MiB of text reaches the caller whole.
    let (daemon, lab_uri, _) = start_daemon().await;
    let lab = LabProxy::connect(&lab_uri).await.unwrap();
    let err = lab.explode("x".repeat(1 << 20)).await.unwrap_err();
    let Error::Panicked(remote) = &err else {
        panic!("{err}")
    };
    assert!(
        remote.message.contains(&"x".repeat(1 << 20)),
        "the message was cut: {} bytes",
        remote.message.len()
    );
    daemon.shutdown();
}

#[tokio::test]
async fn failing_oneway_calls_cannot_flood_the_log() {
    use tracing_subscriber::prelude::*;
    let loud = Loud::at(tracing::Level::WARN);
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(loud.clone()));
    let (daemon, lab_uri, _) = start_daemon().await;
    let proxy: rmi::Proxy = rmi::Proxy::builder(lab_uri).connect().await.unwrap();
    // Each call panics with 10 KB of text the client chose, and nobody waits for the outcome.
    const CALLS: usize = 1_000;
    let text = "x".repeat(10_000);
    for _ in 0..CALLS {
        proxy
            .call_oneway("explode", &(text.clone(),))
            .await
            .unwrap();
    }
    // Every call ran (a normal call after them on the same connection counts them).
    let lab = LabProxy::from_proxy(proxy);
    let started = Instant::now();
    while lab.calls().await.unwrap() < CALLS {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the oneway calls did not all run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (events, longest) = *loud.0.lock().unwrap();
    println!(
        "{CALLS} failing oneway calls: {events} warnings or errors logged, longest {longest} bytes"
    );
    assert!(events <= 30, "{events} log lines for {CALLS} failing calls");
    assert!(
        longest < 2_000,
        "a log line carried {longest} bytes of the client's text"
    );
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_never_closes_a_connection_while_a_call_runs() {
    // idle_timeout 300 ms; a 1 s call; a second request 500 ms in must still be read.
    let (mut child, uri) = spawn_child_daemon_with(0, "idle_ms=300");
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    s.write_all(&invoke_frame("sleep", &(1_000u64,), 1).to_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(&invoke_frame("echo", &(7u32, 7u32, "mid-call"), 2).to_bytes())
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let mut head = [0u8; rmi::protocol::frame::HEADER_SIZE];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
            .await
            .expect("a reply within 10 s")
            .expect("the connection was closed while a call ran");
        let header = rmi::protocol::frame::Header::parse(&head, usize::MAX).unwrap();
        let mut rest = vec![0u8; header.total_len() - head.len()];
        s.read_exact(&mut rest).await.unwrap();
        seqs.push(header.seq);
    }
    seqs.sort();
    assert_eq!(seqs, [1, 2], "both calls answered");
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_counts_only_from_when_the_connection_became_idle() {
    // idle 500 ms, a 750 ms call: the connection is idle from the reply on, so it may close
    // no sooner than ~500 ms after it (the mutant "idle at this wake" closed it at 250 ms).
    let (mut child, uri) = spawn_child_daemon_with(0, "idle_ms=500");
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    s.write_all(&invoke_frame("sleep", &(750u64,), 1).to_bytes())
        .await
        .unwrap();
    read_message(&mut s).await.expect("the call is answered");
    let replied = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the idle connection was closed within 10 s")
        .ok();
    let idle_for = replied.elapsed();
    println!("closed {idle_for:?} after the reply (idle_timeout 500 ms)");
    assert!(
        idle_for >= Duration::from_millis(450),
        "closed after only {idle_for:?} of idleness"
    );
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_live_connection_outlives_the_linger_period() {
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=200");
    let lab = LabProxy::connect(&uri).await.unwrap();
    let mut numbers = lab.slow_numbers(0, 3).await.unwrap();
    use futures_util::StreamExt;
    assert_eq!(numbers.next().await.unwrap().unwrap(), 0);
    // Five lingers later, on the same live connection, the stream is still there.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(numbers.next().await.unwrap().unwrap(), 1);
    assert_eq!(numbers.next().await.unwrap().unwrap(), 2);
    assert!(numbers.next().await.is_none());
    assert_serving(&mut child, &uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lingering_stream_expires_on_its_own_deadline() {
    // Two connections leave a stream each, 1.5 s apart, with a 3 s linger: when the first
    // expires, the second must still be there (for 1.5 s, which polling cannot miss).
    use futures_util::StreamExt;
    let (mut child, uri) = spawn_child_daemon_with(0, "linger_ms=3000");
    let watcher = LabProxy::connect(&uri).await.unwrap();
    let leave_a_stream = || async {
        let lab = LabProxy::connect(&uri).await.unwrap();
        let mut numbers = lab.slow_numbers(0, 10).await.unwrap();
        numbers.next().await.unwrap().unwrap();
        std::mem::forget(numbers); // no close_stream: only expiry may remove it
        lab.proxy().close();
    };
    leave_a_stream().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    leave_a_stream().await;
    let started = Instant::now();
    let mut open = watcher.open_streams().await.unwrap();
    while open == 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first stream never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = watcher.open_streams().await.unwrap();
    }
    assert_eq!(
        open, 1,
        "the second stream went with the first one's deadline"
    );
    assert_serving(&mut child, &uri).await;
}

#[tokio::test]
async fn with_a_secret_the_mac_counts_against_the_request_size_and_nothing_more() {
    // 64 KiB limit on both sides and a shared secret: the writer adds a 40-byte MAC.
    const MAX: usize = 64 << 10;
    let limits = rmi::DecodeLimits {
        max_message_size: MAX,
        ..Default::default()
    };
    let secret = rmi::SharedSecret::new("a secret of the test");
    let (daemon, uri) = crate::support::serve_lab(
        rmi::Daemon::builder()
            .limits(limits)
            .shared_secret(secret.clone()),
    )
    .await;
    let lab: LabProxy = rmi::Proxy::builder(uri.clone())
        .limits(limits)
        .shared_secret(secret)
        .connect()
        .await
        .unwrap();
    let object = uri.object().unwrap();
    let payload_len = |n: usize| blob_len_payload(object, n);
    // 100 bytes under the limit: fits with the MAC.
    let fits = blob_for_payload(object, MAX - 100);
    assert!(payload_len(fits) + 40 < MAX);
    assert_eq!(lab.blob_len(Blob(vec![0; fits])).await.unwrap(), fits);
    // Exactly the limit with the MAC (8 + 32 bytes): still sent, and answered.
    let exact = blob_for_payload(object, MAX - 40);
    assert_eq!(lab.blob_len(Blob(vec![0; exact])).await.unwrap(), exact);
    // 20 bytes under: the MAC pushes it over, so it is refused before it is sent.
    let over = blob_for_payload(object, MAX - 20);
    let err = lab.blob_len(Blob(vec![0; over])).await.unwrap_err();
    assert!(
        err.is_not_executed() && err.to_string().contains("max_message_size"),
        "{err}"
    );
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    daemon.shutdown();
}

/// The limit of the Pyro4 size tests, on both sides.
const PYRO4_MAX: usize = 48 << 10;

/// A daemon with the lab object, and a proxy speaking Pyro4 and msgpack to it, both held to
/// [`PYRO4_MAX`].
async fn pyro4_lab() -> (rmi::Daemon, Uri, LabProxy) {
    let limits = rmi::DecodeLimits {
        max_message_size: PYRO4_MAX,
        ..Default::default()
    };
    let (daemon, uri) = crate::support::serve_lab(rmi::Daemon::builder().limits(limits)).await;
    let lab = rmi::Proxy::builder(uri.clone())
        .protocol(rmi::protocol::frame::Protocol::Pyro4)
        .serializer(Serializer::MsgPack)
        .limits(limits)
        .connect()
        .await
        .unwrap();
    (daemon, uri, lab)
}

/// Under Pyro4 a request carries its correlation id as a 22-byte `CORR` annotation: a request
/// that fits only without it fails before it is sent, and the connection serves on.
#[tokio::test]
async fn under_pyro4_a_request_too_large_with_its_correlation_id_is_not_sent() {
    let (daemon, uri, lab) = pyro4_lab().await;
    let payload_len = |n: usize| {
        rmi::protocol::codec::encode_invoke_in(
            Serializer::MsgPack,
            rmi::protocol::frame::Protocol::Pyro4,
            uri.object().unwrap(),
            "blob_len",
            &(Blob(vec![0; n]),),
        )
        .unwrap()
        .len()
    };
    let overhead = payload_len(1024) - 1024;
    // Exactly the limit with the CORR annotation: sent and run.
    let exact = PYRO4_MAX - (6 + 16) - overhead;
    assert_eq!(payload_len(exact), PYRO4_MAX - 22);
    assert_eq!(lab.blob_len(Blob(vec![0; exact])).await.unwrap(), exact);
    let err = lab.blob_len(Blob(vec![0; exact + 1])).await.unwrap_err();
    assert!(
        err.is_not_executed() && err.to_string().contains("max_message_size"),
        "{err}"
    );
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    daemon.shutdown();
}

/// Under Pyro4 a reply carries its call's correlation id as a 22-byte `CORR` annotation: a result
/// that fits only without it is that call's error, not a frame the proxy must refuse.
#[tokio::test]
async fn under_pyro4_the_limit_counts_the_correlation_id_the_reply_carries() {
    let (daemon, _, lab) = pyro4_lab().await;
    // msgpack's bin header, the same size for 1 KiB and 48 KiB.
    let overhead = Serializer::MsgPack
        .encode(&Blob(vec![0; 1024]))
        .unwrap()
        .len()
        - 1024;
    let exact = PYRO4_MAX - (6 + 16) - overhead;
    assert_eq!(lab.make_blob(exact).await.unwrap().0.len(), exact);
    let err = lab.make_blob(exact + 1).await.unwrap_err();
    // (In a Pyro format rmi's own error classes travel as Python's RuntimeError; an rmi caller
    // gets the class back.)
    match &err {
        Error::Remote(remote) => assert!(
            remote.type_name == "rmi.MessageTooLarge" && remote.message.contains("22 bytes"),
            "{err}"
        ),
        other => panic!("the call's own remote error, not {other}"),
    }
    assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
    daemon.shutdown();
}

/// A result of exactly `max_message_size` (with the MAC a secret adds) goes back; one byte more
/// is an error for that call alone, and the connection serves on.
#[tokio::test]
async fn a_result_of_exactly_the_limit_is_sent_and_one_byte_more_is_that_calls_error() {
    const MAX: usize = 48 << 10;
    let limits = rmi::DecodeLimits {
        max_message_size: MAX,
        ..Default::default()
    };
    // The blob length whose encoded result is `payload` bytes.
    let blob_for = |payload: usize| {
        let overhead = Serializer::Bincode
            .encode(&Blob(vec![0; 1024]))
            .unwrap()
            .len()
            - 1024;
        payload - overhead
    };
    for secret in [None, Some(rmi::SharedSecret::new("a secret of the test"))] {
        // The MAC annotation: an 8-byte annotation header and a 32-byte tag.
        let mac = if secret.is_some() { 40 } else { 0 };
        let mut builder = rmi::Daemon::builder().limits(limits);
        if let Some(secret) = &secret {
            builder = builder.shared_secret(secret.clone());
        }
        let (daemon, uri) = crate::support::serve_lab(builder).await;
        // The proxy accepts far more than the daemon may send, so only the daemon's check counts.
        let mut proxy = rmi::Proxy::builder(uri);
        if let Some(secret) = secret.clone() {
            proxy = proxy.shared_secret(secret);
        }
        let lab: LabProxy = proxy.connect().await.unwrap();
        let exact = blob_for(MAX - mac);
        assert_eq!(
            lab.make_blob(exact).await.unwrap().0.len(),
            exact,
            "a result of exactly the limit (secret: {})",
            secret.is_some()
        );
        let err = lab.make_blob(exact + 1).await.unwrap_err();
        match &err {
            Error::Remote(remote) => assert_eq!(remote.type_name, "rmi.MessageTooLarge", "{err}"),
            other => panic!("the call's own remote error, not {other}"),
        }
        assert!(err.to_string().contains("max_message_size"), "{err}");
        assert_eq!(lab.echo(1, 2, "still".into()).await.unwrap().2, "still");
        daemon.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_call_to_a_daemon_that_is_gone_gives_up_after_its_retries() {
    let (child, uri) = spawn_child_daemon_with(0, "");
    let lab: LabProxy = rmi::Proxy::builder(uri)
        .reconnect_attempts(0)
        .connect()
        .await
        .unwrap();
    drop(child); // killed, and nothing comes back on its port
    let retrying = LabProxy::from_proxy(lab.proxy().with_retries(2));
    let err = tokio::time::timeout(Duration::from_secs(30), retrying.echo(1, 1, "x".into()))
        .await
        .expect("the retries never ended")
        .unwrap_err();
    assert!(err.is_communication(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_gets_its_own_frame_clock_even_after_a_long_idle() {
    // frame_timeout 1.5 s. After a call, the connection idles for 2 s (longer than the frame
    // timeout), then sends a message in two halves 50 ms apart: the message is well within
    // its 1.5 s (a stall of the machine between the halves would need over a second to
    // matter) and must be served. A clock started when the reader began waiting (not at the
    // message's first byte) would cut it off at once.
    let (mut child, uri) = spawn_child_daemon_with(0, "frame_ms=1500");
    let mut s = dial(&uri).await;
    connect_handshake(&mut s, "lab").await;
    for seq in 1..=3u16 {
        let bytes = invoke_frame("echo", &(u32::from(seq), 0u32, "x".repeat(100)), seq).to_bytes();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let (first, second) = bytes.split_at(bytes.len() / 2);
        s.write_all(first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(second).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), read_message(&mut s))
            .await
            .expect("answered within 10 s");
        assert!(
            reply.is_ok(),
            "message {seq}: the connection was closed: {reply:?}"
        );
    }
    assert_serving(&mut child, &uri).await;
}

/// An in-process daemon serving the lab object as "lab", with `max_queued_bytes` of `max`.
async fn daemon_with_queue_budget(max: usize) -> (rmi::Daemon, TcpStream) {
    let daemon = rmi::Daemon::builder()
        .max_queued_bytes(max)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    daemon
        .register_with_id(
            crate::support::LabServer::new(crate::support::LabObject::default()),
            "lab",
        )
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let mut s = TcpStream::connect(daemon.local_addr().unwrap())
        .await
        .unwrap();
    connect_handshake(&mut s, "lab").await;
    (daemon, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_read_as_they_come_never_count_against_max_queued_bytes() {
    // max_queued_bytes 16 KiB; 100 calls one after another, each answered with 32 KiB (over
    // the budget on its own) and read before the next: 3.2 MiB in all. Each reply stops the
    // daemon reading until it is written, and its writing must wake the daemon again: every
    // call is answered. (A written reply that still counted, or a wake-up only on the next
    // reply, would stop the connection at the first call.)
    let (daemon, mut s) = daemon_with_queue_budget(16 << 10).await;
    for seq in 1..=100u16 {
        s.write_all(&invoke_frame("make_blob", &(32usize << 10,), seq).to_bytes())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), read_message(&mut s))
            .await
            .unwrap_or_else(|_| panic!("call {seq} was not answered within 10 s"))
            .unwrap();
    }
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_held_back_by_max_queued_bytes_reads_again_once_the_replies_drain() {
    // max_queued_bytes 256 KiB; 400 requests for 64 KiB results (25 MB, more than the
    // sockets' buffers hold) sent at once and nothing read for a while: the daemon stops
    // reading requests once 256 KiB are queued. Then the client reads: the backlog drains,
    // the daemon reads the rest, and all 400 are answered.
    const CALLS: u16 = 400;
    let (daemon, mut s) = daemon_with_queue_budget(256 << 10).await;
    let mut batch = Vec::new();
    for seq in 1..=CALLS {
        batch.extend_from_slice(&invoke_frame("make_blob", &(64usize << 10,), seq).to_bytes());
    }
    s.write_all(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Held back: only what the budget and the sockets' buffers hold has run.
    let watcher = LabProxy::connect(&Uri::tcp(
        "lab",
        "127.0.0.1",
        daemon.local_addr().unwrap().port(),
    ))
    .await
    .unwrap();
    let ran = watcher.calls().await.unwrap();
    println!("{ran} of {CALLS} calls ran while their replies went unread");
    assert!(ran < usize::from(CALLS), "the daemon was never held back");
    for n in 1..=CALLS {
        tokio::time::timeout(Duration::from_secs(20), read_message(&mut s))
            .await
            .unwrap_or_else(|_| panic!("only {} of {CALLS} answered within 20 s", n - 1))
            .unwrap();
    }
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_held_by_slow_calls_whose_callers_wait_are_not_mistaken_for_abandoned_ones() {
    // max_in_flight 2, abandoned_timeout 200 ms: two calls of 1 s hold both slots, their
    // callers still waiting; a third call waits more than 200 ms for a slot. The connection
    // is not wedged (nobody gave up on those calls), so it stays, and all three succeed.
    let (daemon, lab_uri, _) = start_daemon().await;
    let lab: LabProxy = rmi::Proxy::builder(lab_uri)
        .max_in_flight(2)
        .abandoned_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let slow = |ms| {
        let lab = lab.clone();
        tokio::spawn(async move { lab.sleep(ms).await })
    };
    let (a, b) = (slow(1000), slow(1000));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = lab.echo(3, 3, "third".into()).await;
    assert_eq!(a.await.unwrap().unwrap(), 1000);
    assert_eq!(b.await.unwrap().unwrap(), 1000);
    assert_eq!(third.unwrap().2, "third");
    daemon.shutdown();
}

/// After a request over `max_message_size` is skipped, the next request's frame clock starts
/// with it: a client idle for longer than `frame_timeout` after the skip, then sending a
/// request in two writes, is answered. (Before, the clock ran from the skip, and the request
/// was cut off as too slow, closing the connection: helper-129 #2.)
#[tokio::test]
async fn the_frame_clock_starts_afresh_after_a_skipped_request() {
    use crate::support::{invoke_frame, serve_lab};
    let (daemon, uri) = serve_lab(
        rmi::Daemon::builder()
            .limits(rmi::DecodeLimits {
                max_message_size: 4096,
                ..Default::default()
            })
            .frame_timeout(Some(Duration::from_millis(300)))
            .min_read_rate(None),
    )
    .await;
    let object = uri.object().unwrap().to_string();
    let mut stream = dial(&uri).await;
    connect_handshake(&mut stream, &object).await;
    let large = invoke_frame(&object, "blob_len", &(Blob(vec![7; 10_000]),), 1, 0);
    stream.write_all(&large).await.unwrap();
    let refused = read_message(&mut stream).await.unwrap();
    assert!(
        String::from_utf8_lossy(&refused).contains("max_message_size"),
        "the large request's refusal"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let small = invoke_frame(&object, "calls", &(), 2, 0);
    stream.write_all(&small[..30]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(&small[30..]).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
        .await
        .expect("an answer");
    assert!(answer.is_ok(), "the connection closed: {answer:?}");
    daemon.shutdown();
}
