//! Writes the committed seed corpus of `fuzz/corpus/{frame,payload,handshake,reply}/`.
//!
//! Run from `fuzz/`: `cargo run --example seed_corpus`. Every file is small and named after what
//! it holds; the whole corpus stays well under 200 KB.

use std::collections::HashMap;
use std::path::Path;

use rmi_core::protocol::codec::{encode_invoke, ConnectRequest, Serializer};
use rmi_core::protocol::frame::{Message, MessageType, HEADER_SIZE};
use rmi_fuzz::{CallArgs, Rich, Tree, F32, F64};
use serde_bytes::ByteBuf;

/// The JSON CONNECT a real Pyro5 client sent (shared/pyro5-wire.md §10).
const CAPTURED_JSON_CONNECT: &str = "5059524f01f60103000000000000003300000000000000000000000000000000000000000000\
    4dc57b2268616e647368616b65223a202268656c6c6f222c20226f626a656374223a20226578616d706c652e77656c636f6d65227d";

/// The serpent CONNECT a real Pyro4 4.82 client sent (shared/pyro4-wire.md §15).
const CAPTURED_PYRO4_CONNECT: &str = "5059524f00300001001000000000004a0001000000003575232073657270656e74207574662d3820\
    707974686f6e332e320a7b2768616e647368616b65273a2768656c6c6f272c276f626a656374273a276578616d706c652e77656c636f6d65277d";

const DEPTH: usize = 15_000;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("{:>8} {}/{name}", bytes.len(), dir.display());
}

fn with_selector(ser: Serializer, payload: &[u8]) -> Vec<u8> {
    [&[ser.id()][..], payload].concat()
}

fn sample_rich() -> Rich {
    Rich {
        flag: true,
        tiny: -3,
        short: 500,
        int: -70_000,
        id: u64::MAX,
        signed: i64::MIN,
        huge: -(1 << 100),
        uhuge: 1 << 127,
        ratio32: F32(0.5),
        ratio: F64(-1.0e300),
        letter: 'λ',
        name: "Rashmi".into(),
        blob: vec![0, 1, 2, 255],
        nickname: Some("r".into()),
        trees: vec![
            Tree::Node(vec![Tree::Leaf(1), Tree::Empty]),
            Tree::Named {
                name: "n".into(),
                child: None,
            },
        ],
        table: HashMap::from([("k".to_owned(), vec![1, 2, 3])]),
        pair: (9, "nine".into()),
        unit: (),
        extra: Some(Box::new(Tree::Boxed(Box::new(Tree::Leaf(-1))))),
    }
}

fn sample_args() -> CallArgs {
    (
        "Rashmi".into(),
        7,
        Some(sample_rich()),
        vec![Tree::Leaf(42)],
        ByteBuf::from(vec![0xde, 0xad]),
    )
}

