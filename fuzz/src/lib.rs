//! The fuzz harnesses of rmi-core, as plain `fn(&[u8])` functions.
//!
//! The libFuzzer targets in `fuzz_targets/` call these, and `rmi-core/tests/properties.rs`
//! includes this file (`#[path]`) to replay every file of `fuzz/corpus/*` and `fuzz/artifacts/*`
//! on stable `cargo test`. It must therefore use only what rmi-core's tests can see: `rmi_core`,
//! `serde`, `serde_bytes` and `bytes`.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use rmi_core::protocol::codec::{
    decode_invoke, encode_invoke, DecodeLimits, Serializer, DEFAULT_MAX_MESSAGE_SIZE,
};
use rmi_core::protocol::frame::{
    self, Error as FrameError, Message, Protocol, FLAGS_CORR_ID, HEADER_SIZE,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// An `f64` compared by bits, so that a NaN read from fuzz input still equals itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// An `f32` compared by bits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct F32(pub f32);

impl PartialEq for F32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// A recursive type: the shape nesting bombs attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// Variant 0: a leaf.
    Leaf(i64),
    /// Variant 1: a list of subtrees.
    Node(Vec<Tree>),
    /// Variant 2: one boxed subtree (the cheapest way to nest deep).
    Boxed(Box<Tree>),
    /// Variant 3: a named subtree, as a struct variant.
    Named {
        /// The label.
        name: String,
        /// The subtree, if any.
        child: Option<Box<Tree>>,
    },
    /// Variant 4: a unit variant.
    Empty,
}

/// A struct with one field of most serde data-model types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rich {
    /// bool.
    pub flag: bool,
    /// i8.
    pub tiny: i8,
    /// u16.
    pub short: u16,
    /// i32.
    pub int: i32,
    /// u64.
    pub id: u64,
    /// i64.
    pub signed: i64,
    /// i128.
    pub huge: i128,
    /// u128.
    pub uhuge: u128,
    /// f32.
    pub ratio32: F32,
    /// f64.
    pub ratio: F64,
    /// char.
    pub letter: char,
    /// String.
    pub name: String,
    /// bytes (serde_bytes).
    #[serde(with = "serde_bytes")]
    pub blob: Vec<u8>,
    /// Option of a string.
    pub nickname: Option<String>,
    /// A sequence of enums.
    pub trees: Vec<Tree>,
    /// A map with string keys.
    pub table: HashMap<String, Vec<u32>>,
    /// A tuple.
    pub pair: (u8, String),
    /// Unit.
    pub unit: (),
    /// An optional recursive value.
    pub extra: Option<Box<Tree>>,
}

/// The argument tuple the payload target decodes a call into.
pub type CallArgs = (String, i32, Option<Rich>, Vec<Tree>, ByteBuf);

/// Largest annotations + payload size the frame target accepts (the default `max_message_size`).
pub const MAX: usize = DEFAULT_MAX_MESSAGE_SIZE;

/// The frame target: `frame::check` on the bytes, then `Message::parse` on every complete message
/// at the front; each parsed message must encode back to the same message.
pub fn frame(data: &[u8]) {
    // A small limit taken from the input too, so `TooLarge` is reached near its boundary.
    let small = data.first().map_or(0, |&b| b as usize * 16);
    for max in [MAX, small] {
        check_frames(data, max);
    }
}

