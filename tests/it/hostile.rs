//! Hostile bytes on raw sockets against a daemon running as a child process: after each, the
//! child is alive and a fresh proxy works.

use std::time::Duration;

use rmi::protocol::codec::ConnectRequest;
use rmi::protocol::frame::{Message, MessageType, FLAGS_EXCEPTION, HEADER_SIZE, MAGIC};
use rmi::{RemoteError, RemoteErrorKind, Serializer, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    dial, spawn_child_daemon, spawn_child_daemon_with, ChildGuard, LabProxy, Nested,
};

/// A valid header for `data_len` payload bytes, to be corrupted by each test.
fn header(msg_type: MessageType, data_len: u32) -> Vec<u8> {
    let mut h = Message::new(msg_type, Serializer::BINCODE_ID, 0, 1, Vec::new())
        .to_bytes()
        .to_vec();
    h[12..16].copy_from_slice(&data_len.to_be_bytes());
    h
}

/// Reads until the daemon closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    closed_within(stream, Duration::from_secs(30), "the connection").await
}

/// Reads until the daemon closes the connection, which must happen within `bound`; returns
/// what it sent.
async fn closed_within(stream: &mut TcpStream, bound: Duration, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{what}: the daemon did not close it within {bound:?}"))
        .ok();
    out
}

/// Child settings that keep the handshake and frame timeouts (60 s) out of the way, so only
/// the check under test can close a connection within [`PROMPTLY`].
const SLOW_TIMEOUTS: &str = "handshake_ms=60000;frame_ms=60000";
/// Within how long a connection refused from its header alone must be closed: far below the
/// 60 s timeouts of [`SLOW_TIMEOUTS`] (and below the 10 s and 30 s defaults).
const PROMPTLY: Duration = Duration::from_secs(5);

async fn assert_alive(child: &mut ChildGuard, uri: &Uri) {
    assert!(child.is_alive(), "the daemon process died");
    let proxy = LabProxy::connect(uri).await.expect("fresh proxy connects");
    assert_eq!(
        proxy.echo(7, 8, "alive".into()).await.unwrap(),
        (7, 8, "alive".to_string())
    );
}

/// A raw connection that has completed the CONNECT handshake for the lab object.
async fn connected(uri: &Uri) -> TcpStream {
    let mut stream = dial(uri).await;
    let ser = Serializer::Bincode;
    let hello = ConnectRequest {
        handshake: "hello".into(),
        object: uri.object().unwrap().into(),
    };
    let msg = Message::new(
        MessageType::Connect,
        ser.id(),
        0,
        0,
        ser.encode(&hello).unwrap(),
    );
    stream.write_all(&msg.to_bytes()).await.unwrap();
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[6], MessageType::ConnectOk as u8);
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    stream
}

/// Sends an INVOKE whose payload is `object`, `method` (bincode) and then raw `args` bytes;
/// returns the remote error of the reply.
async fn invoke_raw_args(
    stream: &mut TcpStream,
    object: &str,
    method: &str,
    args: &[u8],
) -> RemoteError {
    let mut payload = Serializer::Bincode.encode(&(object, method)).unwrap();
    payload.extend_from_slice(args);
    invoke_raw_payload(stream, payload).await
}

async fn invoke_raw_payload(stream: &mut TcpStream, payload: Vec<u8>) -> RemoteError {
    let msg = Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 5, payload);
    stream.write_all(&msg.to_bytes()).await.unwrap();
    let mut head = [0u8; HEADER_SIZE];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head))
        .await
        .expect("no reply")
        .unwrap();
    let flags = u16::from_be_bytes([head[8], head[9]]);
    assert!(flags & FLAGS_EXCEPTION != 0, "expected an exception reply");
    assert_eq!(
        u16::from_be_bytes([head[10], head[11]]),
        5,
        "reply carries the request's sequence number"
    );
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    Serializer::Bincode
        .decode(&body, &Default::default())
        .unwrap()
}

/// The remote error of the exception reply at the start of `answer` (bincode), with its
/// sequence number; `None` when it is no exception reply.
fn exception_reply(answer: &[u8]) -> Option<(u16, RemoteError)> {
    let head = answer.get(..HEADER_SIZE)?;
    let flags = u16::from_be_bytes([head[8], head[9]]);
    if flags & FLAGS_EXCEPTION == 0 {
        return None;
    }
    let seq = u16::from_be_bytes([head[10], head[11]]);
    let data = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let ann = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
    let body = answer.get(HEADER_SIZE + ann..HEADER_SIZE + ann + data)?;
    Some((
        seq,
        Serializer::Bincode.decode(body, &Default::default()).ok()?,
    ))
}