/// bincode varint: 253 then a little-endian u64.
fn bincode_len(n: u64) -> Vec<u8> {
    [&[253u8][..], &n.to_le_bytes()].concat()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let frames = root.join("frame");
    let payloads = root.join("payload");
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::create_dir_all(&payloads).unwrap();

    let connect = ConnectRequest {
        handshake: "hello".into(),
        object: "example.welcome".into(),
    };
    for (ser, tag) in [
        (Serializer::Bincode, "bincode"),
        (Serializer::MsgPack, "msgpack"),
        (Serializer::Serpent, "serpent"),
    ] {
        let connect_payload = ser.encode(&connect).unwrap();
        let invoke_payload =
            encode_invoke(ser, "example.welcome", "welcomeMessage", &("Rashmi",)).unwrap();
        let rich_invoke = encode_invoke(ser, "example.welcome", "rich", &sample_args()).unwrap();

        let connect_msg = Message::new(
            MessageType::Connect,
            ser.id(),
            0,
            0,
            connect_payload.clone(),
        );
        write(&frames, &format!("connect-{tag}"), &connect_msg.to_bytes());
        let mut invoke_msg =
            Message::new(MessageType::Invoke, ser.id(), 0, 1, invoke_payload.clone());
        invoke_msg.corr_id = *b"0123456789abcdef";
        invoke_msg
            .annotations
            .push((*b"CORR", bytes::Bytes::from_static(b"xyz")));
        write(&frames, &format!("invoke-{tag}"), &invoke_msg.to_bytes());

        write(
            &payloads,
            &format!("connect-{tag}"),
            &with_selector(ser, &connect_payload),
        );
        write(
            &payloads,
            &format!("invoke-{tag}"),
            &with_selector(ser, &invoke_payload),
        );
        write(
            &payloads,
            &format!("invoke-rich-args-{tag}"),
            &with_selector(ser, &rich_invoke),
        );
        write(
            &payloads,
            &format!("rich-{tag}"),
            &with_selector(ser, &ser.encode(&sample_rich()).unwrap()),
        );
    }

    // Frames: the captured JSON CONNECT, two messages back to back, a truncated header and a
    // header declaring a 4 GiB payload.
    let captured = hex(CAPTURED_JSON_CONNECT);
    write(&frames, "connect-json-pyro5-capture", &captured);
    let ping = Message::new(MessageType::Ping, 42, 0, 2, &b""[..]).to_bytes();
    write(
        &frames,
        "two-messages",
        &[&captured[..], &ping[..]].concat(),
    );
    write(&frames, "truncated-header", &captured[..HEADER_SIZE / 2]);
    let mut huge = captured[..HEADER_SIZE].to_vec();
    huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    write(&frames, "length-4gib", &huge);
    write(
        &frames,
        "connect-serpent-pyro4-capture",
        &hex(CAPTURED_PYRO4_CONNECT),
    );

    // Payloads: the JSON CONNECT body (serializer 3, decoded as msgpack), hostile lengths and
    // 15,000-deep nesting.
    write(
        &payloads,
        "connect-json-pyro5-capture",
        &[&[3u8][..], &captured[HEADER_SIZE..]].concat(),
    );
    // An INVOKE whose method name (a bincode String) claims 2^40 bytes.
    let mut long_method = vec![Serializer::BINCODE_ID, 3];
    long_method.extend_from_slice(b"obj");
    long_method.extend_from_slice(&bincode_len(1 << 40));
    write(&payloads, "bincode-string-len-2pow40", &long_method);
    // A bare Vec<()> (and any other sequence) claiming 2^40 elements in 9 bytes.
    write(
        &payloads,
        "bincode-vec-unit-len-2pow40",
        &with_selector(Serializer::Bincode, &bincode_len(1 << 40)),
    );
    // msgpack array32 of 2^32-1 elements and str32 of 2^32-1 bytes.
    write(
        &payloads,
        "msgpack-array32-len-max",
        &[Serializer::MSGPACK_ID, 0xdd, 0xff, 0xff, 0xff, 0xff],
    );
    write(
        &payloads,
        "msgpack-str32-len-max",
        &[Serializer::MSGPACK_ID, 0xdb, 0xff, 0xff, 0xff, 0xff],
    );
    // Tree::Boxed nested 15,000 deep: bincode variant index 2 per level, then Leaf(0).
    let mut deep = vec![Serializer::BINCODE_ID];
    deep.extend(std::iter::repeat_n(2u8, DEPTH));
    deep.extend_from_slice(&[0, 0]);
    write(&payloads, "bincode-nested-15000", &deep);
    // The same in msgpack, with variant indices as map keys ({2: {2: ... {0: 0}}}), 2 bytes a level.
    let mut deep = vec![Serializer::MSGPACK_ID];
    for _ in 0..DEPTH {
        deep.extend_from_slice(&[0x81, 0x02]);
    }
    deep.extend_from_slice(&[0x81, 0x00, 0x00]);
    write(&payloads, "msgpack-nested-15000", &deep);
    // A msgpack INVOKE whose arguments are 15,000 nested arrays (skipped as IgnoredAny by routing).
    let mut deep = vec![Serializer::MSGPACK_ID, 0x94, 0xa3];
    deep.extend_from_slice(b"obj");
    deep.push(0xa1);
    deep.push(b'm');
    deep.extend(std::iter::repeat_n(0x91u8, DEPTH));
    deep.extend_from_slice(&[0x90, 0x80]);
    write(&payloads, "msgpack-invoke-args-nested-15000", &deep);

    handshake_seeds(&root.join("handshake"));
    reply_seeds(&root.join("reply"));
}

