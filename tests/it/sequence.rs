//! Sequence numbers over an in-memory duplex transport with paused time: they wrap past
//! 65,535 around a pending call, and a late reply never reaches another call.

use std::collections::HashSet;
use std::time::Duration;

use rmi::protocol::codec::{self, ConnectOk, DecodeLimits, Metadata};
use rmi::protocol::frame::{Message, MessageType};
use rmi::{Error, Proxy, Serializer, Uri};
use tokio::io::DuplexStream;

/// Argument value the fake daemon holds without answering.
const HOLD: u32 = 0;
/// Argument value that makes the fake daemon answer the held call first, then this one.
const RELEASE: u32 = u32::MAX;

/// A fake daemon's CONNECTOK (bincode), with `meta`.
fn connect_ok(meta: Metadata) -> Message {
    let ser = Serializer::Bincode;
    let ok = ConnectOk {
        handshake: "hello".into(),
        meta,
    };
    Message::new(
        MessageType::ConnectOk,
        ser.id(),
        0,
        0,
        ser.encode(&ok).unwrap(),
    )
}

/// A fake daemon's side of the handshake: the CONNECT (sequence number 0) read and answered
/// with an object that has one method, `m`.
async fn accept_connect(
    stream: DuplexStream,
) -> (
    rmi::transport::FrameReader<tokio::io::ReadHalf<DuplexStream>>,
    rmi::transport::FrameWriter<tokio::io::WriteHalf<DuplexStream>>,
) {
    let (mut reader, mut writer) = rmi::transport::split(stream, 1 << 20);
    let connect = reader.read_frame().await.unwrap().unwrap();
    assert_eq!(connect.msg_type, MessageType::Connect);
    assert_eq!(connect.seq, 0, "CONNECT uses sequence number 0");
    let meta = Metadata {
        methods: vec!["m".into()],
        ..Metadata::default()
    };
    writer.write_frame(&connect_ok(meta)).await.unwrap();
    (reader, writer)
}

/// A fake daemon's RESULT for the call `seq`: `value`, in bincode.
fn result(seq: u16, value: u32) -> Message {
    let ser = Serializer::Bincode;
    Message::new(
        MessageType::Result,
        ser.id(),
        0,
        seq,
        ser.encode(&value).unwrap(),
    )
}

/// A scripted daemon: answers each call with its argument, except [`HOLD`] (kept unanswered)
/// and [`RELEASE`] (answers the held call late, then itself). It checks that no sequence
/// number is reused while its call is unanswered, and that 0 is never used by a call.
async fn fake_daemon(stream: DuplexStream) -> usize {
    let (mut reader, mut writer) = accept_connect(stream).await;
    let ser = Serializer::Bincode;

    let mut held: Option<u16> = None;
    let mut seen = 0usize;
    // Numbers are taken in increasing order until they start over past 65,535.
    let (mut last, mut wrapped) = (0u16, false);
    let mut after_wrap = HashSet::new();
    while let Some(msg) = reader.read_frame().await.unwrap() {
        assert_eq!(msg.msg_type, MessageType::Invoke);
        assert_ne!(msg.seq, 0, "a call used sequence number 0");
        assert_ne!(
            Some(msg.seq),
            held,
            "sequence number {} reused while its call is pending",
            msg.seq
        );
        seen += 1;
        wrapped |= msg.seq < last;
        last = msg.seq;
        if wrapped {
            after_wrap.insert(msg.seq);
        }
        let call =
            codec::decode_invoke(ser, msg.payload.clone(), &DecodeLimits::default()).unwrap();
        let (arg,): (u32,) = call.args.decode().unwrap();
        match arg {
            HOLD => held = Some(msg.seq),
            RELEASE => {
                let late = held.take().expect("a held call");
                writer.write_frame(&result(late, HOLD)).await.unwrap();
                writer.write_frame(&result(msg.seq, RELEASE)).await.unwrap();
            }
            v => writer.write_frame(&result(msg.seq, v)).await.unwrap(),
        }
    }
    // Make sure the test really wrapped: past 65,535 the numbers start over (from 1, or the
    // first free one after it).
    assert!(
        seen < 65_536 || (wrapped && after_wrap.iter().any(|&seq| seq < 64)),
        "numbers never wrapped"
    );
    seen
}