/// bincode varint for a u64 that needs all eight bytes.
fn varint_u64(n: u64) -> Vec<u8> {
    let mut v = vec![253];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

#[tokio::test]
async fn malformed_headers_close_only_their_connection() {
    // Every case is refused from its 40-byte header: with the timeouts at 60 s, nothing else
    // could close these connections within PROMPTLY (a size check made only once the body
    // arrived would wait for 4 GiB that never come).
    let (mut child, uri) = spawn_child_daemon_with(0, SLOW_TIMEOUTS);
    let bystander = LabProxy::connect(&uri).await.unwrap();

    let mut cases: Vec<(&str, Vec<u8>)> =
        vec![("http request", b"GET / HTTP/1.0\r\n\r\n".to_vec())];
    // (48 is Pyro4's version, but the rest is a Pyro5 header; 0 and 0xffff are no version.)
    for (name, version) in [
        ("Pyro4's version in a Pyro5 header", 48u16),
        ("version 0", 0),
        ("version 0xffff", 0xffff),
    ] {
        let mut bad_version = header(MessageType::Connect, 0);
        bad_version[4..6].copy_from_slice(&version.to_be_bytes());
        cases.push((name, bad_version));
    }
    let mut bad_magic = header(MessageType::Connect, 0);
    bad_magic[38..40].copy_from_slice(&(MAGIC ^ 0xffff).to_be_bytes());
    cases.push(("bad magic", bad_magic));
    cases.push(("4 GiB payload", header(MessageType::Connect, u32::MAX)));
    let mut huge_annotations = header(MessageType::Connect, 0);
    huge_annotations[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    cases.push(("4 GiB annotations", huge_annotations));
    let mut bad_type = header(MessageType::Connect, 0);
    bad_type[6] = 99;
    cases.push(("unknown message type", bad_type));
    let mut bad_serializer = header(MessageType::Connect, 0);
    bad_serializer[7] = 200;
    cases.push(("unknown serializer", bad_serializer));

    for (name, bytes) in cases {
        let mut stream = dial(&uri).await;
        stream.write_all(&bytes).await.unwrap();
        let answer = closed_within(&mut stream, PROMPTLY, name).await;
        assert!(
            answer.is_empty(),
            "{name}: expected a close without reply, got {} bytes",
            answer.len()
        );
        assert_alive(&mut child, &uri).await;
    }
    // The same after the handshake: the header check applies to every message. A call is
    // told why, in an error for its sequence number, before the close.
    let mut stream = connected(&uri).await;
    stream
        .write_all(&header(MessageType::Invoke, u32::MAX))
        .await
        .unwrap();
    let answer = closed_within(&mut stream, PROMPTLY, "4 GiB after the handshake").await;
    let (seq, err) = exception_reply(&answer).expect("an exception reply");
    assert_eq!(seq, 1);
    assert_eq!(err.type_name, "rmi.MessageTooLarge");
    assert!(err.message.contains("max_message_size"), "{err:?}");
    assert_alive(&mut child, &uri).await;
    assert_eq!(
        bystander.echo(1, 1, "bystander".into()).await.unwrap().2,
        "bystander"
    );
}

#[tokio::test]
async fn truncated_header_then_eof_and_invoke_before_connect() {
    // Timeouts far beyond the test's bound: only the EOF itself can close it that soon.
    let (mut child, uri) = spawn_child_daemon_with(0, SLOW_TIMEOUTS);
    let mut stream = dial(&uri).await;
    stream
        .write_all(&header(MessageType::Connect, 10)[..20])
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    assert!(
        closed_within(&mut stream, PROMPTLY, "a truncated header, then EOF")
            .await
            .is_empty()
    );
    assert_alive(&mut child, &uri).await;

    // An INVOKE before CONNECT gets a CONNECTFAIL, then the connection closes (as in Pyro).
    let mut stream = dial(&uri).await;
    let call =
        rmi::protocol::codec::encode_invoke(Serializer::Bincode, "lab", "calls", &[(); 0]).unwrap();
    stream
        .write_all(
            &Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 1, call).to_bytes(),
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(answer.get(6).copied(), Some(MessageType::ConnectFail as u8));
    assert_alive(&mut child, &uri).await;
}

#[tokio::test]
async fn hostile_payloads_get_error_replies_and_the_connection_stays_usable() {
    let (mut child, uri) = spawn_child_daemon();
    let object = uri.object().unwrap().to_string();
    let mut stream = connected(&uri).await;

    // A 10-byte payload whose first string claims 2^40 bytes.
    let mut payload = varint_u64(1 << 40);
    payload.push(b'x');
    assert_eq!(payload.len(), 10);
    let err = invoke_raw_payload(&mut stream, payload).await;
    assert_eq!(err.kind, RemoteErrorKind::Protocol, "{err}");

    // An argument string claiming 2^40 bytes: echo(task, call, text).
    let mut args = vec![1, 2];
    args.extend(varint_u64(1 << 40));
    let err = invoke_raw_args(&mut stream, &object, "echo", &args).await;
    assert_eq!(err.kind, RemoteErrorKind::BadArguments, "{err}");

    // A Vec<()> claiming 2^40 elements: no bytes per element, so only the length check stops it.
    let err = invoke_raw_args(&mut stream, &object, "count_units", &varint_u64(1 << 40)).await;
    assert_eq!(err.kind, RemoteErrorKind::BadArguments, "{err}");
    assert!(err.message.contains("declared length"), "{err}");

    // A value nested 15,000 deep: Node(Node(...(Leaf))).
    let mut deep = vec![1u8; 15_000];
    deep.push(0);
    let err = invoke_raw_args(&mut stream, &object, "depth", &deep).await;
    assert_eq!(err.kind, RemoteErrorKind::BadArguments, "{err}");
    assert!(err.message.contains("max_depth"), "{err}");

    // A blob claiming 2^40 bytes.
    let err = invoke_raw_args(&mut stream, &object, "blob_len", &varint_u64(1 << 40)).await;
    assert_eq!(err.kind, RemoteErrorKind::BadArguments, "{err}");

    // The same connection still works for a good call, and so does everything else.
    let good = rmi::protocol::codec::encode_invoke(
        Serializer::Bincode,
        &object,
        "depth",
        &(Nested::Node(Box::new(Nested::Leaf)),),
    )
    .unwrap();
    stream
        .write_all(
            &Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 9, good).to_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(u16::from_be_bytes([head[8], head[9]]) & FLAGS_EXCEPTION, 0);
    assert_alive(&mut child, &uri).await;
    let proxy = LabProxy::connect(&uri).await.unwrap();
    assert_eq!(
        proxy
            .depth(Nested::Node(Box::new(Nested::Node(Box::new(Nested::Leaf)))))
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_boundary_partial_messages_and_wrong_directions() {
    use std::time::Instant;
    let (mut child, uri) = spawn_child_daemon_with(0, "max_message=4096;frame_ms=300");
    let object = uri.object().unwrap().to_string();
    let counter = LabProxy::connect(&uri).await.unwrap();

    // Exactly max_message_size (annotations + payload) is accepted; one byte more is refused.
    for (extra, accepted) in [(0usize, true), (1, false)] {
        let mut s = connected(&uri).await;
        let base = rmi::protocol::codec::encode_invoke(
            Serializer::Bincode,
            &object,
            "echo",
            &(1u32, 1u32, String::new()),
        )
        .unwrap()
        .len();
        // Grow the text until the payload is exactly 4096 (+ extra) bytes (varint length: 2 bytes).
        let text = "x".repeat(4096 + extra - base - 2);
        let payload = rmi::protocol::codec::encode_invoke(
            Serializer::Bincode,
            &object,
            "echo",
            &(1u32, 1u32, text),
        )
        .unwrap();
        assert_eq!(payload.len(), 4096 + extra);
        s.write_all(
            &Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 3, payload).to_bytes(),
        )
        .await
        .unwrap();
        let answer = read_to_close_or(&mut s, Duration::from_secs(2)).await;
        assert!(!answer.is_empty(), "{} bytes", 4096 + extra);
        if accepted {
            // The call ran: a result, no exception.
            assert_eq!(
                answer[6],
                MessageType::Result as u8,
                "{} bytes",
                4096 + extra
            );
            assert!(exception_reply(&answer).is_none(), "{} bytes", 4096 + extra);
        }
        // One byte over: refused from the header, with an error saying so.
        let refused = exception_reply(&answer)
            .is_some_and(|(_, e)| e.message.contains("over its max_message_size (4096 bytes)"));
        assert_eq!(refused, !accepted, "{} bytes", 4096 + extra);
    }

    // A partial header, then silence: closed at frame_timeout, not never.
    let mut s = connected(&uri).await;
    s.write_all(&header(MessageType::Invoke, 10)[..20])
        .await
        .unwrap();
    let started = Instant::now();
    // Within 5 s: far above the 300 ms setting, far below the 30 s default.
    assert!(
        closed_within(&mut s, PROMPTLY, "partial header then silence")
            .await
            .is_empty()
    );
    println!(
        "partial header then silence: closed after {:?} (frame_timeout 300 ms)",
        started.elapsed()
    );

    // A body one byte short, then EOF: nothing is dispatched.
    let before = counter.calls().await.unwrap();
    let mut s = connected(&uri).await;
    let call = rmi::protocol::codec::encode_invoke(
        Serializer::Bincode,
        &object,
        "echo",
        &(1u32, 1u32, "short"),
    )
    .unwrap();
    let bytes = Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 4, call).to_bytes();
    s.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    assert_eq!(
        counter.calls().await.unwrap(),
        before,
        "a half message was dispatched"
    );

    // A RESULT sent to the daemon (the wrong direction): closed, nothing dispatched.
    let mut s = connected(&uri).await;
    s.write_all(
        &Message::new(MessageType::Result, Serializer::BINCODE_ID, 0, 5, &b"x"[..]).to_bytes(),
    )
    .await
    .unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    assert_eq!(counter.calls().await.unwrap(), before);
    assert_alive(&mut child, &uri).await;
}

/// Reads what arrives within `wait` (or until the connection closes).
async fn read_to_close_or(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_finish_its_handshake_is_closed_after_handshake_timeout() {
    use std::time::Instant;
    // 300 ms, far from the 10 s default; the frame timeout (60 s) cannot stand in for it.
    let (mut child, uri) = spawn_child_daemon_with(0, "handshake_ms=300;frame_ms=60000");
    // A connection that sends nothing; one that sends half a CONNECT header; one that sends a
    // whole CONNECT header and only part of its body.
    let connect = rmi::protocol::codec::ConnectRequest {
        handshake: "hello".into(),
        object: uri.object().unwrap().into(),
    };
    let full = Message::new(
        MessageType::Connect,
        Serializer::BINCODE_ID,
        0,
        0,
        Serializer::Bincode.encode(&connect).unwrap(),
    )
    .to_bytes();
    let cases: [(&str, &[u8]); 3] = [
        ("silent", &[]),
        ("half a header", &full[..HEADER_SIZE / 2]),
        ("header and part of the body", &full[..full.len() - 1]),
    ];
    for (name, bytes) in cases {
        // Timed from before the dial: the daemon's clock starts at its accept, after it (timed
        // from after, a stall of this task once connected would shorten what it measures).
        let started = Instant::now();
        let mut s = dial(&uri).await;
        s.write_all(bytes).await.unwrap();
        let answer = closed_within(&mut s, PROMPTLY, name).await;
        let took = started.elapsed();
        println!("{name}: closed after {took:?} (handshake_timeout 300 ms)");
        assert!(answer.is_empty(), "{name}: got {} bytes", answer.len());
        assert!(
            took >= Duration::from_millis(250),
            "{name}: closed after {took:?}, before the handshake timeout"
        );
    }
    assert_alive(&mut child, &uri).await;
}

/// Reads one whole message (header, annotations and payload) from a raw stream.
async fn read_one_message(stream: &mut TcpStream) -> Message {
    let mut head = [0u8; HEADER_SIZE];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head))
        .await
        .expect("no answer")
        .unwrap();
    let ann = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut rest = vec![0; ann + len];
    stream.read_exact(&mut rest).await.unwrap();
    let mut whole = bytes::BytesMut::from(&head[..]);
    whole.extend_from_slice(&rest);
    let parsed = rmi::protocol::frame::Header::parse(&whole, usize::MAX).expect("a header");
    Message::parse(&mut whole, &parsed).expect("a well-formed message")
}

#[tokio::test]
async fn a_client_that_has_proved_nothing_cannot_make_the_daemon_hold_a_large_connect() {
    use rmi::daemon::MAX_HANDSHAKE_SIZE;
    // The timeouts at 60 s: only the handshake's size bound can close these within PROMPTLY.
    let (mut child, uri) = spawn_child_daemon_with(0, SLOW_TIMEOUTS);
    let connect = |object: String, handshake: String| {
        let hello = ConnectRequest {
            handshake: handshake.into(),
            object,
        };
        let payload = Serializer::Bincode.encode(&hello).unwrap();
        Message::new(MessageType::Connect, Serializer::BINCODE_ID, 0, 0, payload)
    };
    let lab = uri.object().unwrap().to_string();

    // A header announcing one byte more than the bound, far below max_message_size (64 MiB):
    // refused from the header alone, the body never waited for.
    let mut s = dial(&uri).await;
    let announced = u32::try_from(MAX_HANDSHAKE_SIZE + 1).unwrap();
    s.write_all(&header(MessageType::Connect, announced))
        .await
        .unwrap();
    let answer = closed_within(&mut s, PROMPTLY, "an oversized CONNECT header").await;
    assert!(answer.is_empty(), "got {} bytes", answer.len());

    // A compressed CONNECT of 1 KiB that inflates to 1 MiB: closed, never held inflated.
    let mut bomb = connect(lab.clone(), "x".repeat(1 << 20));
    bomb.compress();
    assert!(bomb.has_flag(rmi::protocol::frame::FLAGS_COMPRESSED));
    assert!(
        bomb.to_bytes().len() < 16 * 1024,
        "the premise: it compresses well"
    );
    let mut s = dial(&uri).await;
    s.write_all(&bomb.to_bytes()).await.unwrap();
    let answer = closed_within(&mut s, PROMPTLY, "a CONNECT inflating to 1 MiB").await;
    assert!(answer.is_empty(), "got {} bytes", answer.len());

    // An unknown object id of 60,000 bytes: the CONNECTFAIL says so without echoing it whole.
    let mut s = dial(&uri).await;
    let long_id = "y".repeat(60_000);
    s.write_all(&connect(long_id, "hello".into()).to_bytes())
        .await
        .unwrap();
    let fail = read_one_message(&mut s).await;
    assert_eq!(fail.msg_type, MessageType::ConnectFail);
    let reason: String = Serializer::Bincode
        .decode(&fail.payload, &Default::default())
        .unwrap();
    assert!(reason.starts_with("unknown object \"yyy"), "{reason}");
    assert!(reason.contains("more bytes"), "{reason}");
    assert!(reason.len() < 1024, "{} bytes echoed", reason.len());

    // Within the bound, a large handshake still connects, and the calls after it are held to
    // max_message_size again, not to the handshake's bound.
    let mut s = dial(&uri).await;
    let data = "h".repeat(MAX_HANDSHAKE_SIZE - 1024);
    s.write_all(&connect(lab, data.clone()).to_bytes())
        .await
        .unwrap();
    let ok = read_one_message(&mut s).await;
    assert_eq!(ok.msg_type, MessageType::ConnectOk);
    let big = "z".repeat(4 * MAX_HANDSHAKE_SIZE);
    let call = rmi::protocol::codec::encode_invoke(
        Serializer::Bincode,
        uri.object().unwrap(),
        "echo",
        &(1u32, 2u32, big.clone()),
    )
    .unwrap();
    s.write_all(
        &Message::new(
            MessageType::Invoke,
            Serializer::BINCODE_ID,
            0,
            9,
            call.clone(),
        )
        .to_bytes(),
    )
    .await
    .unwrap();
    let reply = read_one_message(&mut s).await;
    assert_eq!(reply.msg_type, MessageType::Result);
    assert!(!reply.has_flag(FLAGS_EXCEPTION), "the large call failed");
    let (_, _, echoed): (u32, u32, String) = Serializer::Bincode
        .decode(&reply.payload, &Default::default())
        .unwrap();
    assert_eq!(echoed, big);

    // The same call pipelined: in the very write that carries the CONNECT, so its header is
    // already read in behind the handshake. The bound applies to the CONNECT only.
    let mut s = dial(&uri).await;
    let mut both = connect(uri.object().unwrap().to_string(), "hello".into())
        .to_bytes()
        .to_vec();
    both.extend_from_slice(
        &Message::new(MessageType::Invoke, Serializer::BINCODE_ID, 0, 10, call).to_bytes(),
    );
    assert!(both.len() > 4 * MAX_HANDSHAKE_SIZE);
    s.write_all(&both).await.unwrap();
    let ok = read_one_message(&mut s).await;
    assert_eq!(ok.msg_type, MessageType::ConnectOk);
    let reply = read_one_message(&mut s).await;
    assert_eq!(reply.msg_type, MessageType::Result);
    assert_eq!(reply.seq, 10);
    assert!(
        !reply.has_flag(FLAGS_EXCEPTION),
        "the pipelined large call failed"
    );
    let (_, _, echoed): (u32, u32, String) = Serializer::Bincode
        .decode(&reply.payload, &Default::default())
        .unwrap();
    assert_eq!(echoed, big);
    assert_alive(&mut child, &uri).await;
}