/// Seeds of the `handshake` target (see its cases): real SPAKE2 messages, so the fuzzer starts
/// past point decoding, in each case's layout.
fn handshake_seeds(dir: &Path) {
    use rmi_core::auth::{ClientHandshake, ServerHandshake, SharedSecret};
    use rmi_core::protocol::names::{PAKE_ANNOTATION, PROOF_ANNOTATION};
    std::fs::create_dir_all(dir).unwrap();
    let secret = SharedSecret::new("hunter2");
    let ser = Serializer::Bincode;
    let request = ConnectRequest {
        handshake: "hello".into(),
        object: "example.welcome".into(),
    };
    let mut connect = Message::new(
        MessageType::Connect,
        ser.id(),
        0,
        0,
        ser.encode(&request).unwrap(),
    );
    let client = ClientHandshake::start(&secret, &mut connect);
    let mut offer = Message::new(MessageType::ConnectOk, ser.id(), 0, 0, Vec::new());
    ServerHandshake::start(&secret, &connect, &mut offer).unwrap();
    let (mut signer, _) = client.confirm(&connect, &offer).unwrap();
    let mut proof = Message::new(
        MessageType::Connect,
        ser.id(),
        0,
        0,
        connect.payload.clone(),
    );
    signer.sign(&mut proof);

    let chunk = |bytes: &[u8]| [&[bytes.len() as u8][..], bytes].concat();
    let client_msg = connect.annotation(&PAKE_ANNOTATION).unwrap();
    let daemon_msg = offer.annotation(&PAKE_ANNOTATION).unwrap();
    let confirmation = offer.annotation(&PROOF_ANNOTATION).unwrap();
    let mac = proof.annotation(b"HMAC").unwrap();
    write(
        dir,
        "daemon-chunks",
        &[
            &[0u8][..],
            &chunk(client_msg),
            &chunk(&connect.payload),
            &chunk(mac),
            &chunk(&proof.payload),
        ]
        .concat(),
    );
    write(
        dir,
        "daemon-frames",
        &[&[1u8][..], &connect.to_bytes(), &proof.to_bytes()].concat(),
    );
    write(
        dir,
        "client-chunks",
        &[
            &[2u8][..],
            &chunk(daemon_msg),
            &chunk(&[]),
            &chunk(confirmation),
        ]
        .concat(),
    );
    write(
        dir,
        "client-frames",
        &[&[3u8][..], &offer.to_bytes()].concat(),
    );
    // Honest handshakes, tampered with one flipped bit, and not at all.
    write(dir, "tamper-pake-bit", &[4, 1, 0, 0, 1]);
    write(dir, "tamper-proof-bit", &[4, 2, 0, 0, 0, 0x80]);
    write(dir, "tamper-none", &[4, 0]);
}

/// Replies a client decodes: an exception with a cause chain, a batch's results, a CONNECTOK,
/// and a framed RESULT carrying an exception.
fn reply_seeds(dir: &Path) {
    use rmi_core::protocol::codec::{BatchItem, ConnectOk};
    use rmi_core::{Metadata, RemoteError, RemoteErrorKind};
    std::fs::create_dir_all(dir).unwrap();
    let mut err = RemoteError::new(RemoteErrorKind::Other, "builtins.ValueError", "bad value");
    err.chain = vec!["caused by this".into(), "and this".into()];
    err.object = Some("example.welcome".into());
    err.method = Some("welcomeMessage".into());
    for (ser, tag) in [
        (Serializer::Bincode, "bincode"),
        (Serializer::MsgPack, "msgpack"),
    ] {
        let exception = ser.encode(&err).unwrap();
        write(
            dir,
            &format!("exception-{tag}"),
            &with_selector(ser, &exception),
        );
        let items = vec![
            BatchItem::Ok(ser.encode(&Tree::Leaf(7)).unwrap()),
            BatchItem::Err(err.clone()),
        ];
        write(
            dir,
            &format!("batch-{tag}"),
            &with_selector(ser, &ser.encode(&items).unwrap()),
        );
        let ok = ConnectOk {
            handshake: "hello".into(),
            meta: Metadata {
                methods: vec!["welcomeMessage".into(), "notify".into()],
                oneway: vec!["notify".into()],
                attrs: Vec::new(),
            },
        };
        write(
            dir,
            &format!("connectok-{tag}"),
            &with_selector(ser, &ser.encode(&ok).unwrap()),
        );
        let msg = Message::new(
            MessageType::Result,
            ser.id(),
            rmi_core::protocol::frame::FLAGS_EXCEPTION,
            1,
            exception,
        );
        write(
            dir,
            &format!("framed-exception-{tag}"),
            &with_selector(ser, &msg.to_bytes()),
        );
    }
}
