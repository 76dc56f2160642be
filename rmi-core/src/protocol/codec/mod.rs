//! Serde encoding of payloads per serializer id, each format in a module of its own.
//!
//! Five serializers ship: bincode 1.3.3 (module `bincode`, rmi's own id
//! [`Serializer::BINCODE_ID`], Rust to Rust), and Pyro's msgpack (module `msgpack`, Pyro5's
//! id 4), serpent (module `serpent`, id 1), json (module `json`, Pyro5's id 3, Pyro4's 2) and
//! marshal (module `marshal`, Pyro5's id 2, Pyro4's 3). A format module is the only place that
//! names its crate; pickle and its kin are never decoded. Every decode is bounded: bincode and
//! msgpack through the bounded wrapper (the private `bounded` module), serpent, json and
//! marshal by their own readers into the value tree: the payload length is the size limit,
//! trailing bytes are refused, nesting is limited to [`DecodeLimits::max_depth`] and no
//! collection may claim more elements than the payload has bytes.
//!
//! In the Pyro formats a non-empty `Vec<u8>` is written as bytes (msgpack's bin, marshal's
//! bytes, serpent's base64 dict; json has no bytes and writes a list), and a `Vec<u8>` reads
//! Python's bytes (module `byteseq`). `#[remote]` sends a method's own `Vec<u8>` parameters
//! and results as `serde_bytes`: bytes even when empty, base64 in json, and under bincode the
//! same wire as a sequence of `u8`, written and read in one copy.
//!
//! Pyro4 peers (protocol 48, [`Protocol::Pyro4`]) get the same formats with Pyro4's class
//! names: [`Serializer::encode_in`] writes a `__class__` of `Pyro5.<rest>` as `Pyro4.<rest>`
//! (URIs, errors).
//!
//! bincode is not self-describing, so types that need `deserialize_any` (untagged enums,
//! `#[serde(flatten)]`, `skip_serializing_if`) fail at run time under it; use msgpack for those.

mod bincode;
mod bounded;
mod byteseq;
mod exception;
mod handshake;
mod in_place;
mod json;
mod marshal;
mod msgpack;
mod serpent;
mod trim;
mod value;
mod wide_ints;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::frame::{self, Protocol};
use crate::error::{Error, RemoteError};

pub use handshake::HandshakeData;

/// Default [`DecodeLimits::max_message_size`]: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Default [`DecodeLimits::max_depth`]: deep enough for real data, far from a stack overflow.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// The deepest [`DecodeLimits::max_depth`] is taken as: decoders recurse once per level (or
/// more), and much deeper nesting overflows a tokio worker's 2 MiB stack, which aborts the
/// process. Measured on a 2 MiB thread with a payload nested 15,000 deep: in a debug build,
/// marshal's decoder overflowed at a ceiling of 256 levels (serpent's parser alone at about
/// 1,200); a release build's frames are several times smaller. A larger `max_depth` ("no
/// limit") means this.
pub const MAX_DEPTH_CEILING: usize = if cfg!(debug_assertions) { 160 } else { 512 };

/// Limits applied to every message read and every payload decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest annotations + payload size accepted in a header (`max_message_size`).
    pub max_message_size: usize,
    /// Deepest nesting of sequences, maps, enums and options accepted in a payload (`max_depth`);
    /// at most [`MAX_DEPTH_CEILING`], whatever is set here.
    pub max_depth: usize,
}

impl DecodeLimits {
    /// The nesting the decoders allow: `max_depth`, at most [`MAX_DEPTH_CEILING`].
    pub(crate) fn depth(&self) -> usize {
        self.max_depth.min(MAX_DEPTH_CEILING)
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A payload serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Serializer {
    /// bincode 1.3.3, varint integers, little endian; fastest, Rust to Rust only.
    #[default]
    Bincode,
    /// MessagePack with named struct fields (Pyro5's serializer id 4).
    MsgPack,
    /// serpent, Python literal syntax (id 1): Pyro4's and Pyro5's default serializer.
    Serpent,
    /// JSON as Python's `json` module writes it (Pyro5's id 3, Pyro4's id 2).
    Json,
    /// Python's marshal, data only (Pyro5's id 2, Pyro4's id 3).
    Marshal,
}

impl Serializer {
    /// The serializer id rmi uses for bincode. Pyro5 uses 1 to 4 and 42; 98 (`b`) is free.
    pub const BINCODE_ID: u8 = 98;
    /// Pyro5's serializer id for msgpack.
    pub const MSGPACK_ID: u8 = 4;
    /// Pyro's serializer id for serpent (both Pyro4 and Pyro5).
    pub const SERPENT_ID: u8 = 1;
    /// Pyro5's serializer id for json (Pyro4's is 2).
    pub const JSON_ID: u8 = 3;
    /// Pyro5's serializer id for marshal (Pyro4's is 3).
    pub const MARSHAL_ID: u8 = 2;

    /// The id carried in the message header.
    pub fn id(self) -> u8 {
        match self {
            Serializer::Bincode => Self::BINCODE_ID,
            Serializer::MsgPack => Self::MSGPACK_ID,
            Serializer::Serpent => Self::SERPENT_ID,
            Serializer::Json => Self::JSON_ID,
            Serializer::Marshal => Self::MARSHAL_ID,
        }
    }

    /// The serializer for a header id, if rmi supports it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            Self::BINCODE_ID => Some(Serializer::Bincode),
            Self::MSGPACK_ID => Some(Serializer::MsgPack),
            Self::SERPENT_ID => Some(Serializer::Serpent),
            Self::JSON_ID => Some(Serializer::Json),
            Self::MARSHAL_ID => Some(Serializer::Marshal),
            _ => None,
        }
    }

    /// Serializes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            Serializer::Bincode => bincode::encode(value),
            Serializer::MsgPack => msgpack::encode(value),
            Serializer::Serpent => serpent::encode(value),
            Serializer::Json => json::encode(value, false),
            Serializer::Marshal => marshal::encode(value, false),
        }
    }

    /// Serializes `value` for a peer speaking `protocol`: for Pyro4, the class names of Pyro's
    /// class dicts (`__class__`) are Pyro4's (`Pyro4.core.URI`, `Pyro4.errors.NamingError`).
    pub fn encode_in<T: Serialize + ?Sized>(
        self,
        protocol: Protocol,
        value: &T,
    ) -> Result<Vec<u8>, Error> {
        match (protocol, self) {
            (Protocol::Pyro5, _) | (_, Serializer::Bincode) => self.encode(value),
            (Protocol::Pyro4, Serializer::Serpent) => {
                let _pyro4 = Pyro4Scope::enter();
                serpent::encode_in(value, true)
            }
            (Protocol::Pyro4, Serializer::Json) => {
                let _pyro4 = Pyro4Scope::enter();
                json::encode(value, true)
            }
            (Protocol::Pyro4, Serializer::Marshal) => {
                let _pyro4 = Pyro4Scope::enter();
                marshal::encode(value, true)
            }
            (Protocol::Pyro4, Serializer::MsgPack) => {
                let _pyro4 = Pyro4Scope::enter();
                let mut doc = msgpack::encode(value)?;
                msgpack::rename_classes_for_pyro4(&mut doc);
                Ok(doc)
            }
        }
    }

    /// Deserializes a whole payload through the bounded wrapper.
    pub fn decode<T: DeserializeOwned>(
        self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> Result<T, Error> {
        match self {
            Serializer::Bincode => bincode::decode(bytes, limits),
            Serializer::MsgPack => msgpack::decode(bytes, limits),
            Serializer::Serpent => serpent::decode(bytes, limits),
            Serializer::Json => json::decode(bytes, limits),
            Serializer::Marshal => marshal::decode(bytes, limits),
        }
    }

    /// Pyro's name of this serializer (`"serpent"`, `"json"`, `"msgpack"`, `"marshal"`; rmi's
    /// own is `"bincode"`).
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Bincode => "bincode",
            Serializer::MsgPack => "msgpack",
            Serializer::Serpent => "serpent",
            Serializer::Json => "json",
            Serializer::Marshal => "marshal",
        }
    }
}

thread_local! {
    /// Set while a value is encoded for a Pyro4 peer (see [`encoding_for_pyro4`]).
    static PYRO4: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the encoding on this thread as one for a Pyro4 peer until dropped.
struct Pyro4Scope(bool);

impl Pyro4Scope {
    fn enter() -> Self {
        Pyro4Scope(PYRO4.with(|f| f.replace(true)))
    }
}

impl Drop for Pyro4Scope {
    fn drop(&mut self) {
        PYRO4.with(|f| f.set(self.0));
    }
}

/// True while [`Serializer::encode_in`] encodes for a Pyro4 peer: a `Serialize` impl whose
/// Pyro4 shape differs by more than the class name's `Pyro5.` prefix (a proxy is a
/// `Pyro4.core.Proxy` with a 9-field state there) asks this. Encoding is synchronous, so the
/// answer holds for the whole value being written on this thread.
pub fn encoding_for_pyro4() -> bool {
    PYRO4.with(std::cell::Cell::get)
}

/// The name of a newtype struct whose sequence serpent writes as a Python set literal
/// (`{'a','b'}`; an empty one as `()`, as serpent writes it): a `Serialize` impl that means a
/// Python `set` (a name server's metadata) wraps its items in
/// `serialize_newtype_struct(PYTHON_SET, ..)`. Every other format writes the sequence (a
/// newtype struct is transparent in bincode, msgpack and json).
pub const PYTHON_SET: &str = "rmi.PythonSet";

/// A str in marshal, and marshal's id in Pyro4: how a Pyro4 daemon words the CONNECTFAIL that
/// refuses a client's serializer (before it has agreed on one).
pub fn encode_marshal_str(text: &str) -> (u8, Vec<u8>) {
    (marshal::PYRO4_MARSHAL_ID, marshal::encode_str(text))
}

/// A str in marshal, as a Pyro daemon words a CONNECTFAIL before it has agreed on a
/// serializer (Pyro5: marshal id 2, Pyro4: id 3); `None` when `payload` is not one.
pub fn decode_marshal_str(payload: &[u8]) -> Option<String> {
    marshal::decode_str(payload)
}

/// The payload of `MSG_CONNECT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// Handshake data for the daemon's validator (Pyro's default is `"hello"`): any value in
    /// the Pyro formats, a string under bincode.
    pub handshake: HandshakeData,
    /// The object this connection is for (empty when a Pyro4 client, with `METADATA=False`,
    /// names none).
    #[serde(default)]
    pub object: String,
}