fn check_frames(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        // A connection's first header picks Pyro5 (502) or Pyro4 (48), as the daemon's reader does.
        let header = match frame::check_any(&buf, max) {
            Ok(header) if header.protocol == Protocol::Pyro4 => {
                check_pyro4_frame(&mut buf, &header, max);
                continue;
            }
            Ok(header) => header,
            Err(FrameError::Incomplete) => {
                // Incomplete only when the header or the declared body is really missing.
                let protocol = Protocol::detect(&buf).unwrap_or_default();
                if buf.len() >= protocol.header_size() {
                    let header = protocol
                        .parse_header(&buf, max)
                        .expect("Incomplete with a valid header");
                    assert!(
                        buf.len() < header.total_len(),
                        "Incomplete although the whole message is there"
                    );
                }
                return;
            }
            Err(_) => return,
        };
        assert!(
            header.data_len as u64 + header.ann_len as u64 <= max as u64,
            "check accepted {} + {} bytes over max {max}",
            header.data_len,
            header.ann_len
        );
        assert!(
            header.total_len() <= before,
            "check claimed more bytes than the buffer has"
        );
        let head = buf[..HEADER_SIZE].to_vec();
        let msg = match Message::parse(&mut buf, &header) {
            Ok(msg) => msg,
            Err(FrameError::BadAnnotations(_)) => return,
            Err(e) => panic!("parse after a successful check failed with {e:?}"),
        };
        assert_eq!(
            buf.len(),
            before - header.total_len(),
            "parse consumed the wrong number of bytes"
        );
        assert_eq!(msg.payload.len(), header.data_len as usize);

        // Re-encode and re-parse: the same message, with FLAGS_CORR_ID added when the id is set.
        let bytes = msg.to_bytes();
        assert_eq!(bytes.len(), header.total_len(), "re-encoded length");
        let mut expected = msg.clone();
        if expected.corr_id != [0; 16] {
            expected.flags |= FLAGS_CORR_ID;
        }
        let header2 = frame::check(&bytes, max).expect("a re-encoded message checks");
        let msg2 = Message::parse(&mut BytesMut::from(&bytes[..]), &header2)
            .expect("a re-encoded message parses");
        assert_eq!(msg2, expected, "re-encoded message differs");
        // Byte for byte, only the flags and the reserved field may differ from the input.
        let mut original = head;
        original[8..10].copy_from_slice(&expected.flags.to_be_bytes());
        original[36..38].copy_from_slice(&[0, 0]);
        assert_eq!(&bytes[..HEADER_SIZE], &original[..], "re-encoded header");
    }
}

/// One Pyro4 message, already checked: it parses, and its re-encoding checks and parses to the
/// same message (the `CORR` annotation is the correlation id either way).
fn check_pyro4_frame(buf: &mut BytesMut, header: &frame::Header, max: usize) {
    assert!(header.data_len as u64 + header.ann_len as u64 <= max as u64);
    let before = buf.len();
    let msg = match Message::parse(buf, header) {
        Ok(msg) => msg,
        Err(FrameError::BadAnnotations(_)) => {
            buf.clear();
            return;
        }
        Err(e) => panic!("parse after a successful check failed with {e:?}"),
    };
    assert_eq!(buf.len(), before - header.total_len());
    let bytes = msg.to_bytes_in(Protocol::Pyro4);
    let header2 = Protocol::Pyro4
        .check(&bytes, usize::MAX)
        .expect("a re-encoded Pyro4 message checks");
    let msg2 = Message::parse(&mut BytesMut::from(&bytes[..]), &header2)
        .expect("a re-encoded Pyro4 message parses");
    assert_eq!(
        (msg2.msg_type, msg2.serializer, msg2.seq, &msg2.payload),
        (msg.msg_type, msg.serializer, msg.seq, &msg.payload),
        "re-encoded Pyro4 message differs"
    );
}

/// The limits the payload target decodes with (the production defaults).
pub fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// Picks the serializer from the first byte: its real id (98 bincode, 4 msgpack, 1 serpent,
/// 3 json, 2 marshal), else bincode or msgpack by parity.
pub fn serializer_for(byte: u8) -> Serializer {
    Serializer::from_id(byte).unwrap_or(if byte & 1 == 0 {
        Serializer::Bincode
    } else {
        Serializer::MsgPack
    })
}

