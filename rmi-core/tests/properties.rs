//! Property tests of the pure protocol layer: frames, URIs and the payload codec.
//!
//! Each property runs 256 cases by default (`PROPTEST_CASES=100000` for a soak run). The fuzz
//! harnesses of `fuzz/` are included as a module, so the same invariants also run here on
//! random and mutated inputs, and every file of `fuzz/corpus/*` and `fuzz/artifacts/*` is
//! replayed as a regression test on stable.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use proptest::collection::{hash_map, vec};
use proptest::option;
use proptest::prelude::*;
use rmi_core::protocol::codec::{decode_invoke, encode_invoke, DecodeLimits, Serializer};
use rmi_core::protocol::frame::{
    self, Error as FrameError, Message, MessageType, FLAGS_COMPRESSED, FLAGS_CORR_ID, HEADER_SIZE,
};
use rmi_core::uri::{Location, Uri};
use serde_bytes::ByteBuf;

// The fuzz crate's public API, compiled here as a private module.
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use harness::{CallArgs, Rich, Tree, F32, F64};

const MAX: usize = harness::MAX;
const SERS: [Serializer; 2] = [Serializer::Bincode, Serializer::MsgPack];

fn config() -> ProptestConfig {
    // `PROPTEST_CASES` in the environment still overrides this default.
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

fn msg_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Connect),
        Just(MessageType::ConnectOk),
        Just(MessageType::ConnectFail),
        Just(MessageType::Invoke),
        Just(MessageType::Result),
        Just(MessageType::Ping),
    ]
}

fn corr_id() -> impl Strategy<Value = [u8; 16]> {
    prop_oneof![Just([0u8; 16]), any::<[u8; 16]>()]
}

fn annotation() -> impl Strategy<Value = ([u8; 4], Bytes)> {
    (any::<[u8; 4]>(), vec(any::<u8>(), 0..24)).prop_map(|(id, v)| (id, Bytes::from(v)))
}

fn message() -> impl Strategy<Value = Message> {
    (
        msg_type(),
        any::<u8>(),
        any::<u16>().prop_map(|f| f & !FLAGS_COMPRESSED),
        any::<u16>(),
        corr_id(),
        vec(annotation(), 0..=4),
        vec(any::<u8>(), 0..4096),
        // Payload sent from buffers of its own (a large byte argument and what follows it).
        vec(vec(any::<u8>(), 0..600), 0..3),
    )
        .prop_map(
            |(msg_type, serializer, flags, seq, corr_id, annotations, payload, tail)| Message {
                msg_type,
                serializer,
                flags,
                seq,
                corr_id,
                annotations,
                payload: payload.into(),
                payload_tail: tail.into_iter().map(Bytes::from).collect(),
            },
        )
}

/// What parsing an encoded `msg` must give: `encode` adds `FLAGS_CORR_ID` for a non-zero id.
fn as_sent(msg: &Message) -> Message {
    let mut expected = msg.clone();
    // It arrives in one piece.
    expected.join_payload();
    if expected.corr_id != [0; 16] {
        expected.flags |= FLAGS_CORR_ID;
    }
    expected
}