/// A [`ConnectRequest`] borrowed from what it is made of, for encoding: the same bytes in
/// every serializer, without copying the object id and the handshake data per connect.
#[derive(Serialize)]
#[serde(rename = "ConnectRequest")]
pub(crate) struct ConnectRequestRef<'a> {
    pub(crate) handshake: &'a HandshakeData,
    pub(crate) object: &'a str,
}

/// A [`ConnectOk`] borrowed, for encoding: the same bytes in every serializer, without copying
/// the object's metadata per connect.
#[derive(Serialize)]
#[serde(rename = "ConnectOk")]
pub(crate) struct ConnectOkRef<'a> {
    pub(crate) handshake: &'a HandshakeData,
    pub(crate) meta: &'a Metadata,
}

/// What a client learns about an object at connect time (Pyro's `meta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Wire names of all methods, oneway ones included.
    pub methods: Vec<String>,
    /// Wire names of the oneway methods.
    pub oneway: Vec<String>,
    /// Names of the exposed properties (Python's `@property`; in rmi, `#[rmi(property)]` and
    /// `#[rmi(setter)]` methods), read and set through `__getattr__` and `__setattr__`.
    pub attrs: Vec<String>,
}

/// The payload of `MSG_CONNECTOK`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectOk {
    /// The validator's answer: any value in the Pyro formats, a string under bincode.
    pub handshake: HandshakeData,
    /// The connected object's metadata.
    pub meta: Metadata,
}

/// Keyword arguments of a Pyro call; rmi sends none and accepts only an empty map.
struct NoKwargs;

impl Serialize for NoKwargs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for NoKwargs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, IgnoredAny>::deserialize(d)?;
        if let Some(name) = map.keys().next() {
            return Err(serde::de::Error::custom(format_args!(
                "keyword argument {name:?} is not supported"
            )));
        }
        Ok(NoKwargs)
    }
}

/// Encodes an INVOKE payload: object id, method name and the argument tuple.
///
/// bincode: `object`, `method`, then the arguments, concatenated. msgpack and serpent: Pyro's
/// 4-element `(object, method, (args...), {})`, without trailing `None` arguments (see
/// [`encode_invoke_in`]).
pub fn encode_invoke<A: Serialize>(
    ser: Serializer,
    object: &str,
    method: &str,
    args: &A,
) -> Result<Vec<u8>, Error> {
    encode_invoke_in(ser, Protocol::Pyro5, object, method, args)
}

/// [`encode_invoke`] for a daemon speaking `protocol`: to a Pyro4 daemon, the class dicts among
/// the arguments (URIs) carry Pyro4's class names.
///
/// In the Pyro formats, trailing `None` arguments are left out, as a Python caller leaves out
/// arguments with defaults (the Python method then uses its defaults; an rmi daemon reads a
/// left-out trailing `Option` parameter as `None`).
pub fn encode_invoke_in<A: Serialize>(
    ser: Serializer,
    protocol: Protocol,
    object: &str,
    method: &str,
    args: &A,
) -> Result<Vec<u8>, Error> {
    encode_invoke_kwargs_in(ser, protocol, object, method, args, None::<&NoKwargs>)
}

/// Payloads up to this size may share an allocation with others (see
/// [`encode_invoke_payload`] and [`Args::encode_bytes`]).
pub(crate) const ARENA_MAX: usize = bincode::ARENA_MAX;

pub(crate) use in_place::offering;
pub use in_place::ByteArg;

/// [`encode_invoke_kwargs_in`] as a message's payload and its tail. Small bincode payloads
/// without keyword arguments are encoded into a per-thread buffer and split off it: no
/// allocation of their own. A large [`ByteArg`] is left out of the payload (in bincode and
/// msgpack) and returned as the tail, to be sent from its own buffer.
pub(crate) fn encode_invoke_payload<A: Serialize, K: Serialize + ?Sized>(
    ser: Serializer,
    protocol: Protocol,
    object: &str,
    method: &str,
    args: &A,
    kwargs: Option<&K>,
) -> Result<(Bytes, Vec<Bytes>), Error> {
    match (ser, kwargs) {
        (Serializer::Bincode, None) => {
            in_place::offering(|| bincode::encode_bytes(&(object, method, args)))
        }
        // Pyro4's class names are written over the encoded bytes afterwards: a buffer left
        // out would escape the renaming of what follows it.
        (Serializer::MsgPack, _) if protocol == Protocol::Pyro5 => in_place::offering(|| {
            encode_invoke_kwargs_in(ser, protocol, object, method, args, kwargs).map(Bytes::from)
        }),
        _ => encode_invoke_kwargs_in(ser, protocol, object, method, args, kwargs)
            .map(|payload| (Bytes::from(payload), Vec::new())),
    }
}

/// [`encode_invoke_in`] with keyword arguments: `kwargs`, when given, is anything that
/// serializes as a map of parameter names to values (a `BTreeMap<&str, V>`, a `HashMap`, or a
/// struct with named fields, which the Pyro formats write as a dict). Pyro's formats carry them
/// as the call's kwargs dict; bincode carries positional arguments only and refuses keyword
/// arguments unless `kwargs` is an empty map.
pub fn encode_invoke_kwargs_in<A: Serialize, K: Serialize + ?Sized>(
    ser: Serializer,
    protocol: Protocol,
    object: &str,
    method: &str,
    args: &A,
    kwargs: Option<&K>,
) -> Result<Vec<u8>, Error> {
    let kwargs = Kwargs(kwargs);
    match ser {
        Serializer::Bincode => {
            if let Some(k) = kwargs.0 {
                if msgpack::encode(k)? != [0x80] {
                    return Err(Error::Codec(
                        "keyword arguments need a Pyro serializer (serpent, json, msgpack, \
                         marshal); bincode carries positional arguments only"
                            .into(),
                    ));
                }
            }
            ser.encode(&(object, method, args))
        }
        Serializer::MsgPack | Serializer::Serpent | Serializer::Marshal => {
            ser.encode_in(protocol, &(object, method, trim::Trimmed(args), kwargs))
        }
        Serializer::Json => ser.encode_in(
            protocol,
            &JsonCall {
                object,
                method,
                params: trim::Trimmed(args),
                kwargs,
            },
        ),
    }
}

/// A call's keyword arguments: the caller's map, or an empty one.
struct Kwargs<'a, K: ?Sized>(Option<&'a K>);

impl<K: Serialize + ?Sized> Serialize for Kwargs<'_, K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(k) => k.serialize(s),
            None => NoKwargs.serialize(s),
        }
    }
}

/// A call in Pyro's json form: `{"object", "method", "params", "kwargs"}`, in that order.
#[derive(Serialize)]
struct JsonCall<'a, P, K> {
    object: &'a str,
    method: &'a str,
    params: P,
    kwargs: K,
}

/// A decoded INVOKE: where it goes, and its still-encoded arguments.
#[derive(Debug, Clone)]
pub struct Invoke {
    /// The object id (under bincode, a slice of the payload).
    pub object: ByteString,
    /// The method's wire name (under bincode, a slice of the payload).
    pub method: ByteString,
    /// The arguments, decoded later by the object's dispatcher.
    pub args: Args,
}

/// Encoded arguments of a call; the dispatcher decodes them as the method's parameter tuple.
#[derive(Debug, Clone)]
pub struct Args {
    ser: Serializer,
    /// The caller's protocol, which the result is encoded for.
    protocol: Protocol,
    /// bincode: the bytes after object and method; msgpack, serpent: the whole payload;
    /// json and Pyro-format batched calls: empty (see `tree`).
    bytes: Bytes,
    /// More argument bytes after `bytes`, when a reader split the payload (boxed: rare, and
    /// every call's `Args` is moved several times).
    apart: Option<Box<Apart>>,
    limits: DecodeLimits,
    /// The positional and keyword arguments, already read into the value tree (json, and the
    /// calls of a batch in Pyro's format).
    tree: Option<Box<(value::Value, value::Value)>>,
}

/// Argument bytes that arrived in pieces (see
/// [`Message::payload_tail`](crate::protocol::frame::Message::payload_tail)).
#[derive(Debug, Clone)]
struct Apart {
    /// What follows [`Args`]'s bytes: the large byte string a reader split off, then the rest.
    tail: Vec<Bytes>,
    /// The byte string was handed over by [`take_named`](Args::take_named).
    moved: bool,
}

impl Apart {
    /// An error once [`take_named`](Args::take_named) has handed the byte string over.
    fn not_moved(&self) -> Result<(), Error> {
        if self.moved {
            return Err(Error::Codec(
                "the arguments' byte string was handed over by an earlier take_named".into(),
            ));
        }
        Ok(())
    }
}

/// The first element of a sequence, a string; the others are skipped (see
/// [`Args::attribute_name`]).
struct LeadingStr(String);

impl<'de> Deserialize<'de> for LeadingStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Leading;
        impl<'de> serde::de::Visitor<'de> for Leading {
            type Value = LeadingStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("positional arguments starting with the attribute's name, a str")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LeadingStr, A::Error> {
                let name: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LeadingStr(name))
            }
        }
        d.deserialize_seq(Leading)
    }
}

/// One call of a batch in Pyro's format (`[method, [args...], {kwargs}]`).
#[derive(Debug, Clone)]
pub struct BatchCall {
    /// The method's wire name.
    pub method: String,
    /// Its arguments.
    pub args: Args,
}

impl Args {
    /// The serializer the arguments (and so the reply) use.
    pub fn serializer(&self) -> Serializer {
        self.ser
    }