async fn proxy_over_duplex(timeout: Option<Duration>) -> (Proxy, tokio::task::JoinHandle<usize>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let fake = tokio::spawn(fake_daemon(server));
    let mut builder = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    let proxy: Proxy = builder.connect_over(client).await.unwrap();
    (proxy, fake)
}

#[tokio::test(start_paused = true)]
async fn sequence_numbers_wrap_past_65535_while_a_call_stays_pending() {
    let (proxy, fake) = proxy_over_duplex(None).await;
    let held = tokio::spawn({
        let p = proxy.clone();
        async move { p.call::<_, u32>("m", &(HOLD,)).await }
    });
    tokio::task::yield_now().await;
    // 70,000 calls, one after another: the numbers wrap around, skipping 0 and the held one.
    for i in 1..=70_000u32 {
        assert_eq!(proxy.call::<_, u32>("m", &(i,)).await.unwrap(), i);
    }
    assert!(!held.is_finished(), "the held call must still be waiting");
    assert_eq!(
        proxy.call::<_, u32>("m", &(RELEASE,)).await.unwrap(),
        RELEASE
    );
    assert_eq!(
        held.await.unwrap().unwrap(),
        HOLD,
        "the late reply reached its own call"
    );
    drop(proxy);
    assert_eq!(fake.await.unwrap(), 70_002);
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_its_call_timed_out_never_reaches_another_call() {
    use tracing_subscriber::prelude::*;
    let warnings = Warnings::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let (proxy, fake) = proxy_over_duplex(Some(Duration::from_secs(5))).await;
    let err = proxy.call::<_, u32>("m", &(HOLD,)).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    // The next call gets a different number; the daemon answers the timed-out call first.
    assert_eq!(
        proxy.call::<_, u32>("m", &(RELEASE,)).await.unwrap(),
        RELEASE
    );
    // The connection is still good, and the released number is usable again.
    for i in 1..=10u32 {
        assert_eq!(proxy.call::<_, u32>("m", &(i,)).await.unwrap(), i);
    }
    drop(proxy);
    assert_eq!(fake.await.unwrap(), 12);
    // The late reply found its own call's place, kept for it: not a stray the proxy warns of.
    assert_eq!(warnings.0.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reply_claiming_4_gib_is_refused_by_the_client_without_allocating() {
    use tokio::io::AsyncWriteExt;
    let (client, server) = tokio::io::duplex(1 << 16);
    let (server_rd, mut server_wr) = tokio::io::split(server);
    tokio::spawn(async move {
        let mut reader = rmi::transport::FrameReader::new(server_rd, 1 << 20);
        let ser = Serializer::Bincode;
        let _connect = reader.read_frame().await.unwrap().unwrap();
        let ok = connect_ok(Metadata::default());
        server_wr.write_all(&ok.to_bytes()).await.unwrap();
        let call = reader.read_frame().await.unwrap().unwrap();
        // A reply header declaring a 4 GiB payload, and nothing after it.
        let mut head = Message::new(MessageType::Result, ser.id(), 0, call.seq, Vec::new())
            .to_bytes()
            .to_vec();
        head[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        server_wr.write_all(&head).await.unwrap();
        std::future::pending::<()>().await;
    });
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .connect_over(client)
        .await
        .unwrap();
    let err = proxy.call::<_, u32>("m", &(1u32,)).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectionClosed(m) if m.contains("max_message_size")),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_in_flight_slot_counts_against_the_deadline() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let fake = tokio::spawn(fake_daemon(server));
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .max_in_flight(1)
        .timeout(Duration::from_secs(5))
        .connect_over(client)
        .await
        .unwrap();
    // The daemon never answers this one, so its slot stays taken.
    assert!(matches!(
        proxy.call::<_, u32>("m", &(HOLD,)).await.unwrap_err(),
        Error::Timeout(_)
    ));
    // The next call cannot get a slot: it times out instead of waiting forever, never sent,
    // at its deadline (the test's clock is tokio's paused one: time moves only to timers).
    let started = tokio::time::Instant::now();
    let err = proxy.call::<_, u32>("m", &(7u32,)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "waited {:?} for a call whose deadline is 5 s",
        started.elapsed()
    );
    assert!(
        matches!(&err, Error::NotSent(inner) if matches!(**inner, Error::Timeout(_))),
        "{err:?}"
    );
    assert!(err.is_not_executed());
    drop(proxy);
    assert_eq!(
        fake.await.unwrap(),
        1,
        "only the first call reached the daemon"
    );
}

#[tokio::test]
async fn a_daemon_message_that_is_no_reply_closes_the_connection_instead_of_answering_a_call() {
    // After the handshake, the "daemon" sends an INVOKE carrying the pending call's sequence
    // number and a payload that would decode as the answer. A client takes only RESULT (and
    // PING) messages as replies: this one is a protocol error that closes the connection.
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let (mut reader, mut writer) = rmi::transport::split(server, 1 << 20);
        let ser = Serializer::Bincode;
        let _connect = reader.read_frame().await.unwrap().unwrap();
        let ok = connect_ok(Metadata::default());
        writer.write_frame(&ok).await.unwrap();
        let call = reader.read_frame().await.unwrap().unwrap();
        let impostor = Message::new(
            MessageType::Invoke,
            ser.id(),
            0,
            call.seq,
            ser.encode(&7u32).unwrap(),
        );
        writer.write_frame(&impostor).await.unwrap();
        std::future::pending::<()>().await;
    });
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .connect_over(client)
        .await
        .unwrap();
    let err = proxy.call::<_, u32>("m", &(1u32,)).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConnectionClosed(m) if m.contains("unexpected Invoke")),
        "{err}"
    );
}