/// Bytes that are mostly close to a frame: random, a valid message mutated, or one cut short.
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..128),
        // A plausible header start followed by random bytes.
        vec(any::<u8>(), 0..128).prop_map(|rest| [&b"PYRO\x01\xf6"[..], &rest].concat()),
        (
            message(),
            vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(msg, edits)| {
                let mut bytes = msg.to_bytes().to_vec();
                for (i, b) in edits {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
                bytes
            }),
        (message(), any::<prop::sample::Index>()).prop_map(|(msg, cut)| {
            let bytes = msg.to_bytes().to_vec();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_encode_then_parse_gives_the_message_back(msg in message()) {
        let bytes = msg.to_bytes();
        let header = frame::check(&bytes, MAX).unwrap();
        prop_assert_eq!(header.total_len(), bytes.len());
        let mut buf = BytesMut::from(&bytes[..]);
        let parsed = Message::parse(&mut buf, &header).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(parsed, as_sent(&msg));
    }

    #[test]
    fn frame_every_strict_prefix_is_incomplete(msg in message()) {
        let bytes = msg.to_bytes();
        for n in 0..bytes.len() {
            prop_assert_eq!(frame::check(&bytes[..n], MAX), Err(FrameError::Incomplete), "prefix of {} bytes", n);
        }
    }

    #[test]
    fn frame_back_to_back_messages_parse_in_order(a in message(), b in message(), extra in 0usize..HEADER_SIZE) {
        let mut buf = BytesMut::new();
        a.encode(&mut buf);
        b.encode(&mut buf);
        let tail = b.to_bytes();
        buf.extend_from_slice(&tail[..extra.min(tail.len())]);
        for expected in [&a, &b] {
            let header = frame::check(&buf, MAX).unwrap();
            prop_assert_eq!(Message::parse(&mut buf, &header).unwrap(), as_sent(expected));
        }
        prop_assert_eq!(frame::check(&buf, MAX), Err(FrameError::Incomplete));
    }

    #[test]
    fn frame_size_limit_is_decided_by_the_header_alone(msg in message()) {
        let bytes = msg.to_bytes();
        let size = bytes.len() - HEADER_SIZE;
        prop_assert!(frame::check(&bytes, size).is_ok(), "exactly max is accepted");
        if size > 0 {
            // Refused from the 40 header bytes, without waiting for the body.
            let refused = frame::check(&bytes[..HEADER_SIZE], size - 1);
            prop_assert_eq!(refused, Err(FrameError::TooLarge { size: size as u64, max: size - 1 }));
        }
    }

    #[test]
    fn frame_arbitrary_bytes_never_panic_nor_exceed_max(bytes in frame_bytes()) {
        // Asserts: no panic; Ok only within max and within the buffer; Incomplete only when
        // bytes are really missing; parsed messages re-encode to themselves.
        harness::frame(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// URIs
// ---------------------------------------------------------------------------------------------

fn hostname() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        hostname(),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        any::<[u8; 16]>().prop_map(|o| Ipv6Addr::from(o).to_string()),
        Just("localhost".to_owned()),
        Just("::1".to_owned()),
    ]
}

/// An object id, name or tag: anything without whitespace or '@' (',' too for tags).
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_.:/-]{1,24}", "[^\\s@]{1,12}"]
}

fn location() -> impl Strategy<Value = Location> {
    prop_oneof![
        (host(), any::<u16>()).prop_map(|(host, port)| Location::Tcp { host, port }),
        "(/[A-Za-z0-9_.-]{1,12}){1,4}".prop_map(Location::Unix),
    ]
}

fn ns() -> impl Strategy<Value = Option<(String, u16)>> {
    option::of((host(), any::<u16>()))
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        (name(), location()).prop_map(|(object, location)| Uri::Pyro { object, location }),
        (name(), ns()).prop_map(|(name, ns)| Uri::PyroName { name, ns }),
        (vec("[^\\s@,]{1,10}", 1..4), ns()).prop_map(|(tags, ns)| Uri::PyroMeta { tags, ns }),
    ]
}

