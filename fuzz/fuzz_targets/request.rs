//! A real daemon on 127.0.0.1, fed one fuzzed request per input after an honest CONNECT: the
//! annotation values the daemon interprets (`DDLN` deadlines, `STRM` stream ids, `CORR`, a
//! stray `HMAC`, `PAKE` or `PROF`), flags (oneway, batch, compressed, item stream), the
//! sequence number, the serializer byte and the payload (a well-formed INVOKE around fuzzed
//! arguments, or raw bytes).
//!
//! The daemon's promise is checked on every input:
//! - the caller gets a reply with its sequence number, or the connection is closed: never a
//!   hang (the whole exchange is bounded at 10 s);
//! - every reply is in a serializer the caller knows, and an exception reply decodes as a
//!   `RemoteError` (the caller can always read why it failed);
//! - a oneway request gets no reply: the PING sent after it is the next thing answered;
//! - afterwards, a fresh connection's call still works: nothing one caller sends stops the
//!   daemon from serving everyone else.
//!
//! The input's layout: byte 0 picks the serializer and the object/method, byte 1 the flags,
//! bytes 2–3 the sequence number; then annotations, each one selector byte (0xFF ends the
//! list), one length byte and the value; the rest is the arguments (or the raw payload).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rmi_core::dispatch::{BoxFuture, Dispatch, Outcome, RemoteStream};
use rmi_core::protocol::codec::{
    decode_error, encode_invoke, Args, ConnectRequest, DecodeLimits, Metadata,
};
use rmi_core::protocol::frame::{
    self, Message, MessageType, FLAGS_BATCH, FLAGS_COMPRESSED, FLAGS_EXCEPTION,
    FLAGS_ITEMSTREAMRESULT, FLAGS_ONEWAY,
};
use rmi_core::protocol::names::{
    DEADLINE_ANNOTATION, MAC_ANNOTATION, PAKE_ANNOTATION, PROOF_ANNOTATION, STREAM_ANNOTATION,
};
use rmi_core::{Daemon, RemoteError, RemoteErrorKind, Serializer};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything one input may take, hangs included, before the target fails.
const BOUND: Duration = Duration::from_secs(10);

fuzz_target!(|data: &[u8]| request(data));

/// What the target's panicking method panics with.
const PANIC_MESSAGE: &str = "the fuzz target's panicking method";

/// The object the fuzzed requests call: every kind of method the daemon runs differently.
struct Target;

impl Dispatch for Target {
    fn metadata(&self) -> Metadata {
        Metadata {
            methods: ["echo", "sleep", "panic", "numbers", "notify"]
                .map(String::from)
                .to_vec(),
            oneway: vec!["notify".into()],
            attrs: Vec::new(),
        }
    }

    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
        Box::pin(async move {
            let ser = args.serializer();
            match method {
                "echo" | "notify" => {
                    let (b,): (ByteBuf,) = args
                        .decode()
                        .map_err(|e| RemoteError::bad_arguments(method, e))?;
                    encode(ser, &b).map(|v| Outcome::Value(v.into()))
                }
                "sleep" => {
                    let (ms,): (u64,) = args
                        .decode()
                        .map_err(|e| RemoteError::bad_arguments(method, e))?;
                    tokio::time::sleep(Duration::from_millis(ms.min(20))).await;
                    encode(ser, &ms).map(|v| Outcome::Value(v.into()))
                }
                "panic" => std::panic::panic_any(PANIC_MESSAGE),
                "numbers" => {
                    let (n,): (u32,) = args
                        .decode()
                        .map_err(|e| RemoteError::bad_arguments(method, e))?;
                    Ok(Outcome::Stream(
                        RemoteStream::iter(0..n.min(4)).encode_with(ser),
                    ))
                }
                _ => Err(RemoteError::unknown_method("fuzz", method)),
            }
        })
    }
}

/// `value` in `ser`, or the error the caller gets when it does not encode.
fn encode<T: serde::Serialize>(ser: Serializer, value: &T) -> Result<Vec<u8>, RemoteError> {
    ser.encode(value)
        .map_err(|e| RemoteError::new(RemoteErrorKind::Other, "rmi.SerializeError", e.to_string()))
}