#[tokio::test]
async fn a_dropped_proxy_lets_go_of_its_connection_entirely() {
    // After its last call nobody reads the connection (the call read its own reply): dropping
    // the proxy must still end the reader task and close the socket's read half, not only
    // the write half. The "daemon" sees the end of the stream, then finds it cannot write.
    let (client, server) = tokio::io::duplex(1 << 16);
    let fake = tokio::spawn(async move {
        let (mut reader, mut writer) = rmi::transport::split(server, 1 << 20);
        let ser = Serializer::Bincode;
        let _connect = reader.read_frame().await.unwrap().unwrap();
        writer
            .write_frame(&connect_ok(Metadata::default()))
            .await
            .unwrap();
        let call = reader.read_frame().await.unwrap().unwrap();
        let reply = Message::new(
            MessageType::Result,
            ser.id(),
            0,
            call.seq,
            ser.encode(&1u32).unwrap(),
        );
        writer.write_frame(&reply).await.unwrap();
        assert!(
            reader.read_frame().await.unwrap().is_none(),
            "no end of stream"
        );
        let stray = Message::new(MessageType::Ping, 0, 0, 0, b"ping".to_vec());
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_millis(100), writer.write_frame(&stray)).await
            {
                Ok(Err(_)) => return true,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        false
    });
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .connect_over(client)
        .await
        .unwrap();
    assert_eq!(proxy.call::<_, u32>("m", &(1u32,)).await.unwrap(), 1);
    drop(proxy);
    assert!(
        fake.await.unwrap(),
        "the proxy's end of the connection stayed open after the proxy was dropped"
    );
}

/// A fake daemon that answers no call until told: `answer` says how many of the oldest held
/// calls to answer (each with its argument); `received` counts the calls that came.
async fn holding_daemon(
    stream: DuplexStream,
    received: tokio::sync::watch::Sender<usize>,
    mut answer: tokio::sync::mpsc::UnboundedReceiver<usize>,
) {
    let (mut reader, mut writer) = accept_connect(stream).await;
    let ser = Serializer::Bincode;
    let mut held = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            msg = reader.read_frame() => {
                let Some(msg) = msg.unwrap() else { return };
                assert!(
                    held.iter().all(|&(seq, _)| seq != msg.seq),
                    "sequence number {} reused while its call is pending",
                    msg.seq
                );
                let call = codec::decode_invoke(ser, msg.payload.clone(), &DecodeLimits::default())
                    .unwrap();
                let (arg,): (u32,) = call.args.decode().unwrap();
                held.push_back((msg.seq, arg));
                received.send_modify(|n| *n += 1);
            }
            Some(n) = answer.recv() => {
                for (seq, arg) in held.drain(..n.min(held.len())) {
                    writer.write_frame(&result(seq, arg)).await.unwrap();
                }
            }
        }
    }
}