/// Strings near the URI grammar, and arbitrary ones.
fn uri_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(?i)(pyro|pyroname|pyrometa|http)?:[ -~]{0,40}",
        "(PYRO|PYRONAME|PYROMETA):[a-z.]{0,6}@(\\[[0-9a-f:\\[\\]]{0,10}\\]?|\\./u:[ -~]{0,8}|[a-z0-9.]{0,8})(:[0-9+-]{0,6})?",
        (uri(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(uri, at, c)| {
            let mut text: Vec<char> = uri.to_string().chars().collect();
            let at = at.index(text.len());
            text[at] = c;
            text.into_iter().collect()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn uri_display_then_parse_gives_the_uri_back(uri in uri()) {
        let text = uri.to_string();
        let parsed: Uri = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &uri);
        prop_assert_eq!(parsed.to_string(), text.clone());
        // The scheme is case-insensitive and surrounding whitespace is ignored.
        let (scheme, rest) = text.split_once(':').unwrap();
        let loose = format!("  {}:{rest}\t", scheme.to_lowercase());
        prop_assert_eq!(loose.parse::<Uri>().unwrap(), uri);
    }

    #[test]
    fn uri_arbitrary_text_never_panics_and_parses_to_a_displayable_uri(text in uri_text()) {
        if let Ok(uri) = text.parse::<Uri>() {
            let shown = uri.to_string();
            let again = shown.parse::<Uri>().map_err(|e| TestCaseError::fail(format!("{text:?} -> {shown:?}: {e}")))?;
            prop_assert_eq!(again, uri);
        }
    }
}

/// Regression test for a Display/FromStr mismatch the URI properties found: `PYRO:o@[[a]:80`
/// used to parse (host `"[a"`) but displayed as `PYRO:o@[a:80`, which does not parse. Brackets
/// inside a host are now refused with an error that says so.
#[test]
fn brackets_inside_a_host_are_refused() {
    for text in ["PYRO:o@[[a]:80", "PYRONAME:n@[[a]:9090", "PYRONAME:a@[[]"] {
        let err = text.parse::<Uri>().expect_err(text).to_string();
        assert!(err.contains("invalid character"), "{text}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

fn f64_not_nan() -> impl Strategy<Value = F64> {
    any::<f64>()
        .prop_filter("not NaN", |f| !f.is_nan())
        .prop_map(F64)
}

fn f32_not_nan() -> impl Strategy<Value = F32> {
    any::<f32>()
        .prop_filter("not NaN", |f| !f.is_nan())
        .prop_map(F32)
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![any::<i64>().prop_map(Tree::Leaf), Just(Tree::Empty)];
    leaf.prop_recursive(5, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Tree::Node),
            inner.clone().prop_map(|t| Tree::Boxed(Box::new(t))),
            (".{0,8}", option::of(inner.prop_map(Box::new)))
                .prop_map(|(name, child)| Tree::Named { name, child }),
        ]
    })
}

fn rich() -> impl Strategy<Value = Rich> {
    let scalars = (
        any::<bool>(),
        any::<i8>(),
        any::<u16>(),
        any::<i32>(),
        any::<u64>(),
        any::<i64>(),
        any::<i128>(),
        any::<u128>(),
        f32_not_nan(),
        f64_not_nan(),
        any::<char>(),
    );
    let composites = (
        any::<String>(),
        vec(any::<u8>(), 0..64),
        option::of(".{0,12}"),
        vec(tree(), 0..3),
        hash_map(".{0,6}", vec(any::<u32>(), 0..4), 0..4),
        (any::<u8>(), ".{0,6}"),
        option::of(tree().prop_map(Box::new)),
    );
    (scalars, composites).prop_map(
        |(
            (flag, tiny, short, int, id, signed, huge, uhuge, ratio32, ratio, letter),
            (name, blob, nickname, trees, table, pair, extra),
        )| Rich {
            flag,
            tiny,
            short,
            int,
            id,
            signed,
            huge,
            uhuge,
            ratio32,
            ratio,
            letter,
            name,
            blob,
            nickname,
            trees,
            table,
            pair,
            unit: (),
            extra,
        },
    )
}

fn call_args() -> impl Strategy<Value = CallArgs> {
    (
        ".{0,16}",
        any::<i32>(),
        option::of(rich()),
        vec(tree(), 0..3),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(s, n, rich, trees, bytes)| (s, n, rich, trees, ByteBuf::from(bytes)))
}

fn serializer() -> impl Strategy<Value = Serializer> {
    prop_oneof![Just(Serializer::Bincode), Just(Serializer::MsgPack)]
}

/// Payloads for the "never panics" properties: random bytes, or a valid encoding mutated.
fn payload_bytes() -> impl Strategy<Value = (Serializer, Vec<u8>)> {
    let mutated = (
        serializer(),
        prop_oneof![rich().prop_map(Ok), call_args().prop_map(Err)],
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(ser, value, edits, cut)| {
            let mut bytes = match value {
                Ok(rich) => ser.encode(&rich).unwrap(),
                Err(args) => encode_invoke(ser, "obj", "method", &args).unwrap(),
            };
            for (i, b) in edits {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            // Cut the end off in a quarter of the cases.
            let keep = cut.index(bytes.len() * 4 + 1).min(bytes.len());
            bytes.truncate(keep);
            (ser, bytes)
        });
    prop_oneof![(serializer(), vec(any::<u8>(), 0..256)), mutated]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn codec_rich_values_round_trip(value in rich(), tree in tree()) {
        let limits = DecodeLimits::default();
        for ser in SERS {
            let bytes = ser.encode(&value).unwrap();
            prop_assert_eq!(ser.decode::<Rich>(&bytes, &limits).unwrap(), value.clone(), "{:?}", ser);
            let bytes = ser.encode(&tree).unwrap();
            prop_assert_eq!(ser.decode::<Tree>(&bytes, &limits).unwrap(), tree.clone(), "{:?}", ser);
        }
    }

    #[test]
    fn codec_trailing_bytes_are_refused(value in rich(), junk in vec(any::<u8>(), 1..8)) {
        for ser in SERS {
            let mut bytes = ser.encode(&value).unwrap();
            bytes.extend_from_slice(&junk);
            prop_assert!(ser.decode::<Rich>(&bytes, &DecodeLimits::default()).is_err(), "{:?}", ser);
        }
    }

    #[test]
    fn codec_invoke_round_trips(ser in serializer(), object in ".{0,24}", method in ".{0,24}", args in call_args()) {
        let payload = encode_invoke(ser, &object, &method, &args).unwrap();
        let invoke = decode_invoke(ser, payload.into(), &DecodeLimits::default()).unwrap();
        prop_assert_eq!(&invoke.object, &object);
        prop_assert_eq!(&invoke.method, &method);
        prop_assert_eq!(invoke.args.serializer(), ser);
        prop_assert_eq!(invoke.args.decode::<CallArgs>().unwrap(), args);
        prop_assert!(invoke.args.decode::<(String, String, String)>().is_err(), "wrong types are an error");
    }

    #[test]
    fn codec_arbitrary_payloads_never_panic((ser, bytes) in payload_bytes()) {
        let limits = DecodeLimits::default();
        let _ = ser.decode::<Rich>(&bytes, &limits);
        let _ = ser.decode::<HashMap<String, Tree>>(&bytes, &limits);
        if let Ok(invoke) = decode_invoke(ser, bytes.clone().into(), &limits) {
            let _ = invoke.args.decode::<CallArgs>();
        }
        // The fuzz harness: the same decodes plus "what decodes re-encodes to itself".
        harness::payload(&[&[ser.id()][..], &bytes].concat());
    }
}

/// The deepest nesting `max_depth` lets through decodes on a 2 MiB test thread (debug build
/// included), and one level more is refused, in both serializers.
#[test]
fn codec_nesting_up_to_max_depth_fits_a_test_thread_stack() {
    let limits = DecodeLimits::default();
    for ser in SERS {
        let nest = |depth: usize| (0..depth).fold(Tree::Leaf(7), |t, _| Tree::Boxed(Box::new(t)));
        let deepest = (1..=limits.max_depth + 1)
            .take_while(|&d| {
                ser.decode::<Tree>(&ser.encode(&nest(d)).unwrap(), &limits)
                    .is_ok()
            })
            .last()
            .unwrap();
        assert!(
            deepest + 8 >= limits.max_depth,
            "{ser:?}: only {deepest} levels decode"
        );
        assert!(
            deepest < limits.max_depth + 1,
            "{ser:?}: nesting past max_depth decoded"
        );
        // The same depth as a call argument.
        let payload = encode_invoke(ser, "o", "m", &(nest(deepest - 2),)).unwrap();
        let invoke = decode_invoke(ser, payload.into(), &limits).unwrap();
        assert_eq!(
            invoke.args.decode::<(Tree,)>().unwrap(),
            (nest(deepest - 2),)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz corpus and artifacts, replayed on stable
// ---------------------------------------------------------------------------------------------

fn fuzz_files(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_file()),
            );
        }
    }
    files.sort();
    files
}

#[test]
fn fuzz_corpus_and_artifacts_replay_without_panic() {
    let mut replayed = 0;
    for (target, run) in [
        ("frame", harness::frame as fn(&[u8])),
        ("payload", harness::payload),
        ("reply", harness::reply),
    ] {
        for path in fuzz_files(target) {
            let data = std::fs::read(&path).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("{} panics: {}", path.display(), message.unwrap_or_default());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no fuzz corpus found next to rmi-core");
}

/// The seeds are what their names say: the valid ones decode, the hostile ones are refused for
/// the stated reason (so a seed cannot silently stop testing what it was written for).
#[test]
fn fuzz_seed_corpus_is_what_its_names_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let read = |target: &str, name: &str| std::fs::read(dir.join(target).join(name)).unwrap();
    let limits = DecodeLimits::default();

    for name in [
        "connect-bincode",
        "connect-msgpack",
        "connect-json-pyro5-capture",
        "invoke-bincode",
        "invoke-msgpack",
    ] {
        let bytes = read("frame", name);
        let header = frame::check(&bytes, MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
        let msg = Message::parse(&mut BytesMut::from(&bytes[..]), &header).unwrap();
        let expected = if name.starts_with("connect") {
            MessageType::Connect
        } else {
            MessageType::Invoke
        };
        assert_eq!(msg.msg_type, expected, "{name}");
    }
    assert_eq!(
        frame::check(&read("frame", "truncated-header"), MAX),
        Err(FrameError::Incomplete)
    );
    assert!(matches!(
        frame::check(&read("frame", "length-4gib"), MAX),
        Err(FrameError::TooLarge { .. })
    ));

    let split = |name: &str| {
        let bytes = read("payload", name);
        (
            harness::serializer_for(bytes[0]),
            Bytes::from(bytes[1..].to_vec()),
        )
    };
    for tag in ["bincode", "msgpack"] {
        let (ser, payload) = split(&format!("invoke-rich-args-{tag}"));
        let invoke = decode_invoke(ser, payload, &limits).unwrap();
        invoke.args.decode::<CallArgs>().unwrap();
        let (ser, payload) = split(&format!("rich-{tag}"));
        ser.decode::<Rich>(&payload, &limits).unwrap();
    }
    let refused = |name: &str, err: rmi_core::Error, why: &str| {
        let text = err.to_string();
        assert!(text.contains(why), "{name}: expected {why:?}, got {text}");
    };
    for name in ["bincode-nested-15000", "msgpack-nested-15000"] {
        let (ser, payload) = split(name);
        refused(
            name,
            ser.decode::<Tree>(&payload, &limits).unwrap_err(),
            "max_depth",
        );
    }
    let (ser, payload) = split("msgpack-invoke-args-nested-15000");
    refused(
        "msgpack-invoke-args-nested-15000",
        decode_invoke(ser, payload, &limits).unwrap_err(),
        "max_depth",
    );
    let (ser, payload) = split("bincode-vec-unit-len-2pow40");
    refused(
        "bincode-vec-unit-len-2pow40",
        ser.decode::<Vec<()>>(&payload, &limits).unwrap_err(),
        "declared length",
    );
    let (ser, payload) = split("msgpack-array32-len-max");
    refused(
        "msgpack-array32-len-max",
        ser.decode::<Vec<()>>(&payload, &limits).unwrap_err(),
        "declared length",
    );
    let (ser, payload) = split("bincode-string-len-2pow40");
    assert!(
        decode_invoke(ser, payload, &limits).is_err(),
        "a 2^40-byte method name is refused"
    );
    let (ser, payload) = split("msgpack-str32-len-max");
    assert!(
        ser.decode::<String>(&payload, &limits).is_err(),
        "a 4 GiB str32 in 5 bytes is refused"
    );
}