/// The daemon every input talks to, on its own runtime, started once.
fn daemon() -> &'static (tokio::runtime::Runtime, SocketAddr) {
    static DAEMON: OnceLock<(tokio::runtime::Runtime, SocketAddr)> = OnceLock::new();
    DAEMON.get_or_init(|| {
        // libFuzzer's panic hook aborts on every panic, even those the daemon catches; the
        // target's own panicking method is the daemon's to handle, so its panics pass.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PANIC_MESSAGE) {
                abort(info);
            }
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let addr = rt.block_on(async {
            let daemon = Daemon::builder()
                .bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            daemon.register_with_id(Target, "fuzz").expect("register");
            let addr = daemon.local_addr().expect("a TCP daemon");
            tokio::spawn(async move { daemon.serve().await });
            addr
        });
        (rt, addr)
    })
}

fn request(data: &[u8]) {
    let (rt, addr) = daemon();
    rt.block_on(async {
        tokio::time::timeout(BOUND, exchange(*addr, data))
            .await
            .expect("the daemon neither answered nor closed the connection within 10 s");
        tokio::time::timeout(BOUND, healthy(*addr))
            .await
            .expect("a fresh connection's call hung after the fuzzed request");
    });
}

const SERIALIZERS: [Serializer; 3] = [
    Serializer::Bincode,
    Serializer::MsgPack,
    Serializer::Serpent,
];
const TARGETS: [(&str, &str); 8] = [
    ("fuzz", "echo"),
    ("fuzz", "sleep"),
    ("fuzz", "panic"),
    ("fuzz", "numbers"),
    ("fuzz", "notify"),
    ("fuzz", "nosuch"),
    ("nosuch", "echo"),
    ("Pyro.Daemon", "get_next_stream_item"),
];

/// The fuzzed request and what comes back for it.
async fn exchange(addr: SocketAddr, data: &[u8]) {
    let [pick, flags, seq0, seq1, rest @ ..] = data else {
        return;
    };
    let ser = SERIALIZERS[(pick & 3) as usize % 3];
    let (object, method) = TARGETS[(pick >> 2) as usize % TARGETS.len()];
    let raw_payload = pick & 0x80 != 0;
    let flags = u16::from(*flags)
        & (FLAGS_ONEWAY | FLAGS_BATCH | FLAGS_COMPRESSED | FLAGS_ITEMSTREAMRESULT | 0x80);
    let seq = u16::from_be_bytes([*seq0, *seq1]);
    let (annotations, args) = annotations(rest);

    let mut conn = connect(addr, ser).await;
    let payload = if raw_payload {
        args.to_vec()
    } else {
        // Arguments every method decodes a little differently: bytes, a number, or garbage.
        match args.first().copied().unwrap_or(0) % 3 {
            0 => encode_invoke(
                ser,
                object,
                method,
                &(ByteBuf::from(args.get(1..).unwrap_or_default()),),
            ),
            1 => encode_invoke(ser, object, method, &(u64::from_le_bytes(pad(args)),)),
            _ => encode_invoke(
                ser,
                object,
                method,
                &(u64::from_le_bytes(pad(args)) as u32,),
            ),
        }
        .expect("arguments encode")
    };
    let mut msg = Message::new(MessageType::Invoke, ser.id(), flags, seq, payload);
    msg.annotations = annotations;
    conn.send(&msg).await;
    if msg.has_flag(FLAGS_ONEWAY) {
        // Nothing comes back for a oneway call: the next reply is the PING's.
        let ping = Message::new(
            MessageType::Ping,
            ser.id(),
            0,
            seq.wrapping_add(1),
            &b"ping"[..],
        );
        conn.send(&ping).await;
        if let Some(reply) = conn.next().await {
            assert_eq!(
                (reply.msg_type, reply.seq),
                (MessageType::Ping, seq.wrapping_add(1)),
                "a oneway request was answered (or the PING answered out of turn)"
            );
        }
        return;
    }
    while let Some(reply) = conn.next().await {
        check_reply(&reply);
        // Stream items and other replies may come first; the call's own reply ends it.
        if reply.seq == seq && reply.msg_type == MessageType::Result {
            return;
        }
    }
}