    /// The protocol the caller speaks (Pyro5 unless [`in_protocol`](Self::in_protocol) said).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The same arguments, from a caller speaking `protocol`.
    pub fn in_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Encodes a result for the caller: in its serializer, with its protocol's class names.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, Error> {
        self.ser.encode_in(self.protocol, value)
    }

    /// [`encode`](Self::encode) as a message's payload: a small bincode result is encoded
    /// into a per-thread buffer and split off it, with no allocation of its own.
    pub fn encode_bytes<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, Error> {
        match self.ser {
            Serializer::Bincode => bincode::encode_bytes(value),
            _ => self.encode(value).map(Bytes::from),
        }
    }

    /// The length the first argument declares when it is a sequence (read from its prefix,
    /// without decoding it), so a caller can refuse an oversized list before building it.
    pub fn leading_seq_len(&self) -> Option<u64> {
        if self.tree.is_some() {
            return None;
        }
        match self.ser {
            Serializer::Bincode => match (bincode::leading_seq_len(&self.bytes), &self.apart) {
                (None, Some(apart)) if !apart.moved => {
                    // The prefix runs on into the pieces (where a peer announced its byte
                    // string is its own choice): read from its first bytes, at most 9.
                    let mut prefix = self.bytes.to_vec();
                    for piece in &apart.tail {
                        let want = 9usize.saturating_sub(prefix.len()).min(piece.len());
                        prefix.extend_from_slice(&piece[..want]);
                    }
                    bincode::leading_seq_len(&prefix)
                }
                (n, _) => n,
            },
            // (Under msgpack, arguments are read apart only when their headers all lie before
            // the byte string, so the first argument's is never in the pieces.)
            Serializer::MsgPack => msgpack::leading_seq_len(&self.bytes),
            Serializer::Serpent | Serializer::Json | Serializer::Marshal => None,
        }
    }

    /// Decodes the arguments as `T`, the tuple of the parameters called `names`, binding a
    /// Pyro caller's positional and keyword arguments as Python does: positional first, then
    /// by name; a parameter given neither is `None` (so a trailing `Option` may be left out).
    /// Too many arguments, an unknown keyword, a missing argument or a wrong type is an error
    /// that names the parameter. bincode carries positional arguments only.
    pub fn decode_named<T: DeserializeOwned>(&self, names: &[&str]) -> Result<T, Error> {
        if let Some((vargs, kwargs)) = self.tree.as_deref() {
            let bound =
                value::bind(vargs.clone(), kwargs.clone(), names).map_err(|e| Error::Codec(e.0))?;
            return T::deserialize(bound).map_err(|e| Error::Codec(e.0));
        }
        match self.ser {
            Serializer::Bincode => self.decode().map_err(|e| arity(e, names)),
            Serializer::Json => Err(Error::Codec("json arguments without their tree".into())),
            Serializer::MsgPack | Serializer::Serpent | Serializer::Marshal => {
                let (_, _, vargs, kwargs): (IgnoredAny, IgnoredAny, value::Value, value::Value) =
                    self.ser.decode(&self.whole()?, &self.limits)?;
                let bound = value::bind(vargs, kwargs, names).map_err(|e| Error::Codec(e.0))?;
                T::deserialize(bound).map_err(|e| Error::Codec(e.0))
            }
        }
    }

    /// The first positional argument as a string, read without decoding the others: the
    /// property a `__setattr__(name, value)` sets, whose name says how to decode its value.
    pub fn attribute_name(&self) -> Result<String, Error> {
        let first = |vargs: &value::Value| match vargs {
            value::Value::Tuple(items) | value::Value::List(items) => match items.first() {
                Some(value::Value::Str(name)) => Ok(name.clone()),
                _ => Err(Error::Codec(
                    "the first argument must be the attribute's name, a str".into(),
                )),
            },
            _ => Err(Error::Codec(
                "positional arguments must be a tuple or list".into(),
            )),
        };
        if let Some((vargs, _)) = self.tree.as_deref() {
            return first(vargs);
        }
        match self.ser {
            Serializer::Bincode => bincode::leading_str(&self.bytes)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Codec("the first argument must be the attribute's name, a str".into())
                }),
            Serializer::Json => Err(Error::Codec("json arguments without their tree".into())),
            Serializer::MsgPack | Serializer::Serpent | Serializer::Marshal => {
                // (The value is skipped, not read into a tree: it is decoded next, as its type.)
                let (_, _, LeadingStr(name), _): (IgnoredAny, IgnoredAny, LeadingStr, IgnoredAny) =
                    self.ser.decode(&self.whole()?, &self.limits)?;
                Ok(name)
            }
        }
    }

    /// The encoded arguments as one buffer: joined (copied) when they arrived in pieces.
    fn whole(&self) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        let Some(apart) = self.apart.as_deref() else {
            return Ok(std::borrow::Cow::Borrowed(&self.bytes));
        };
        apart.not_moved()?;
        Ok(std::borrow::Cow::Owned(
            frame::join(&self.bytes, &apart.tail).into(),
        ))
    }

    /// [`decode_named`](Self::decode_named), handing a large byte string that arrived in a
    /// buffer of its own (an rmi caller's `Vec<u8>` argument, see
    /// [`FrameReader::split_bulk`](crate::transport::FrameReader::split_bulk)) to the
    /// `serde_bytes::ByteBuf` in `T` that reads it, instead of copying it: what `#[remote]`
    /// servers call for methods with a `Vec<u8>` parameter. Once it has been handed over,
    /// these arguments cannot be decoded again (an error says so).
    pub fn take_named<T: DeserializeOwned>(&mut self, names: &[&str]) -> Result<T, Error> {
        let Some(apart) = self.apart.as_deref_mut().filter(|apart| !apart.moved) else {
            return self.decode_named(names);
        };
        match self.ser {
            Serializer::Bincode => {
                let (decoded, moved) =
                    bincode::decode_pieces(&self.bytes, &mut apart.tail, true, &self.limits);
                // (Moved even when decoding then failed: the bytes went with what was dropped.)
                apart.moved = moved;
                decoded
            }
            Serializer::MsgPack => {
                type Call = (IgnoredAny, IgnoredAny, value::Value, value::Value);
                let Some(decoded) =
                    msgpack::decode_apart::<Call>(&self.bytes, &mut apart.tail, &self.limits)
                else {
                    return self.decode_named(names);
                };
                apart.moved = true;
                let (_, _, vargs, kwargs) = decoded?;
                let bound = value::bind(vargs, kwargs, names).map_err(|e| Error::Codec(e.0))?;
                T::deserialize(bound).map_err(|e| Error::Codec(e.0))
            }
            Serializer::Serpent | Serializer::Marshal | Serializer::Json => {
                self.decode_named(names)
            }
        }
    }

    /// Decodes the arguments as `T` (a tuple of the parameter types), positionally.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if let Some((vargs, kwargs)) = self.tree.as_deref() {
            if *kwargs != value::Value::None {
                NoKwargs::deserialize(kwargs.clone()).map_err(|e| Error::Codec(e.0))?;
            }
            return T::deserialize(vargs.clone()).map_err(|e| Error::Codec(e.0));
        }
        match (self.ser, self.apart.as_deref()) {
            (Serializer::Bincode, Some(apart)) => {
                apart.not_moved()?;
                let mut tail = apart.tail.clone();
                bincode::decode_pieces(&self.bytes, &mut tail, false, &self.limits).0
            }
            (Serializer::Bincode, None) => self.ser.decode(&self.bytes, &self.limits),
            (Serializer::Json, _) => Err(Error::Codec("json arguments without their tree".into())),
            (Serializer::MsgPack | Serializer::Serpent | Serializer::Marshal, _) => {
                let (_, _, args, _): (IgnoredAny, IgnoredAny, T, NoKwargs) =
                    self.ser.decode(&self.whole()?, &self.limits)?;
                Ok(args)
            }
        }
    }
}

/// A bincode caller's arguments that ended before the parameters did, or went on after them,
/// said so with the parameters' names (bincode carries none, so which argument is off is not
/// known), before what bincode said ("size limit", "bytes remaining", a length too large).
fn arity(e: Error, names: &[&str]) -> Error {
    let Error::Codec(text) = &e else {
        return e;
    };
    let params = format!("{} parameters ({})", names.len(), names.join(", "));
    let ran_out = [
        "size limit has been reached",
        "unexpected end",
        "bytes of the payload",
    ];
    if ran_out.iter().any(|says| text.contains(says)) {
        Error::Codec(format!(
            "the arguments end before the {params} do: fewer arguments, or of other \
             types (under bincode every argument must be given: a caller built from another \
             version of the method?): {text}"
        ))
    } else if text.contains("bytes remaining") {
        Error::Codec(format!(
            "more arguments than the {params}, or of other types (a caller built \
             from another version of the method?): {text}"
        ))
    } else {
        e
    }
}

impl Args {
    /// The calls of a `<batch>` in Pyro's format, whose positional arguments are the calls
    /// themselves, each `[method, [args...], {kwargs}]` (what Python's `BatchProxy` sends);
    /// `None` for rmi's own batches (one argument: the list of encoded calls) and under bincode.
    pub fn pyro_batch(&self) -> Result<Option<Vec<BatchCall>>, Error> {
        let vargs = match (self.tree.as_deref(), self.ser) {
            (Some((vargs, _)), _) => vargs.clone(),
            (None, Serializer::Bincode | Serializer::Json) => return Ok(None),
            (None, Serializer::MsgPack | Serializer::Serpent | Serializer::Marshal) => {
                let (_, _, vargs, _): (IgnoredAny, IgnoredAny, value::Value, IgnoredAny) =
                    self.ser.decode(&self.whole()?, &self.limits)?;
                vargs
            }
        };
        let (value::Value::List(calls) | value::Value::Tuple(calls)) = vargs else {
            return Ok(None);
        };
        let is_call = |c: &value::Value| {
            matches!(c, value::Value::List(p) | value::Value::Tuple(p)
                if p.len() == 3 && matches!(p[0], value::Value::Str(_)))
        };
        if !calls.iter().all(is_call) {
            return Ok(None);
        }
        let calls = calls
            .into_iter()
            .map(|call| {
                let (value::Value::List(parts) | value::Value::Tuple(parts)) = call else {
                    unreachable!("checked above")
                };
                let mut parts = parts.into_iter();
                let (Some(value::Value::Str(method)), Some(vargs), Some(kwargs)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    unreachable!("checked above")
                };
                BatchCall {
                    method,
                    args: Args {
                        ser: self.ser,
                        protocol: self.protocol,
                        bytes: Bytes::new(),
                        apart: None,
                        limits: self.limits,
                        tree: Some(Box::new((vargs, kwargs))),
                    },
                }
            })
            .collect();
        Ok(Some(calls))
    }
}