/// The payload target: the first byte picks the serializer, the rest is a payload decoded as an
/// INVOKE (then its arguments), as a [`Rich`] and as a [`Tree`]. Nothing may panic or abort; any
/// value decoded must encode and decode back to itself.
pub fn payload(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let ser = serializer_for(selector);
    let limits = limits();

    if let Ok(inv) = decode_invoke(ser, Bytes::copy_from_slice(rest), &limits) {
        assert_eq!(inv.args.serializer(), ser);
        if let Ok(args) = inv.args.decode::<CallArgs>() {
            let again = encode_invoke(ser, &inv.object, &inv.method, &args)
                .expect("decoded arguments re-encode");
            let inv2 =
                decode_invoke(ser, again.into(), &limits).expect("a re-encoded INVOKE decodes");
            assert_eq!((&*inv2.object, &*inv2.method), (&*inv.object, &*inv.method));
            assert_eq!(
                inv2.args
                    .decode::<CallArgs>()
                    .expect("re-encoded arguments decode"),
                args
            );
        }
        let _ = inv.args.decode::<(Tree,)>();
    }
    if matches!(
        ser,
        Serializer::Serpent | Serializer::Json | Serializer::Marshal
    ) {
        // Python's values are not Rust's bit for bit (a NaN's payload, say; json's keys are
        // all strings; marshal's references): for serpent, json and marshal only "no panic,
        // no abort, no spin" is asked.
        let _ = ser.decode::<Rich>(rest, &limits);
        let _ = ser.decode::<Tree>(rest, &limits);
    } else {
        round_trip::<Rich>(ser, rest, &limits);
        round_trip::<Tree>(ser, rest, &limits);
    }
    // A zero-sized element costs no bytes in bincode, so only "no panic, no spin" is asked here:
    // a non-canonical varint can make a length pass that its canonical re-encoding would not.
    let _ = ser.decode::<Vec<()>>(rest, &limits);
}

fn round_trip<T>(ser: Serializer, bytes: &[u8], limits: &DecodeLimits)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = ser.decode::<T>(bytes, limits) {
        let encoded = ser.encode(&value).expect("a decoded value re-encodes");
        let again: T = ser
            .decode(&encoded, limits)
            .expect("a re-encoded value decodes");
        assert_eq!(
            again,
            value,
            "{ser:?} round trip of {}",
            std::any::type_name::<T>()
        );
    }
}

/// The reply target: what a client decodes from a daemon. The bytes are framed as messages (as
/// the proxy's reader does); each payload is decoded, in the first byte's serializer, as every
/// shape a reply can take: an exception (`RemoteError`), a batch's results (and each item's
/// value or error), a CONNECTOK, and a plain string result. Nothing may panic or abort, and
/// what decodes must round-trip.
pub fn reply(data: &[u8]) {
    use rmi_core::protocol::codec::{BatchItem, ConnectOk};
    use rmi_core::RemoteError;

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let ser = serializer_for(selector);
    let limits = limits();
    // Framed replies, as the reader sees them; then the raw bytes as one payload.
    let mut buf = BytesMut::from(rest);
    let mut payloads = Vec::new();
    while let Ok(header) = frame::check(&buf, MAX) {
        match Message::parse(&mut buf, &header) {
            Ok(msg) => payloads.push(msg.payload),
            Err(_) => break,
        }
    }
    payloads.push(Bytes::copy_from_slice(rest));
    for payload in &payloads {
        // As the proxy reads an exception reply (Pyro's exception dict or rmi's struct).
        if let Ok(err) = rmi_core::protocol::codec::decode_error(ser, payload, &limits) {
            // Displaying a remote error (its chain included) must not panic either.
            let _ = err.to_string();
        }
        round_trip::<RemoteError>(ser, payload, &limits);
        if let Ok(items) = ser.decode::<Vec<BatchItem>>(payload, &limits) {
            for item in items {
                match item {
                    BatchItem::Ok(value) => {
                        round_trip::<Tree>(ser, &value, &limits);
                    }
                    BatchItem::Err(e) => drop(e.to_string()),
                }
            }
        }
        // A CONNECTOK's answer may be any value (a tree: NaN and Pyro's NaN dict do not compare
        // equal after a round trip): it must decode without panicking and, when it is a string
        // (every rmi daemon's default), round-trip exactly.
        if let Ok(ok) = ser.decode::<ConnectOk>(payload, &limits) {
            let _ = ok.handshake.to_string();
            if ok.handshake.as_str().is_some() {
                round_trip::<ConnectOk>(ser, payload, &limits);
            }
        }
        round_trip::<String>(ser, payload, &limits);
    }
}