/// Every reply is in a serializer the caller knows, and an exception reply says why.
fn check_reply(reply: &Message) {
    let ser = Serializer::from_id(reply.serializer)
        .unwrap_or_else(|| panic!("a reply in unknown serializer {}", reply.serializer));
    if reply.has_flag(FLAGS_EXCEPTION) {
        let mut reply = reply.clone();
        reply
            .decompress(frame_limit())
            .expect("the daemon's own compressed reply decompresses");
        decode_error(ser, &reply.payload, &DecodeLimits::default())
            .expect("an exception reply decodes as a RemoteError");
    }
}

/// A new connection's `echo` call answers as it should.
async fn healthy(addr: SocketAddr) {
    let mut conn = connect(addr, Serializer::Bincode).await;
    let payload = encode_invoke(
        Serializer::Bincode,
        "fuzz",
        "echo",
        &(ByteBuf::from(&b"ok"[..]),),
    )
    .expect("arguments encode");
    conn.send(&Message::new(MessageType::Invoke, 98, 0, 7, payload))
        .await;
    let reply = conn
        .next()
        .await
        .expect("the daemon answers a healthy call");
    assert!(!reply.has_flag(FLAGS_EXCEPTION), "a healthy call failed");
    let value: ByteBuf = Serializer::Bincode
        .decode(&reply.payload, &DecodeLimits::default())
        .expect("the echo decodes");
    assert_eq!((reply.seq, value.as_ref()), (7, &b"ok"[..]));
}

/// Annotations from the selector/length/value triples at the front of `data`; the rest.
fn annotations(mut data: &[u8]) -> (Vec<([u8; 4], Bytes)>, &[u8]) {
    const IDS: [[u8; 4]; 7] = [
        DEADLINE_ANNOTATION,
        STREAM_ANNOTATION,
        MAC_ANNOTATION,
        PAKE_ANNOTATION,
        PROOF_ANNOTATION,
        *b"CORR",
        *b"XTRA",
    ];
    let mut out = Vec::new();
    while let [selector, len, rest @ ..] = data {
        if *selector == 0xFF {
            data = rest;
            break;
        }
        let (value, rest) = rest.split_at((*len as usize).min(rest.len()));
        out.push((
            IDS[*selector as usize % IDS.len()],
            Bytes::copy_from_slice(value),
        ));
        data = rest;
    }
    (out, data)
}

fn pad(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    let n = bytes.len().min(8);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

fn frame_limit() -> usize {
    rmi_core::protocol::codec::DEFAULT_MAX_MESSAGE_SIZE
}

/// One raw connection: CONNECT done, then frames out and in.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

async fn connect(addr: SocketAddr, ser: Serializer) -> Conn {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the daemon");
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
    };
    let request = ConnectRequest {
        handshake: "hello".into(),
        object: "fuzz".into(),
    };
    let payload = ser.encode(&request).expect("CONNECT encodes");
    conn.send(&Message::new(MessageType::Connect, ser.id(), 0, 0, payload))
        .await;
    let ok = conn.next().await.expect("the daemon answers CONNECT");
    assert_eq!(
        ok.msg_type,
        MessageType::ConnectOk,
        "an honest CONNECT refused"
    );
    conn
}

impl Conn {
    async fn send(&mut self, msg: &Message) {
        // The daemon may already have closed the connection: that is an allowed answer.
        let _ = self.stream.write_all(&msg.to_bytes()).await;
    }

    /// The next whole message, or `None` once the daemon closed the connection.
    async fn next(&mut self) -> Option<Message> {
        loop {
            match frame::check(&self.buf, frame_limit()) {
                Ok(header) => {
                    return Some(
                        Message::parse(&mut self.buf, &header).expect("the daemon's frame parses"),
                    )
                }
                Err(frame::Error::Incomplete) => {}
                Err(e) => panic!("the daemon sent a malformed frame: {e:?}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}