/// Encodes the reply to a batch in Pyro's format: the list of the calls' results (each already
/// encoded in `ser`), the failed one (the last) as Pyro's `_ExceptionWrapper`, which Python's
/// `BatchProxy` raises when it reaches it.
pub fn encode_pyro_batch(
    ser: Serializer,
    protocol: Protocol,
    results: Vec<Result<Vec<u8>, RemoteError>>,
) -> Result<Vec<u8>, Error> {
    let items = results
        .into_iter()
        .map(|r| match r {
            Ok(v) => Ok(v),
            Err(err) => ser.encode_in(
                protocol,
                &exception::ExceptionWrapper {
                    err: &err,
                    pyro4: protocol == Protocol::Pyro4,
                },
            ),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    match ser {
        Serializer::MsgPack => Ok(msgpack::array_of(&items)),
        Serializer::Serpent => Ok(serpent::list_of(&items)),
        Serializer::Json => Ok(json::list_of(&items)),
        Serializer::Marshal => Ok(marshal::list_of(&items)),
        Serializer::Bincode => ser.encode(
            &items
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect::<Vec<_>>(),
        ),
    }
}

/// A value of a reply in a Pyro format, read into Python's shapes and decoded to a Rust type
/// on demand: one result of a batch in Pyro's format.
#[derive(Debug, Clone)]
pub struct PyroValue(value::Value);

impl<'de> Deserialize<'de> for PyroValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        value::Value::deserialize(d).map(PyroValue)
    }
}

impl PyroValue {
    /// The error this result carries when it is Pyro's `_ExceptionWrapper` (the failed call
    /// of a batch).
    pub fn batch_error(&self) -> Option<RemoteError> {
        exception::from_wrapper(&self.0, true)
    }

    /// [`batch_error`](Self::batch_error) from a peer that may not be an rmi daemon: its
    /// `_rmiKind` is believed only if `rmi_peer` (see [`decode_error_from`]).
    pub(crate) fn batch_error_from(&self, rmi_peer: bool) -> Option<RemoteError> {
        exception::from_wrapper(&self.0, rmi_peer)
    }

    /// Decodes the value as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(self.0.clone()).map_err(|e| Error::Codec(e.0))
    }
}

/// One call of a batch in Pyro's format, `[method, [args...], {}]`, ready to be sent as one of
/// the `<batch>` call's arguments (what Python's `BatchProxy` sends).
#[derive(Debug, Clone)]
pub struct PyroCall(value::Value);

impl PyroCall {
    /// The call of `method` with `args` (a tuple), in `ser`, one of the Pyro formats; trailing
    /// `None` arguments are left out, as in any Pyro-format call.
    pub fn new<A: Serialize>(ser: Serializer, method: &str, args: &A) -> Result<Self, Error> {
        Self::new_in(ser, Protocol::Pyro5, method, args)
    }

    /// [`new`](Self::new) for a daemon speaking `protocol`: to a Pyro4 daemon, the class dicts
    /// among the arguments (URIs, proxies) carry Pyro4's class names.
    pub fn new_in<A: Serialize>(
        ser: Serializer,
        protocol: Protocol,
        method: &str,
        args: &A,
    ) -> Result<Self, Error> {
        if ser == Serializer::Bincode {
            return Err(Error::Codec(
                "a batch in Pyro's format needs a Pyro serializer, not bincode".into(),
            ));
        }
        let doc = ser.encode_in(protocol, &(method, trim::Trimmed(args), NoKwargs))?;
        let mut call: value::Value = ser.decode(&doc, &DecodeLimits::default())?;
        // No arguments (`&()`, which serializes as None) is an empty argument list.
        if let value::Value::List(parts) | value::Value::Tuple(parts) = &mut call {
            if let Some(args @ value::Value::None) = parts.get_mut(1) {
                *args = value::Value::List(Vec::new());
            }
        }
        Ok(PyroCall(call))
    }