/// With the in-flight limit at its largest, every sequence number can be in use: 65,535 calls
/// in flight, one of them answered but its caller not yet back for the reply, and the next
/// call given the slot that reply freed. That call waits for a number instead of searching
/// for one for good with the connection locked (which hung the proxy).
#[test]
fn with_every_sequence_number_in_use_the_next_call_waits_for_one() {
    const ALL: u32 = 65_535;
    let (done, finished) = std::sync::mpsc::channel();
    // On a thread of its own: a search that never ends holds its runtime, so the test fails
    // on its own timeout below instead of hanging.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (received_tx, mut received) = tokio::sync::watch::channel(0);
            let (answer, answers) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(holding_daemon(server, received_tx, answers));
            let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
                .max_in_flight(ALL as usize)
                .connect_over(client)
                .await
                .unwrap();
            let call = |arg: u32| {
                let p = proxy.clone();
                tokio::spawn(async move { p.call::<_, u32>("m", &(arg,)).await })
            };
            let mut calls: Vec<_> = (1..=ALL).map(call).collect();
            received.wait_for(|&n| n == ALL as usize).await.unwrap();
            // One more: it waits for a slot.
            calls.push(call(ALL + 1));
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // The oldest call's reply frees its slot for the last call before its caller
            // takes the reply (and its number).
            answer.send(1).unwrap();
            received.wait_for(|&n| n == ALL as usize + 1).await.unwrap();
            answer.send(usize::MAX).unwrap();
            for (i, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap().unwrap(), i as u32 + 1);
            }
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(180))
        .expect("the call after 65,535 in flight never went out");
}

/// Counts the warnings logged on this thread while installed.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_daemon_sending_stray_replies_cannot_flood_the_clients_log() {
    use tracing_subscriber::prelude::*;
    let warnings = Warnings::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let (client, server) = tokio::io::duplex(1 << 16);
    // Answers each call after 1,000 replies for numbers no call has.
    let fake = tokio::spawn(async move {
        let (mut reader, mut writer) = accept_connect(server).await;
        while let Some(msg) = reader.read_frame().await.unwrap() {
            for stray in 30_000..31_000u16 {
                writer.queue(&result(stray, 0));
            }
            writer.flush().await.unwrap();
            writer.write_frame(&result(msg.seq, 7)).await.unwrap();
        }
    });
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .connect_over(client)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(proxy.call::<_, u32>("m", &(1u32,)).await.unwrap(), 7);
    }
    assert_eq!(
        warnings.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one warning for 3,000 stray replies"
    );
    drop(proxy);
    fake.await.unwrap();
}

#[tokio::test]
async fn pings_given_up_on_a_stuck_connection_are_taken_back() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
    // Reads nothing for a while after the handshake; then counts what came and answers it.
    let fake = tokio::spawn(async move {
        let (mut reader, mut writer) = accept_connect(server).await;
        let _ = resumed.await;
        let mut pings = 0;
        while let Some(msg) = reader.read_frame().await.unwrap() {
            if msg.msg_type == MessageType::Ping {
                pings += 1;
                let pong = Message::new(MessageType::Ping, msg.serializer, 0, 0, msg.payload);
                writer.write_frame(&pong).await.unwrap();
            } else {
                writer.write_frame(&result(msg.seq, 7)).await.unwrap();
            }
        }
        pings
    });
    let proxy: Proxy = Proxy::builder(Uri::tcp("obj", "127.0.0.1", 1))
        .connect_over(client)
        .await
        .unwrap();
    // A 512 KiB argument fills the pipe: the writer parks on it, and the pings queue behind.
    let big = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.call::<_, u32>("m", &("x".repeat(512 << 10),)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hurried = proxy.with_timeout(Duration::from_millis(20));
    for _ in 0..50 {
        let err = hurried.ping().await.unwrap_err();
        assert!(matches!(err, Error::NotSent(_)), "never sent: {err}");
        assert!(err.is_timeout(), "{err}");
    }
    resume.send(()).unwrap();
    assert_eq!(big.await.unwrap().unwrap(), 7);
    // The next ping is answered: no answer is awaited for the ones taken back.
    proxy.ping().await.unwrap();
    drop((proxy, hurried));
    assert_eq!(fake.await.unwrap(), 1, "only the last ping was sent");
}