    /// The name of the method called.
    pub(crate) fn method(&self) -> Option<&str> {
        match &self.0 {
            value::Value::List(parts) | value::Value::Tuple(parts) => match parts.first() {
                Some(value::Value::Str(name)) => Some(name),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Serialize for PyroCall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// [`decode_invoke`] for the daemon: the names are handed to `route` borrowed, for it to
/// copy where it keeps them, instead of sliced out of the payload (two reference counts taken
/// and dropped per call); returns what `route` made and the arguments. `known` is the object
/// id the connection was opened for (or empty): named again, it is not checked again.
///
/// `tail` is the rest of the payload when a reader split it (see
/// [`Message::payload_tail`](crate::protocol::frame::Message::payload_tail)): kept apart for
/// the arguments when the names are all before it, joined to the payload otherwise (where a
/// sender split its payload is never trusted).
pub(crate) fn decode_invoke_with<R>(
    ser: Serializer,
    (mut payload, tail): (Bytes, Option<Vec<Bytes>>),
    limits: &DecodeLimits,
    known: &str,
    route: impl FnOnce(&str, &str) -> R,
) -> Result<(R, Args), Error> {
    let mut apart = None;
    if let Some(tail) = tail {
        match decode_invoke_apart(ser, payload, tail, limits, known) {
            Routed::Apart(args, (object, method)) => return Ok((route(&object, &method), args)),
            Routed::Kept(head, tail) => {
                payload = head;
                apart = Some(Box::new(Apart { tail, moved: false }));
            }
            Routed::Joined(joined) => payload = joined,
        }
    }
    if ser != Serializer::Bincode {
        let invoke = decode_invoke(ser, payload, limits)?;
        return Ok((route(&invoke.object, &invoke.method), invoke.args));
    }
    let (object, method, at) = bincode::route(&payload, known)?;
    let routed = route(object, method);
    bytes::Buf::advance(&mut payload, at);
    let args = Args {
        ser,
        protocol: Protocol::Pyro5,
        bytes: payload,
        apart,
        limits: *limits,
        tree: None,
    };
    Ok((routed, args))
}

/// What [`decode_invoke_apart`] made of a payload in pieces.
enum Routed {
    /// A msgpack call routed from the names before its bin: its arguments, object and method.
    Apart(Args, (String, String)),
    /// The head to route as usual, its tail kept apart (bincode, whose names are all in it).
    Kept(Bytes, Vec<Bytes>),
    /// The pieces joined into one payload, to route as usual.
    Joined(Bytes),
}

/// [`decode_invoke_with`] for a payload in pieces (see [`Routed`]).
#[cold]
fn decode_invoke_apart(
    ser: Serializer,
    payload: Bytes,
    tail: Vec<Bytes>,
    limits: &DecodeLimits,
    known: &str,
) -> Routed {
    match ser {
        Serializer::Bincode if bincode::route(&payload, known).is_ok() => {
            Routed::Kept(payload, tail)
        }
        Serializer::MsgPack => match msgpack::route_apart(&payload, tail[0].len()) {
            Some(names) => {
                let args = Args {
                    ser,
                    protocol: Protocol::Pyro5,
                    bytes: payload,
                    apart: Some(Box::new(Apart { tail, moved: false })),
                    limits: *limits,
                    tree: None,
                };
                Routed::Apart(args, names)
            }
            None => Routed::Joined(frame::join(&payload, &tail)),
        },
        _ => Routed::Joined(frame::join(&payload, &tail)),
    }
}

/// Decodes a payload in pieces (`head`, then each of `tail`: what a reader split where a
/// `BULK` annotation said) as `T`, handing the first piece of `tail` to the byte buffer in `T`
/// that reads exactly it (a `serde_bytes::ByteBuf`), instead of copying it. `None` when the
/// payload must be joined and decoded whole instead (another serializer, or msgpack whose
/// pieces do not fall where a large bin's bytes start).
pub(crate) fn decode_taking<T: DeserializeOwned>(
    ser: Serializer,
    head: &[u8],
    tail: &mut [Bytes],
    limits: &DecodeLimits,
) -> Option<Result<T, Error>> {
    match ser {
        Serializer::Bincode => Some(bincode::decode_pieces(head, tail, true, limits).0),
        Serializer::MsgPack => msgpack::decode_apart(head, tail, limits),
        Serializer::Serpent | Serializer::Json | Serializer::Marshal => None,
    }
}

/// Decodes the routing part of an INVOKE payload; the arguments stay encoded.
pub fn decode_invoke(
    ser: Serializer,
    payload: Bytes,
    limits: &DecodeLimits,
) -> Result<Invoke, Error> {
    let (object, method, bytes) = match ser {
        Serializer::Bincode => bincode::decode_route(payload)?,
        Serializer::MsgPack => {
            let (object, method) = msgpack::decode_route(&payload, limits)?;
            (object.into(), method.into(), payload)
        }
        Serializer::Serpent | Serializer::Marshal => {
            let (object, method, _, _): (String, String, IgnoredAny, IgnoredAny) =
                ser.decode(&payload, limits)?;
            (object.into(), method.into(), payload)
        }
        Serializer::Json => {
            let (object, method, vargs, kwargs) = json::decode_call(&payload, limits)?;
            return Ok(Invoke {
                object: object.into(),
                method: method.into(),
                args: Args {
                    ser,
                    protocol: Protocol::Pyro5,
                    bytes: Bytes::new(),
                    apart: None,
                    limits: *limits,
                    tree: Some(Box::new((vargs, kwargs))),
                },
            });
        }
    };
    Ok(Invoke {
        object,
        method,
        args: Args {
            ser,
            protocol: Protocol::Pyro5,
            bytes,
            apart: None,
            limits: *limits,
            tree: None,
        },
    })
}

/// One result of a batch: the encoded value, or the error that stopped the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BatchItem {
    /// The call's encoded result.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The call failed; later calls did not run.
    Err(RemoteError),
}

impl From<Result<Vec<u8>, RemoteError>> for BatchItem {
    fn from(r: Result<Vec<u8>, RemoteError>) -> Self {
        match r {
            Ok(v) => BatchItem::Ok(v),
            Err(e) => BatchItem::Err(e),
        }
    }
}

/// Encodes a remote error for an exception reply: in Pyro's exception-dict shape for the
/// Pyro formats, msgpack included (so a Python peer raises it), as rmi's own struct under
/// bincode.
pub fn encode_error(ser: Serializer, err: &RemoteError) -> Vec<u8> {
    encode_error_in(ser, Protocol::Pyro5, err)
}

/// Encodes a remote error for an exception reply to a peer speaking `protocol`: as
/// [`encode_error`], with a Pyro4 peer's class names (`Pyro4.errors.NamingError`).
pub fn encode_error_in(ser: Serializer, protocol: Protocol, err: &RemoteError) -> Vec<u8> {
    let encoded = match ser {
        Serializer::Serpent | Serializer::MsgPack | Serializer::Json | Serializer::Marshal => {
            ser.encode_in(protocol, &exception::PyroException(err))
        }
        Serializer::Bincode => ser.encode(err),
    };
    encoded.unwrap_or_else(|e| {
        // A RemoteError is strings only; this cannot fail, but never panic on the reply path.
        ser.encode(&RemoteError::new(
            crate::error::RemoteErrorKind::Other,
            "rmi.Error",
            e.to_string(),
        ))
        .unwrap_or_default()
    })
}

/// Decodes the payload of an exception reply: rmi's own struct, or Pyro's exception dict
/// (from a Python peer, or an rmi peer speaking a Pyro format). It believes the kind of error
/// an exception dict names (`_rmiKind`), as for a reply from an rmi daemon: a Python daemon
/// passes on the kind of an rmi backend's exception it relays, so read those with another
/// kind in mind (proxies do: they believe it only from a daemon that answered the serializer
/// offer).
pub fn decode_error(
    ser: Serializer,
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<RemoteError, Error> {
    decode_error_from(ser, payload, limits, true)
}

/// [`decode_error`] of a reply from a peer known to be an rmi daemon (`rmi_peer`) or not: only
/// an rmi daemon's own kind of error (`_rmiKind`: "unknown object", "bad arguments", which
/// say the call did not run) is believed. A Python daemon relays an rmi backend's exception
/// with every attribute, the kind included, though its own method ran.
pub(crate) fn decode_error_from(
    ser: Serializer,
    payload: &[u8],
    limits: &DecodeLimits,
    rmi_peer: bool,
) -> Result<RemoteError, Error> {
    match ser {
        Serializer::Serpent | Serializer::MsgPack | Serializer::Json | Serializer::Marshal => {
            let value: value::Value = ser.decode(payload, limits)?;
            // (An exception dict is read once, and moved: not copied first for the fallback.)
            if matches!(value.get("__class__"), Some(value::Value::Str(_))) {
                return exception::from_peer(value, rmi_peer)
                    .ok_or_else(|| Error::Codec("an exception without its class".into()));
            }
            serde::Deserialize::deserialize(value).map_err(|e| Error::Codec(e.to_string()))
        }
        Serializer::Bincode => ser.decode(payload, limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Python `BatchProxy` reads: one list, the results in order, and a failed call's
    /// exception last.
    #[test]
    fn a_pyro_batch_is_one_list_of_its_results_in_every_pyro_format() {
        use crate::error::{RemoteError, RemoteErrorKind};
        use value::Value;
        let limits = DecodeLimits::default();
        for ser in [
            Serializer::Serpent,
            Serializer::Json,
            Serializer::Marshal,
            Serializer::MsgPack,
        ] {
            for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
                let items = |xs: &[i64]| {
                    xs.iter()
                        .map(|x| Ok(ser.encode_in(protocol, x).unwrap()))
                        .collect::<Vec<_>>()
                };
                for xs in [&[][..], &[7][..], &[1, -2, 300][..]] {
                    let doc = encode_pyro_batch(ser, protocol, items(xs)).unwrap();
                    let back = ser.decode::<Vec<i64>>(&doc, &limits);
                    assert_eq!(back.unwrap(), xs, "{ser:?} in {protocol:?}");
                }
                let mut results = items(&[5]);
                results.push(Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    "ValueError",
                    "bad",
                )));
                let doc = encode_pyro_batch(ser, protocol, results).unwrap();
                let back = ser.decode::<Vec<Value>>(&doc, &limits).unwrap();
                assert_eq!(back.len(), 2, "{ser:?} in {protocol:?}");
                assert_eq!(back[0], Value::Int(5), "{ser:?} in {protocol:?}");
                let class = match back[1].get("__class__") {
                    Some(Value::Str(class)) => class.clone(),
                    other => panic!("{ser:?} in {protocol:?}: {other:?}"),
                };
                let pyro = if protocol == Protocol::Pyro4 {
                    "Pyro4."
                } else {
                    "Pyro5."
                };
                assert!(
                    class.starts_with(pyro) && class.ends_with("._ExceptionWrapper"),
                    "{ser:?} in {protocol:?}: {class}"
                );
                let exception = back[1].get("exception").expect("the exception");
                assert!(
                    exception.get("__exception__").is_some(),
                    "{ser:?} in {protocol:?}"
                );
            }
        }
    }

    /// `owned` and `borrowed` encode to the same bytes (or both fail) in every serializer and
    /// protocol; every serializer encodes them under Pyro5.
    fn encode_alike(owned: &impl Serialize, borrowed: &impl Serialize) {
        let mut compared = 0;
        for ser in [
            Serializer::Bincode,
            Serializer::MsgPack,
            Serializer::Serpent,
            Serializer::Json,
            Serializer::Marshal,
        ] {
            for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
                let (a, b) = (
                    ser.encode_in(protocol, owned),
                    ser.encode_in(protocol, borrowed),
                );
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{ser:?} in {protocol:?}");
                        compared += 1;
                    }
                    (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{ser:?} in {protocol:?}"),
                }
            }
        }
        assert!(compared >= 5, "only {compared} encodings compared");
    }

    #[test]
    fn a_borrowed_connect_answer_encodes_as_the_owned_one() {
        let owned = ConnectOk {
            handshake: HandshakeData::from("hello"),
            meta: Metadata {
                methods: vec!["welcomeMessage".into(), "ping".into()],
                oneway: vec!["ping".into()],
                attrs: vec![],
            },
        };
        let borrowed = ConnectOkRef {
            handshake: &owned.handshake,
            meta: &owned.meta,
        };
        encode_alike(&owned, &borrowed);
    }

    #[test]
    fn a_borrowed_connect_request_encodes_as_the_owned_one() {
        let owned = ConnectRequest {
            handshake: HandshakeData::from("hello"),
            object: "obj".into(),
        };
        let borrowed = ConnectRequestRef {
            handshake: &owned.handshake,
            object: &owned.object,
        };
        encode_alike(&owned, &borrowed);
    }

    #[test]
    fn a_large_byte_argument_is_left_out_of_the_payload_and_the_wire_is_unchanged() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:9".parse().unwrap();
        for (ser, protocol) in [
            (Serializer::Bincode, Protocol::Pyro5),
            (Serializer::MsgPack, Protocol::Pyro5),
            (Serializer::MsgPack, Protocol::Pyro4),
            (Serializer::Serpent, Protocol::Pyro5),
            (Serializer::Serpent, Protocol::Pyro4),
            (Serializer::Json, Protocol::Pyro5),
            (Serializer::Marshal, Protocol::Pyro5),
        ] {
            for last in [true, false] {
                // A URI on the other side of the bytes: under Pyro4 its class name is Pyro4's.
                let arg = ByteArg::from(big.clone());
                let (head, tail) = if last {
                    encode_invoke_payload(ser, protocol, "o", "m", &(&uri, arg), None::<&()>)
                } else {
                    encode_invoke_payload(ser, protocol, "o", "m", &(arg, &uri), None::<&()>)
                }
                .unwrap();
                let plain = serde_bytes::Bytes::new(&big);
                let want = if last {
                    encode_invoke_in(ser, protocol, "o", "m", &(&uri, plain))
                } else {
                    encode_invoke_in(ser, protocol, "o", "m", &(plain, &uri))
                }
                .unwrap();
                let mut joined = head.to_vec();
                tail.iter()
                    .for_each(|piece| joined.extend_from_slice(piece));
                let case = format!("{ser:?} {protocol:?} last={last}");
                assert!(joined == want, "{case}: the same bytes as a copy");
                let pyro4_name = b"Pyro4.core.URI";
                let named = joined.windows(pyro4_name.len()).any(|w| w == pyro4_name);
                assert_eq!(named, protocol == Protocol::Pyro4, "{case}");
                match (ser, protocol) {
                    (Serializer::Bincode, _) | (Serializer::MsgPack, Protocol::Pyro5) => {
                        assert_eq!(tail[0].len(), big.len(), "{case}: sent on its own");
                        // msgpack's kwargs dict always follows the arguments.
                        let rest = usize::from(!last || ser == Serializer::MsgPack);
                        assert_eq!(tail.len(), 1 + rest, "{case}");
                        assert!(head.len() < 100, "{case}: {} bytes copied", head.len());
                    }
                    // Pyro4's class names are written over the encoding: nothing left out.
                    _ => assert!(tail.is_empty(), "{case}: copied"),
                }
            }
        }
        // Nothing is left out of the next payload.
        let (_, tail) = encode_invoke_payload(
            Serializer::Bincode,
            Protocol::Pyro5,
            "o",
            "m",
            &(big,),
            None::<&()>,
        )
        .unwrap();
        assert!(tail.is_empty(), "a plain Vec<u8> is copied");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Nested {
        Leaf,
        Node(Box<Nested>),
    }

    fn nested(depth: usize) -> Nested {
        let mut n = Nested::Leaf;
        for _ in 0..depth {
            n = Nested::Node(Box::new(n));
        }
        n
    }

    const SERS: [Serializer; 5] = [
        Serializer::Bincode,
        Serializer::MsgPack,
        Serializer::Serpent,
        Serializer::Json,
        Serializer::Marshal,
    ];

    #[test]
    fn invoke_round_trips_in_both_serializers() {
        for ser in SERS {
            let payload =
                encode_invoke(ser, "obj", "welcomeMessage", &("Rashmi".to_string(), 7u32)).unwrap();
            let inv = decode_invoke(ser, payload.into(), &DecodeLimits::default()).unwrap();
            assert_eq!((&*inv.object, &*inv.method), ("obj", "welcomeMessage"));
            let (name, n): (String, u32) = inv.args.decode().unwrap();
            assert_eq!((name.as_str(), n), ("Rashmi", 7));
            assert!(
                inv.args.decode::<(String, String)>().is_err(),
                "wrong types are an error"
            );
        }
    }

    #[test]
    fn a_byte_string_read_apart_is_handed_over_once_and_then_refused_even_after_an_error() {
        let big = serde_bytes::ByteBuf::from(vec![7u8; 1000]);
        let payload = Bytes::from(
            encode_invoke(
                Serializer::Bincode,
                "o",
                "m",
                &("x".to_string(), &big, 5u32),
            )
            .unwrap(),
        );
        // As a reader splits it: the byte string's bytes in a piece of their own.
        let start = payload.len() - 1 - 1000;
        let split = || {
            // (A buffer of its own, as a reader's piece is: so it can be handed over.)
            let own = Bytes::copy_from_slice(&payload[start..start + 1000]);
            let tail = vec![own, payload.slice(start + 1000..)];
            let (_, args) = decode_invoke_with(
                Serializer::Bincode,
                (payload.slice(..start), Some(tail)),
                &DecodeLimits::default(),
                "",
                |_, _| (),
            )
            .unwrap();
            args
        };
        let names = ["name", "data", "n"];
        let mut args = split();
        let at = args.apart.as_ref().unwrap().tail[0].as_ptr();
        let (_, got, n): (String, serde_bytes::ByteBuf, u32) = args.take_named(&names).unwrap();
        assert_eq!((&got, n), (&big, 5));
        assert_eq!(got.as_ptr(), at, "handed over, not copied");
        let again = args.decode::<(String, serde_bytes::ByteBuf, u32)>();
        assert!(again.unwrap_err().to_string().contains("handed over"));
        // Taken by a decode that then failed (the last argument is no string): gone all the
        // same, and a second decode says so rather than reading an empty piece.
        let mut args = split();
        let wrong = args.take_named::<(String, serde_bytes::ByteBuf, String)>(&names);
        assert!(wrong.is_err());
        let again = args.take_named::<(String, serde_bytes::ByteBuf, u32)>(&names);
        assert!(again.unwrap_err().to_string().contains("handed over"));
    }

    #[test]
    fn the_first_arguments_declared_length_is_read_without_decoding() {
        // (serpent has no length prefix: its batches are checked once decoded.)
        for ser in [Serializer::Bincode, Serializer::MsgPack] {
            for n in [0usize, 3, 250, 251, 70_000] {
                let calls = vec![serde_bytes::ByteBuf::from(vec![1u8]); n];
                let payload = encode_invoke(ser, "o", "<batch>", &(calls,)).unwrap();
                let inv = decode_invoke(ser, payload.into(), &DecodeLimits::default()).unwrap();
                assert_eq!(inv.args.leading_seq_len(), Some(n as u64), "{ser:?} {n}");
            }
            // However a peer split the payload off into pieces, wherever it said its byte
            // string starts: the same length, read from the head and the pieces' first bytes.
            let calls = vec![serde_bytes::ByteBuf::from(vec![1u8]); 70_000];
            let payload = Bytes::from(encode_invoke(ser, "o", "<batch>", &(calls,)).unwrap());
            // (bincode: 70,000 two-byte calls after a 5-byte prefix; msgpack is cut nearby.)
            let args_at = payload.len() - 70_000 * 2 - 5;
            for cut in args_at..args_at + 12 {
                for second in [cut + 1, cut + 3, cut + 100] {
                    let tail = vec![payload.slice(cut..second), payload.slice(second..)];
                    let (_, args) = decode_invoke_with(
                        ser,
                        (payload.slice(..cut), Some(tail)),
                        &DecodeLimits::default(),
                        "",
                        |_, _| (),
                    )
                    .unwrap();
                    assert_eq!(args.leading_seq_len(), Some(70_000), "{ser:?} {cut}");
                }
            }
            // Not a sequence, or nothing there: no claim.
            let payload = encode_invoke(ser, "o", "m", &[(); 0]).unwrap();
            let inv = decode_invoke(ser, payload.into(), &DecodeLimits::default()).unwrap();
            assert!(inv.args.leading_seq_len().is_none() || ser == Serializer::Bincode);
        }
    }

    #[test]
    fn remote_errors_travel_in_pyros_shape_under_serpent_and_come_back_whole() {
        let limits = DecodeLimits::default();
        let mut err = RemoteError::new(
            crate::error::RemoteErrorKind::UnknownMethod,
            "builtins.AttributeError",
            "unknown method \"x\"",
        );
        err.chain = vec!["first cause".into()];
        err.object = Some("obj".into());
        err.method = Some("x".into());
        let bytes = encode_error(Serializer::Serpent, &err);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("'__class__':'builtins.AttributeError','__exception__':True,'args':("),
            "{text}"
        );
        let back = decode_error(Serializer::Serpent, &bytes, &limits).unwrap();
        assert_eq!(
            (back.kind, back.type_name.as_str(), back.message.as_str()),
            (err.kind, "builtins.AttributeError", err.message.as_str())
        );
        assert_eq!((back.object, back.method), (err.object, err.method));
        assert!(
            back.chain.iter().any(|l| l.contains("first cause")),
            "{:?}",
            back.chain
        );
        // A class Python cannot rebuild travels as RuntimeError; its kind and class survive for
        // rmi, in every Pyro format.
        let panic = RemoteError::panic("m", "boom");
        for ser in [
            Serializer::Serpent,
            Serializer::Json,
            Serializer::MsgPack,
            Serializer::Marshal,
        ] {
            let bytes = encode_error(ser, &panic);
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("builtins.RuntimeError"), "{ser:?}: {text}");
            let back = decode_error(ser, &bytes, &limits).unwrap();
            assert_eq!(back.type_name, "rmi.Panic", "{ser:?}");
            assert_eq!(back.message, panic.message, "{ser:?}");
            assert_eq!(back.kind, crate::error::RemoteErrorKind::Panic);
        }
        // A Python RuntimeError that merely reads like one stays a RuntimeError.
        let mut python = RemoteError::new(
            crate::error::RemoteErrorKind::Other,
            "builtins.RuntimeError",
            "rmi.Panic: not from rmi",
        );
        python.chain.clear();
        let bytes = encode_error(Serializer::Serpent, &python);
        let back = decode_error(Serializer::Serpent, &bytes, &limits).unwrap();
        assert_eq!(back.type_name, "builtins.RuntimeError");
        // `_rmiClass` counts only on a RuntimeError whose message starts with that class.
        for (class, message, attribute, expected) in [
            ("builtins.RuntimeError", "app.X: boom", "'app.X'", "app.X"),
            (
                "builtins.ValueError",
                "app.X: boom",
                "'app.X'",
                "builtins.ValueError",
            ),
            (
                "builtins.RuntimeError",
                "other: boom",
                "'app.X'",
                "builtins.RuntimeError",
            ),
            (
                "builtins.RuntimeError",
                "app.X: boom",
                "42",
                "builtins.RuntimeError",
            ),
        ] {
            let doc = format!(
                "{{'__class__':'{class}','__exception__':True,'args':('{message}',),\
                 'attributes':{{'_rmiClass':{attribute}}}}}"
            );
            let back = decode_error(Serializer::Serpent, doc.as_bytes(), &limits).unwrap();
            assert_eq!(back.type_name, expected, "{doc}");
        }
        // A class the daemon keeps goes as it is, without `_rmiClass`, even with `__`.
        let mut kept = RemoteError::new(
            crate::error::RemoteErrorKind::Other,
            "__main__.Overdrawn",
            "no",
        );
        kept.keep_class = true;
        let text = String::from_utf8(encode_error(Serializer::Serpent, &kept)).unwrap();
        assert!(text.contains("'__class__':'__main__.Overdrawn'"), "{text}");
        assert!(!text.contains("_rmiClass"), "{text}");
        kept.keep_class = false;
        let text = String::from_utf8(encode_error(Serializer::Serpent, &kept)).unwrap();
        assert!(
            text.contains("'__class__':'builtins.RuntimeError'"),
            "{text}"
        );
        assert!(text.contains("'_rmiClass':'__main__.Overdrawn'"), "{text}");
    }

    #[test]
    fn a_pyro4_peer_gets_pyro4_class_names_and_plain_strings_stay() {
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
        let err = RemoteError::new(
            crate::error::RemoteErrorKind::Resolve,
            "Pyro5.errors.NamingError",
            "unknown name: x",
        );
        for ser in [
            Serializer::Serpent,
            Serializer::MsgPack,
            Serializer::Marshal,
        ] {
            let doc = ser
                .encode_in(Protocol::Pyro4, &(&uri, "Pyro5.core.URI"))
                .unwrap();
            let text = String::from_utf8_lossy(&doc);
            assert!(text.contains("Pyro4.core.URI"), "{ser:?}: {text}");
            assert!(text.contains("Pyro5.core.URI"), "{ser:?}: {text}");
            let doc = encode_error_in(ser, Protocol::Pyro4, &err);
            let text = String::from_utf8_lossy(&doc);
            assert!(text.contains("Pyro4.errors.NamingError"), "{ser:?}: {text}");
            // Pyro5 peers keep Pyro5's names.
            let doc = encode_error(ser, &err);
            assert!(String::from_utf8_lossy(&doc).contains("Pyro5.errors.NamingError"));
            // A Pyro4 error relayed goes to a Pyro5 peer by Pyro5's name (it refuses Pyro4's
            // class as unsupported), and back to a Pyro4 peer by its own.
            let relayed = RemoteError {
                type_name: "Pyro4.errors.NamingError".into(),
                ..err.clone()
            };
            let text = String::from_utf8_lossy(&encode_error(ser, &relayed)).into_owned();
            assert!(text.contains("Pyro5.errors.NamingError"), "{ser:?}: {text}");
            let doc = encode_error_in(ser, Protocol::Pyro4, &relayed);
            let text = String::from_utf8_lossy(&doc);
            assert!(text.contains("Pyro4.errors.NamingError"), "{ser:?}: {text}");
        }
        assert_eq!(
            String::from_utf8(
                Serializer::Serpent
                    .encode_in(Protocol::Pyro4, &uri)
                    .unwrap()
            )
            .unwrap(),
            "# serpent utf-8 python3.2\n{'__class__':'Pyro4.core.URI','state':('PYRO','obj',None,'127.0.0.1',4000)}"
        );
    }

    #[test]
    fn msgpack_invoke_matches_pyro5_capture() {
        // pyro5-wire.md §11.1: 94 af "example.welcome" ae "welcomeMessage" 91 a6 "Rashmi" 80
        let payload = encode_invoke(
            Serializer::MsgPack,
            "example.welcome",
            "welcomeMessage",
            &("Rashmi",),
        )
        .unwrap();
        let mut expected = vec![0x94, 0xaf];
        expected.extend_from_slice(b"example.welcome");
        expected.push(0xae);
        expected.extend_from_slice(b"welcomeMessage");
        expected.extend_from_slice(&[0x91, 0xa6]);
        expected.extend_from_slice(b"Rashmi");
        expected.push(0x80);
        assert_eq!(payload, expected);
    }

    /// `levels` of `Nested` encoded by hand in `ser`: serializing that deep recursively would
    /// itself be the risk.
    fn deep_payload(ser: Serializer, levels: usize) -> Vec<u8> {
        match ser {
            Serializer::Bincode => {
                // varint variant index 1 = Node, `levels` times, then 0 = Leaf.
                let mut v = vec![1u8; levels];
                v.push(0);
                v
            }
            Serializer::MsgPack => {
                let mut v = Vec::new();
                for _ in 0..levels {
                    v.extend_from_slice(&[0x81, 0xa4]);
                    v.extend_from_slice(b"Node");
                }
                v.extend_from_slice(&[0xa4]);
                v.extend_from_slice(b"Leaf");
                v
            }
            Serializer::Serpent => {
                let mut v = serpent::HEADER.as_bytes().to_vec();
                v.extend_from_slice("{'Node':".repeat(levels).as_bytes());
                v.extend_from_slice(b"'Leaf'");
                v.extend_from_slice("}".repeat(levels).as_bytes());
                v
            }
            Serializer::Marshal => {
                let mut v = b"{u\x04\x00\x00\x00Node".repeat(levels);
                v.extend_from_slice(b"u\x04\x00\x00\x00Leaf");
                v.extend_from_slice(&b"0".repeat(levels));
                v
            }
            Serializer::Json => {
                let mut v = "{\"Node\":".repeat(levels).into_bytes();
                v.extend_from_slice(b"\"Leaf\"");
                v.extend_from_slice("}".repeat(levels).as_bytes());
                v
            }
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let limits = DecodeLimits::default();
        for ser in SERS {
            let ok = ser.encode(&nested(100)).unwrap();
            assert_eq!(ser.decode::<Nested>(&ok, &limits).unwrap(), nested(100));
            let deep = deep_payload(ser, 15_000);
            let err = ser
                .decode::<Nested>(&deep, &limits)
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_depth"), "{ser:?}: {err}");
        }
    }

    /// A `max_depth` set as high as it goes ("no limit") is taken as [`MAX_DEPTH_CEILING`]:
    /// on a thread with a tokio worker's stack (2 MiB), in this build's profile, a payload nested
    /// 15,000 deep is refused once the decoder is that deep, not a stack overflow that aborts
    /// the process; nesting well within it decodes.
    #[test]
    fn max_depth_has_a_ceiling_a_workers_stack_holds() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let unlimited = DecodeLimits {
                    max_depth: usize::MAX,
                    ..DecodeLimits::default()
                };
                for ser in SERS {
                    let err = ser
                        .decode::<Nested>(&deep_payload(ser, 15_000), &unlimited)
                        .unwrap_err()
                        .to_string();
                    let said = format!("max_depth ({MAX_DEPTH_CEILING})");
                    assert!(err.contains(&said), "{ser:?}: {err}");
                    let fine = deep_payload(ser, 100);
                    assert_eq!(
                        ser.decode::<Nested>(&fine, &unlimited).unwrap(),
                        nested(100)
                    );
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn impossible_lengths_are_refused() {
        let limits = DecodeLimits::default();
        // bincode varint: 253 = u64 follows; 2^40 elements of () in 9 bytes.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = Serializer::Bincode
            .decode::<Vec<()>>(&bytes, &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("declared length"), "{err}");
        // A string claiming 2^40 bytes in a 10-byte payload.
        let err = Serializer::Bincode
            .decode::<String>(&bytes, &limits)
            .unwrap_err();
        assert!(matches!(err, Error::Codec(_)), "{err}");
        // msgpack array32 claiming 2^32-1 nils.
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff];
        let err = Serializer::MsgPack
            .decode::<Vec<()>>(&bytes, &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("declared length"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for ser in SERS {
            let mut bytes = ser.encode(&5u32).unwrap();
            bytes.push(0);
            assert!(
                ser.decode::<u32>(&bytes, &DecodeLimits::default()).is_err(),
                "{ser:?}"
            );
        }
    }

    #[test]
    fn keyword_arguments_bind_by_parameter_name_in_the_pyro_formats() {
        use std::collections::BTreeMap;
        let limits = DecodeLimits::default();
        for ser in [
            Serializer::MsgPack,
            Serializer::Serpent,
            Serializer::Marshal,
        ] {
            let call = |args: &[&str], kwargs: &[(&str, &str)]| {
                let kwargs: BTreeMap<&str, &str> = kwargs.iter().copied().collect();
                let payload = ser.encode(&("o", "greet", args, kwargs)).unwrap();
                decode_invoke(ser, payload.into(), &limits)
                    .unwrap()
                    .args
                    .decode_named::<(String, Option<String>)>(&["name", "title"])
            };
            assert_eq!(call(&["Ada"], &[]).unwrap(), ("Ada".into(), None));
            assert_eq!(
                call(&[], &[("title", "Dr."), ("name", "Ada")]).unwrap(),
                ("Ada".into(), Some("Dr.".into()))
            );
            let err = |r: Result<(String, Option<String>), Error>| r.unwrap_err().to_string();
            assert!(err(call(&[], &[])).contains("missing argument \"name\""));
            assert!(
                err(call(&["a"], &[("nom", "x")])).contains("unexpected keyword argument \"nom\"")
            );
            assert!(err(call(&["a", "b", "c"], &[])).contains("takes 2 positional arguments but 3"));
            assert!(err(call(&["a"], &[("name", "b")]))
                .contains("multiple values for argument \"name\""));
        }
    }

    #[test]
    fn kwargs_are_refused_when_not_empty() {
        let payload = Serializer::MsgPack
            .encode(&(
                "obj",
                "m",
                ("x",),
                std::collections::BTreeMap::from([("safe", true)]),
            ))
            .unwrap();
        let inv = decode_invoke(
            Serializer::MsgPack,
            payload.into(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let err = inv.args.decode::<(String,)>().unwrap_err().to_string();
        assert!(err.contains("keyword argument \"safe\""), "{err}");
        // Every Pyro format, json's value tree included, refuses them in a positional decode,
        // and takes an empty kwargs dict.
        let kwargs = std::collections::BTreeMap::from([("safe", true)]);
        let none = std::collections::BTreeMap::<&str, bool>::new();
        for ser in &SERS[1..] {
            let decode = |kwargs| {
                let payload =
                    encode_invoke_kwargs_in(*ser, Protocol::Pyro5, "o", "m", &("x",), Some(kwargs))
                        .unwrap();
                decode_invoke(*ser, payload.into(), &DecodeLimits::default())
                    .unwrap()
                    .args
                    .decode::<(String,)>()
            };
            let err = decode(&kwargs).unwrap_err().to_string();
            assert!(err.contains("keyword argument \"safe\""), "{ser:?}: {err}");
            assert_eq!(decode(&none).unwrap(), ("x".to_string(),), "{ser:?}");
        }
    }

    /// bincode has no keyword arguments: an empty map is no keyword arguments (the same bytes
    /// as a call without), and any other is refused with the reason.
    #[test]
    fn bincode_takes_an_empty_kwargs_map_and_refuses_any_other() {
        let call = |kwargs: &std::collections::BTreeMap<&str, u32>| {
            encode_invoke_kwargs_in(
                Serializer::Bincode,
                Protocol::Pyro5,
                "o",
                "m",
                &(1u32,),
                Some(kwargs),
            )
        };
        let plain = encode_invoke(Serializer::Bincode, "o", "m", &(1u32,)).unwrap();
        assert_eq!(call(&Default::default()).unwrap(), plain);
        let err = call(&[("n", 1)].into()).unwrap_err().to_string();
        assert!(
            err.contains("keyword arguments need a Pyro serializer"),
            "{err}"
        );
    }

    /// The documented defaults: 64 MiB messages, 128 levels of nesting; and Pyro's names.
    #[test]
    fn the_default_limits_and_the_serializers_names_are_the_documented_ones() {
        let limits = DecodeLimits::default();
        assert_eq!(limits.max_message_size, 64 * 1024 * 1024);
        assert_eq!(limits.max_depth, 128);
        let names = SERS.map(Serializer::name);
        assert_eq!(names, ["bincode", "msgpack", "serpent", "json", "marshal"]);
        for ser in SERS {
            assert_eq!(Serializer::from_id(ser.id()), Some(ser));
        }
    }

    /// A value's `Serialize` sees [`encoding_for_pyro4`] true exactly while it is encoded for a
    /// Pyro4 peer in a Pyro format, and false again afterwards.
    #[test]
    fn encoding_for_pyro4_is_true_only_inside_an_encoding_for_a_pyro4_peer() {
        struct Probe(std::cell::Cell<Option<bool>>);
        impl Serialize for Probe {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.set(Some(encoding_for_pyro4()));
                s.serialize_unit()
            }
        }
        for ser in SERS {
            for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
                let probe = Probe(std::cell::Cell::new(None));
                ser.encode_in(protocol, &probe).unwrap();
                let pyro4 = protocol == Protocol::Pyro4 && ser != Serializer::Bincode;
                assert_eq!(probe.0.get(), Some(pyro4), "{ser:?} in {protocol:?}");
                assert!(!encoding_for_pyro4(), "{ser:?} in {protocol:?}: left set");
            }
        }
    }

    /// How a daemon refuses a client's serializer before they agree on one: a marshal str, in
    /// the form Python's `marshal.loads` reads, under Pyro4's marshal id; and what a Python
    /// daemon sends (Python 3.11's `marshal.dumps`, interned and with the reference flag) reads
    /// back as its text.
    #[test]
    fn a_connectfail_reason_is_a_marshal_str_as_python_writes_and_reads_it() {
        // marshal.dumps("abc", 2) == bytes.fromhex("7503000000616263")
        assert_eq!(
            encode_marshal_str("abc"),
            (3, vec![0x75, 3, 0, 0, 0, b'a', b'b', b'c'])
        );
        let (_, doc) = encode_marshal_str("unknown serializer é");
        assert_eq!(
            decode_marshal_str(&doc).as_deref(),
            Some("unknown serializer é")
        );
        // marshal.dumps("abc") in Python 3.11
        assert_eq!(
            decode_marshal_str(&[0xda, 3, b'a', b'b', b'c']).as_deref(),
            Some("abc")
        );
        // marshal.dumps(1), and nothing at all: no str.
        assert_eq!(decode_marshal_str(&[0xe9, 1, 0, 0, 0]), None);
        assert_eq!(decode_marshal_str(&[]), None);
    }

    /// The arguments remember who called: the serializer and protocol the result is encoded
    /// for, a Pyro4 caller's class names included, in either of the encoding calls.
    #[test]
    fn arguments_encode_the_result_for_the_callers_serializer_and_protocol() {
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:9".parse().unwrap();
        for ser in SERS {
            let payload = encode_invoke(ser, "o", "m", &(1u32,)).unwrap();
            let args = decode_invoke(ser, payload.into(), &DecodeLimits::default())
                .unwrap()
                .args;
            assert_eq!((args.serializer(), args.protocol()), (ser, Protocol::Pyro5));
            let args = args.in_protocol(Protocol::Pyro4);
            assert_eq!(args.protocol(), Protocol::Pyro4);
            let want = ser.encode_in(Protocol::Pyro4, &uri).unwrap();
            assert_eq!(args.encode(&uri).unwrap(), want, "{ser:?}");
            assert_eq!(&args.encode_bytes(&uri).unwrap()[..], want, "{ser:?}");
            let named = want.windows(14).any(|w| w == b"Pyro4.core.URI");
            assert_eq!(named, ser != Serializer::Bincode, "{ser:?}");
            let back: crate::uri::Uri = ser
                .decode(&args.encode_bytes(&uri).unwrap(), &DecodeLimits::default())
                .unwrap();
            assert_eq!(back, uri, "{ser:?}");
        }
    }

    /// A Python `BatchProxy`'s `<batch>` call reads as its calls, each with its own arguments;
    /// rmi's own batches and arguments of another shape are not taken for one; the reply's
    /// values decode, and the failed call's carries its error.
    #[test]
    fn a_pyro_format_batch_reads_as_its_calls_and_its_results_as_values_or_errors() {
        use crate::error::RemoteErrorKind;
        let limits = DecodeLimits::default();
        for ser in &SERS[1..] {
            let ser = *ser;
            let calls = vec![
                PyroCall::new(ser, "add", &(1i32, 2i32)).unwrap(),
                PyroCall::new(ser, "ping", &()).unwrap(),
            ];
            let payload = encode_invoke(ser, "obj", "<batch>", &calls).unwrap();
            let inv = decode_invoke(ser, payload.into(), &limits).unwrap();
            let got = inv.args.pyro_batch().unwrap().expect("a Pyro batch");
            let methods: Vec<_> = got.iter().map(|c| c.method.as_str()).collect();
            assert_eq!(methods, ["add", "ping"], "{ser:?}");
            assert_eq!(
                got[0].args.decode::<(i32, i32)>().unwrap(),
                (1, 2),
                "{ser:?}"
            );
            let none = got[1].args.decode_named::<[(); 0]>(&[]);
            assert_eq!(none.unwrap(), [(); 0], "{ser:?}");
            // Not calls: rmi's own batch (a list of encoded calls), a call missing its kwargs.
            let rmi_own = (vec![serde_bytes::ByteBuf::from(vec![1u8])],);
            let short = [("add", (1i32,))];
            for payload in [
                encode_invoke(ser, "obj", "<batch>", &rmi_own).unwrap(),
                encode_invoke(ser, "obj", "<batch>", &short).unwrap(),
            ] {
                let inv = decode_invoke(ser, payload.into(), &limits).unwrap();
                assert!(inv.args.pyro_batch().unwrap().is_none(), "{ser:?}");
            }
            assert!(PyroCall::new(Serializer::Bincode, "m", &()).is_err());
            let err = RemoteError::new(RemoteErrorKind::Other, "builtins.ValueError", "bad");
            let results = vec![Ok(ser.encode(&3i64).unwrap()), Err(err)];
            let doc = encode_pyro_batch(ser, Protocol::Pyro5, results).unwrap();
            let values: Vec<PyroValue> = ser.decode(&doc, &limits).unwrap();
            assert!(values[0].batch_error().is_none(), "{ser:?}");
            assert_eq!(values[0].decode::<i64>().unwrap(), 3, "{ser:?}");
            let failed = values[1].batch_error().expect("the failed call's error");
            assert_eq!(
                (failed.type_name.as_str(), failed.message.as_str()),
                ("builtins.ValueError", "bad"),
                "{ser:?}"
            );
        }
        let payload = encode_invoke(Serializer::Bincode, "obj", "<batch>", &(1u8,)).unwrap();
        let inv = decode_invoke(Serializer::Bincode, payload.into(), &limits).unwrap();
        assert!(inv.args.pyro_batch().unwrap().is_none());
    }

    /// However a peer cut its payload into pieces, even inside the names, the call is routed to
    /// the same object and method with the same arguments.
    #[test]
    fn a_payload_cut_anywhere_routes_as_a_whole_one() {
        for ser in SERS {
            let payload =
                Bytes::from(encode_invoke(ser, "object", "method", &(7u32, "x")).unwrap());
            for cut in 1..payload.len() - 1 {
                let tail = vec![payload.slice(cut..cut + 1), payload.slice(cut + 1..)];
                let (names, args) = decode_invoke_with(
                    ser,
                    (payload.slice(..cut), Some(tail)),
                    &DecodeLimits::default(),
                    "",
                    |o, m| (o.to_string(), m.to_string()),
                )
                .unwrap_or_else(|e| panic!("{ser:?} cut at {cut}: {e}"));
                assert_eq!(names, ("object".into(), "method".into()), "{ser:?} {cut}");
                let decoded = args.decode::<(u32, String)>();
                assert_eq!(decoded.unwrap(), (7, "x".into()), "{ser:?} {cut}");
            }
        }
    }

    /// A large byte string a reader split off is handed to the argument or result that reads
    /// it, not copied, under msgpack as under bincode; serpent's text has no such place.
    #[test]
    fn a_byte_string_in_its_own_piece_is_handed_over_under_msgpack_and_bincode() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (head, tail) = encode_invoke_payload(
            Serializer::MsgPack,
            Protocol::Pyro5,
            "o",
            "m",
            &(ByteArg::from(big.clone()),),
            None::<&()>,
        )
        .unwrap();
        // (Pieces of their own, as a reader's are: so they can be handed over.)
        let tail: Vec<Bytes> = tail.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        let at = tail[0].as_ptr();
        let (names, mut args) = decode_invoke_with(
            Serializer::MsgPack,
            (head, Some(tail)),
            &DecodeLimits::default(),
            "",
            |o, m| (o.to_string(), m.to_string()),
        )
        .unwrap();
        assert_eq!(names, ("o".into(), "m".into()));
        let (got,): (serde_bytes::ByteBuf,) = args.take_named(&["data"]).unwrap();
        assert_eq!(got.as_slice(), &big[..]);
        assert_eq!(got.as_ptr(), at, "handed over, not copied");
        let again = args.decode::<(serde_bytes::ByteBuf,)>().unwrap_err();
        assert!(again.to_string().contains("handed over"), "{again}");
        // A result: its length prefix in the head, its bytes in a piece of their own.
        let limits = DecodeLimits::default();
        for ser in [Serializer::Bincode, Serializer::MsgPack] {
            let doc = ser.encode(serde_bytes::Bytes::new(&big)).unwrap();
            let start = doc.len() - big.len();
            let mut tail = vec![Bytes::copy_from_slice(&doc[start..])];
            let at = tail[0].as_ptr();
            let got: serde_bytes::ByteBuf = decode_taking(ser, &doc[..start], &mut tail, &limits)
                .expect("read in pieces")
                .unwrap();
            assert_eq!(got.as_slice(), &big[..], "{ser:?}");
            assert_eq!(got.as_ptr(), at, "{ser:?}: handed over, not copied");
        }
        let doc = Serializer::Serpent.encode(&big).unwrap();
        let taken = decode_taking::<Vec<u8>>(Serializer::Serpent, &doc, &mut [], &limits);
        assert!(taken.is_none(), "serpent is decoded whole");
    }
}
