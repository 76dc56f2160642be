//! bincode 1.3.3, rmi's own serializer (id [`Serializer::BINCODE_ID`](super::Serializer::BINCODE_ID)):
//! the only module that names the bincode crate.
//!
//! One pinned configuration (varint integers, little endian), the payload length as the size
//! limit and trailing bytes refused. bincode is not self-describing, so types that need
//! `deserialize_any` (untagged enums, `#[serde(flatten)]`, `skip_serializing_if`) fail at run
//! time under it; msgpack is the answer for those.

use std::cell::RefCell;

use bincode::Options;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};

use super::bounded::{counting_elements, Bounded, Budget};
use super::DecodeLimits;
use crate::error::Error;

/// The one pinned bincode configuration: varint integers, little endian.
fn options() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
}

fn codec_error(e: bincode::Error) -> Error {
    Error::Codec(e.to_string())
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    options().serialize(value).map_err(codec_error)
}

/// Payloads up to this size are encoded into the thread's arena ([`encode_bytes`]).
pub(super) const ARENA_MAX: usize = 4 * 1024;
/// What the arena takes from the allocator at a time. (A payload that lives long keeps its
/// whole chunk; the outbox drops a message's payload once it has copied it into its write
/// buffer, so only payloads waiting for a busy writer do.)
const ARENA_CHUNK: usize = 8 * 1024;

thread_local! {
    /// Small payloads are encoded here and split off: they share a few allocations instead of
    /// taking one each. A chunk is reused once every payload split off it is dropped (a sent
    /// request's is dropped when it is written).
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Encodes `value` as message bytes: a small payload in the thread's arena, without an
/// allocation of its own; a large one (or one encoded while the arena is in use) on its own.
pub(super) fn encode_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    let size = options().serialized_size(value).map_err(codec_error)?;
    // Sized once (bincode's own `serialize` would size the value again).
    // (A large byte argument offered in an `in_place::offering` is left out, for the tail.)
    let on_its_own = || {
        let mut buf = super::in_place::Splitter::new(usize::try_from(size).unwrap_or(0));
        options()
            .serialize_into(&mut buf, value)
            .map(|()| Bytes::from(buf.finish()))
            .map_err(codec_error)
    };
    if size > ARENA_MAX as u64 {
        return on_its_own();
    }
    let encoded = ARENA.with(|arena| {
        let mut arena = arena.try_borrow_mut().ok()?;
        // Empty but for what a `Serialize` that panicked half-way left.
        arena.clear();
        if arena.capacity() < size as usize {
            arena.reserve(ARENA_CHUNK);
        }
        Some(
            match options().serialize_into((&mut *arena).writer(), value) {
                Ok(()) => Ok(arena.split().freeze()),
                Err(e) => {
                    arena.clear();
                    Err(codec_error(e))
                }
            },
        )
    });
    encoded.unwrap_or_else(on_its_own)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    let budget = Budget::new(limits.depth(), bytes.len());
    counting_elements(bytes.len(), || {
        options()
            .with_limit(bytes.len() as u64)
            .reject_trailing_bytes()
            .deserialize_seed(BoundedRoot::<T>::new(budget), bytes)
    })
    .map_err(codec_error)
}

/// Decodes `T` from a payload in pieces: `head`, then each piece of `tail` (a large byte
/// string that arrived in a buffer of its own, then the bytes after it), read as one payload
/// wherever they were split. With `take`, the first piece of `tail` is handed over, not copied,
/// when `T` reads a byte buffer (`serde_bytes::ByteBuf`) of exactly that piece; the piece is
/// then empty, and `true` beside the outcome says so (also when decoding failed after it was
/// taken: the piece went with the value that was given up).
pub(super) fn decode_pieces<T: DeserializeOwned>(
    head: &[u8],
    tail: &mut [Bytes],
    take: bool,
    limits: &DecodeLimits,
) -> (Result<T, Error>, bool) {
    let total = tail.iter().fold(head.len(), |n, piece| n + piece.len());
    let mut segs = Vec::with_capacity(tail.len() + 1);
    segs.push(Seg::Borrowed(head));
    // Where an owned piece the decoder did not take goes back.
    let mut back = None;
    if let Some((first, rest)) = tail.split_first_mut() {
        if take {
            // (No copy: a piece a reader split off is its buffer's only owner.)
            segs.push(Seg::Owned(Vec::from(std::mem::take(first))));
            back = Some(first);
        } else {
            segs.push(Seg::Borrowed(&first[..]));
        }
        segs.extend(rest.iter().map(|piece| Seg::Borrowed(&piece[..])));
    }
    let mut pieces = Pieces {
        segs,
        idx: 0,
        at: 0,
        left: total,
        taken: false,
    };
    let decoded = counting_elements(total, || {
        options()
            .with_limit(total as u64)
            .deserialize_from_custom_seed(
                BoundedRoot::<T>::new(Budget::new(limits.depth(), total)),
                &mut pieces,
            )
    })
    .map_err(codec_error);
    if let (Some(back), Some(Seg::Owned(big))) = (back, pieces.segs.get_mut(1)) {
        if !pieces.taken {
            *back = Bytes::from(std::mem::take(big));
        }
    }
    let decoded = decoded.and_then(|value| match pieces.left {
        0 => Ok(value),
        _ => Err(Error::Codec(
            "Slice had bytes remaining after deserialization".into(),
        )),
    });
    (decoded, pieces.taken)
}

/// One piece of a [`Pieces`] payload.
enum Seg<'a> {
    Borrowed(&'a [u8]),
    /// The large byte string, handed over whole if a byte buffer of exactly its size is read
    /// where it starts.
    Owned(Vec<u8>),
}

impl Seg<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Borrowed(b) => b,
            Seg::Owned(v) => v,
        }
    }
}

/// A payload in pieces, read by bincode as one ([`decode_pieces`]).
struct Pieces<'a> {
    segs: Vec<Seg<'a>>,
    /// The piece being read, and how far.
    idx: usize,
    at: usize,
    /// Bytes not yet read, in all pieces.
    left: usize,
    /// Whether the owned piece was handed over.
    taken: bool,
}

impl<'a> Pieces<'a> {
    /// Moves past finished pieces; the unread part of the current one.
    fn current(&mut self) -> &[u8] {
        while self.idx < self.segs.len() && self.at == self.segs[self.idx].bytes().len() {
            self.idx += 1;
            self.at = 0;
        }
        self.segs
            .get(self.idx)
            .map_or(&[], |seg| &seg.bytes()[self.at..])
    }

    fn eof() -> bincode::Error {
        Box::new(bincode::ErrorKind::Io(
            std::io::ErrorKind::UnexpectedEof.into(),
        ))
    }

    /// The next `len` bytes, copied out (they span pieces).
    fn copy_out(&mut self, len: usize) -> bincode::Result<Vec<u8>> {
        if len > self.left {
            return Err(Self::eof());
        }
        let mut out = vec![0; len];
        std::io::Read::read_exact(self, &mut out).map_err(|_| Self::eof())?;
        Ok(out)
    }

    /// Whether the next `len` bytes lie in the current piece, borrowed for the whole decode.
    fn borrowed(&mut self, len: usize) -> Option<&'a [u8]> {
        self.current();
        let Some(Seg::Borrowed(seg)) = self.segs.get(self.idx) else {
            return None;
        };
        let seg: &'a [u8] = seg;
        let bytes = seg.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        self.left -= len;
        Some(bytes)
    }
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < out.len() {
            let cur = self.current();
            if cur.is_empty() {
                break;
            }
            let n = cur.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&cur[..n]);
            filled += n;
            self.at += n;
            self.left -= n;
        }
        Ok(filled)
    }
}

impl<'a> bincode::BincodeRead<'a> for &mut Pieces<'a> {
    fn forward_read_str<V: serde::de::Visitor<'a>>(
        &mut self,
        length: usize,
        visitor: V,
    ) -> bincode::Result<V::Value> {
        let utf8 = |e| Box::new(bincode::ErrorKind::InvalidUtf8Encoding(e));
        if let Some(bytes) = self.borrowed(length) {
            return visitor.visit_borrowed_str(std::str::from_utf8(bytes).map_err(utf8)?);
        }
        let bytes = self.copy_out(length)?;
        visitor.visit_str(std::str::from_utf8(&bytes).map_err(utf8)?)
    }

    fn get_byte_buffer(&mut self, length: usize) -> bincode::Result<Vec<u8>> {
        self.current();
        if let Some(Seg::Owned(big)) = self.segs.get_mut(self.idx) {
            if self.at == 0 && big.len() == length {
                self.idx += 1;
                self.left -= length;
                self.taken = true;
                return Ok(std::mem::take(big));
            }
        }
        self.copy_out(length)
    }

    fn forward_read_bytes<V: serde::de::Visitor<'a>>(
        &mut self,
        length: usize,
        visitor: V,
    ) -> bincode::Result<V::Value> {
        if let Some(bytes) = self.borrowed(length) {
            return visitor.visit_borrowed_bytes(bytes);
        }
        visitor.visit_bytes(&self.copy_out(length)?)
    }
}

/// Object id and method name of an INVOKE payload, and the argument bytes after them. The
/// names are slices of the payload (validated UTF-8), not copies: a call allocates nothing for
/// them. The arguments are the payload itself, advanced past the names (no reference count
/// taken for them).
pub(super) fn decode_route(mut payload: Bytes) -> Result<(ByteString, ByteString, Bytes), Error> {
    let (object, method, at) = route(&payload, "")?;
    let slice = |name: &str| {
        ByteString::try_from(payload.slice_ref(name.as_bytes())).expect("`route` checked it")
    };
    let (object, method) = (slice(object), slice(method));
    payload.advance(at);
    Ok((object, method, payload))
}

/// The object id and method name of an INVOKE payload, and where the arguments after them
/// start.
///
/// An object id whose bytes are those of `known` (the object the connection was opened for,
/// which nearly every call names) is answered with `known` itself: equal bytes are valid
/// UTF-8, so its check is skipped (about 1 % of a call's instructions).
pub(super) fn route<'a>(
    payload: &'a [u8],
    known: &'a str,
) -> Result<(&'a str, &'a str, usize), Error> {
    let mut at = 0usize;
    let mut name = |what: &str, known: &'a str| -> Result<&'a str, Error> {
        let rest = &payload[at..];
        let truncated = || Error::Codec(format!("the INVOKE payload ends inside the {what}"));
        let len = leading_seq_len(rest).ok_or_else(truncated)?;
        let head = match rest[0] {
            0..=250 => 1,
            251 => 3,
            252 => 5,
            _ => 9,
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| (at + head).checked_add(len))
            .filter(|&end| end <= payload.len())
            .ok_or_else(truncated)?;
        let bytes = &payload[at + head..end];
        at = end;
        if !known.is_empty() && bytes == known.as_bytes() {
            return Ok(known);
        }
        std::str::from_utf8(bytes).map_err(|_| Error::Codec(format!("the {what} is not UTF-8")))
    };
    let object = name("object id", known)?;
    let method = name("method name", "")?;
    Ok((object, method, at))
}

/// The string at the start of `args` (the first argument, if a string).
pub(super) fn leading_str(args: &[u8]) -> Option<&str> {
    let len = usize::try_from(leading_seq_len(args)?).ok()?;
    let prefix: usize = match args.first()? {
        0..=250 => 1,
        251 => 3,
        252 => 5,
        _ => 9,
    };
    std::str::from_utf8(args.get(prefix..prefix.checked_add(len)?)?).ok()
}

/// The varint length prefix at the start of `args` (the first argument's, if a sequence).
pub(super) fn leading_seq_len(args: &[u8]) -> Option<u64> {
    // bincode's varint: < 251 is the value; 251, 252, 253 announce a u16, u32, u64 (LE).
    let (&tag, rest) = args.split_first()?;
    let fixed = |n: usize| -> Option<u64> {
        let bytes = rest.get(..n)?;
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(bytes);
        Some(u64::from_le_bytes(le))
    };
    match tag {
        0..=250 => Some(u64::from(tag)),
        251 => fixed(2),
        252 => fixed(4),
        253 => fixed(8),
        _ => None,
    }
}

/// Seed that deserializes `T` through [`Bounded`], so bincode's top-level entry point (which
/// applies the size limit and the trailing-bytes check) can be used.
struct BoundedRoot<T> {
    budget: Budget,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> BoundedRoot<T> {
    fn new(budget: Budget) -> Self {
        BoundedRoot {
            budget,
            _t: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for BoundedRoot<T> {
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(Bounded {
            inner: d,
            budget: self.budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A megabyte declaring 200,000 vectors of a million `()` each (bincode writes `()` in no
    /// bytes; each length passes the check against the payload's size): 2 × 10^11 elements,
    /// minutes of spinning on the request loop. Refused after a bounded count instead.
    #[test]
    fn nested_collections_of_zero_size_values_are_refused_after_a_bounded_count() {
        let varint_u32 = |n: u32| {
            let mut b = vec![252u8];
            b.extend_from_slice(&n.to_le_bytes());
            b
        };
        let mut payload = varint_u32(200_000);
        for _ in 0..200_000 {
            payload.extend(varint_u32(1_000_000));
        }
        let started = std::time::Instant::now();
        let err = decode::<Vec<Vec<()>>>(&payload, &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("more elements than"), "{err}");
        println!("refused after {:?}", started.elapsed());
        // Zero-size elements the payload's size allows are read.
        let units: Vec<Vec<()>> = decode(
            &encode(&vec![vec![(); 3]; 4]).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(units, vec![vec![(); 3]; 4]);
    }

    #[test]
    fn the_leading_string_is_read_without_the_rest() {
        let short = encode(&("verbose", 1.5f64)).unwrap();
        assert_eq!(leading_str(&short), Some("verbose"));
        let name = "n".repeat(300);
        let long = encode(&(name.as_str(), vec![1u8; 10])).unwrap();
        assert_eq!(leading_str(&long), Some(name.as_str()));
        assert_eq!(leading_str(&long[..100]), None, "cut short");
        assert_eq!(leading_str(&[2, 0xff, 0xfe]), None, "not UTF-8");
        assert_eq!(leading_str(&[]), None);
    }

    #[test]
    fn payloads_from_the_arena_are_each_their_own() {
        // Kept together: each payload keeps its bytes while later ones are encoded.
        let kept: Vec<(u32, String, Bytes)> = (0..2_000u32)
            .map(|i| {
                let text = "x".repeat(i as usize % 300);
                let bytes = encode_bytes(&(i, text.as_str())).unwrap();
                (i, text, bytes)
            })
            .collect();
        for (i, text, bytes) in &kept {
            let back: (u32, String) = decode(bytes, &DecodeLimits::default()).unwrap();
            assert_eq!((&back.0, &back.1), (i, text));
        }
        drop(kept);
        // Encoded and dropped one at a time, past a chunk's worth: reclaimed chunks hold
        // nothing of earlier payloads.
        for i in 0..5_000u32 {
            let bytes = encode_bytes(&(i, "greeting")).unwrap();
            let back: (u32, String) = decode(&bytes, &DecodeLimits::default()).unwrap();
            assert_eq!((back.0, back.1.as_str()), (i, "greeting"));
        }
        // A large payload is encoded on its own, whole.
        let big = vec![7u8; ARENA_MAX * 2];
        let bytes = encode_bytes(&serde_bytes::Bytes::new(&big)).unwrap();
        let back: serde_bytes::ByteBuf = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(back.as_slice(), &big[..]);
    }

    #[test]
    fn a_payload_whose_encoding_panics_leaves_nothing_in_the_arena() {
        struct Panics(std::cell::Cell<bool>);
        impl Serialize for Panics {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                // Sized fine the first time; panics half-way the second.
                let second = self.0.replace(true);
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("written before the panic")?;
                assert!(!second, "panicking half-way");
                t.serialize_element(&1u8)?;
                t.end()
            }
        }
        let panicked = std::panic::catch_unwind(|| encode_bytes(&Panics(Default::default())));
        assert!(panicked.is_err());
        let bytes = encode_bytes(&("obj", "m")).unwrap();
        let (o, m, _) = decode_route(bytes).unwrap();
        assert_eq!((&*o, &*m), ("obj", "m"));
    }

    #[test]
    fn a_payload_that_fails_to_encode_leaves_nothing_in_the_arena() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error as _, SerializeTuple};
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("written before the failure")?;
                t.end()?;
                Err(S::Error::custom("no"))
            }
        }
        assert!(encode_bytes(&Fails).is_err());
        let bytes = encode_bytes(&("obj", "m")).unwrap();
        let (o, m, _) = decode_route(bytes).unwrap();
        assert_eq!((&*o, &*m), ("obj", "m"));
    }

    #[test]
    fn route_names_are_slices_of_the_payload_in_every_varint_width() {
        for len in [0usize, 1, 250, 251, 300, 70_000] {
            let object = "o".repeat(len);
            let payload = Bytes::from(encode(&(object.as_str(), "méthode", 7u8)).unwrap());
            let inside = payload.as_ptr_range();
            let (o, m, args) = decode_route(payload).unwrap();
            assert_eq!((&*o, &*m), (object.as_str(), "méthode"), "{len}");
            assert_eq!(&args[..], &[7], "{len}");
            // Borrowed from the payload, not copied.
            assert!(inside.contains(&m.as_bytes().as_ptr()), "{len}");
            assert!(inside.contains(&args.as_ptr()), "{len}");
        }
    }

    #[test]
    fn a_known_object_id_is_answered_with_the_known_str_and_any_other_is_checked() {
        let payload = encode(&("obj_1", "méthode", 7u8)).unwrap();
        let known = String::from("obj_1");
        let (o, m, at) = route(&payload, &known).unwrap();
        assert!(std::ptr::eq(o, known.as_str()), "the known id itself");
        assert_eq!((o, m, &payload[at..]), ("obj_1", "méthode", &[7u8][..]));
        // Another id (a prefix of the known one, or not UTF-8) is read from the payload.
        let (o, ..) = route(&payload, "obj_10").unwrap();
        assert!(payload.as_ptr_range().contains(&o.as_ptr()));
        assert_eq!(o, "obj_1");
        let mut bad = payload.clone();
        bad[1] = 0xff;
        let err = route(&bad, "obj_1").unwrap_err();
        assert!(err.to_string().contains("object id is not UTF-8"), "{err}");
        // A method name is never taken for the known object id.
        let same = encode(&("x", "x")).unwrap();
        let known = String::from("x");
        let (o, m, _) = route(&same, &known).unwrap();
        assert!(std::ptr::eq(o, known.as_str()));
        assert!(
            same.as_ptr_range().contains(&m.as_ptr()),
            "from the payload"
        );
    }

    #[test]
    fn a_route_cut_short_or_not_utf8_is_an_error() {
        let payload = encode(&("obj", "method")).unwrap();
        for cut in 0..payload.len() {
            let err = decode_route(Bytes::copy_from_slice(&payload[..cut])).unwrap_err();
            assert!(err.to_string().contains("ends inside"), "{cut}: {err}");
        }
        let mut bad = payload.clone();
        bad[1] = 0xff;
        let err = decode_route(Bytes::from(bad)).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        // A length beyond the payload, in the widest varint.
        let mut huge = vec![253];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_route(Bytes::from(huge)).is_err());
        // bincode's u128 markers are no length.
        assert!(decode_route(Bytes::from_static(&[254, 1, 2])).is_err());
        // Each varint width, little endian, and each cut short.
        for (prefix, len) in [
            (&[250u8][..], 250u64),
            (&[251, 0x34, 0x12], 0x1234),
            (&[252, 4, 3, 2, 1], 0x0102_0304),
            (&[253, 8, 7, 6, 5, 4, 3, 2, 1], 0x0102_0304_0506_0708),
        ] {
            assert_eq!(leading_seq_len(prefix), Some(len), "{prefix:?}");
            assert_eq!(
                leading_seq_len(&prefix[..prefix.len() - 1]),
                None,
                "{prefix:?}"
            );
        }
        assert_eq!(leading_seq_len(&[254, 0]), None);
        assert_eq!(leading_seq_len(&[255, 0]), None);
    }

    /// A value with a string, a byte buffer, a number after them and bytes read as a
    /// sequence, as a method's arguments might be.
    type Mixed = (String, serde_bytes::ByteBuf, u32, Vec<u8>);

    fn mixed() -> Mixed {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        (
            "name ✓".into(),
            serde_bytes::ByteBuf::from(bytes),
            77,
            vec![1, 2, 3],
        )
    }

    #[test]
    fn a_payload_in_pieces_decodes_as_one_wherever_it_is_split() {
        let whole = encode(&mixed()).unwrap();
        let limits = DecodeLimits::default();
        for i in (0..=whole.len()).step_by(3) {
            for j in (i..=whole.len()).step_by(11) {
                for take in [false, true] {
                    let mut tail = vec![
                        Bytes::copy_from_slice(&whole[i..j]),
                        Bytes::copy_from_slice(&whole[j..]),
                    ];
                    let (value, _) = decode_pieces::<Mixed>(&whole[..i], &mut tail, take, &limits);
                    assert_eq!(value.unwrap(), mixed(), "split at {i} and {j}, take {take}");
                }
            }
            // Cut short, or with a byte too many, wherever split: refused.
            let mut short = vec![Bytes::copy_from_slice(&whole[i..whole.len() - 1])];
            assert!(
                decode_pieces::<Mixed>(&whole[..i], &mut short, true, &limits)
                    .0
                    .is_err()
            );
            let mut long = vec![
                Bytes::copy_from_slice(&whole[i..]),
                Bytes::from_static(b"+"),
            ];
            let err = decode_pieces::<Mixed>(&whole[..i], &mut long, true, &limits)
                .0
                .unwrap_err();
            assert!(err.to_string().contains("remaining"), "{i}: {err}");
        }
    }

    #[test]
    fn a_byte_buffer_that_is_exactly_the_owned_piece_is_handed_over_and_no_other() {
        let value = mixed();
        let whole = encode(&value).unwrap();
        let start = whole.len() - 300 - 1 - 4; // the u32 (1 byte), the 3-byte sequence (4)
        let end = start + 300;
        assert_eq!(&whole[start..end], &value.1[..]);
        let limits = DecodeLimits::default();
        let big = Bytes::copy_from_slice(&whole[start..end]);
        let at = big.as_ptr();
        let mut tail = vec![big, Bytes::copy_from_slice(&whole[end..])];
        let (got, moved) = decode_pieces::<Mixed>(&whole[..start], &mut tail, true, &limits);
        let got = got.unwrap();
        assert!(moved);
        assert_eq!(got, value);
        assert_eq!(got.1.as_ptr(), at, "the piece's own buffer, not a copy");
        assert!(tail[0].is_empty(), "handed over, so no longer the tail's");
        // Not taken (no byte buffer starts there): the piece goes back whole.
        let big = Bytes::copy_from_slice(&whole[start - 1..end]);
        let mut tail = vec![big.clone(), Bytes::copy_from_slice(&whole[end..])];
        let (got, moved) = decode_pieces::<Mixed>(&whole[..start - 1], &mut tail, true, &limits);
        let got = got.unwrap();
        assert!(!moved);
        assert_eq!(got, value);
        assert_eq!(tail[0], big);
        // A wrong type: an error, and the piece is back too.
        let mut tail = vec![Bytes::copy_from_slice(&whole[start..end])];
        let (wrong, moved) =
            decode_pieces::<(String, u64)>(&whole[..start], &mut tail, true, &limits);
        assert!(wrong.is_err());
        assert!(!moved);
        assert_eq!(&tail[0][..], &value.1[..]);
        // Taken, then a byte too many: an error that still says the piece is gone (it went
        // with the value given up), so no later decode reads the empty piece in its place.
        let mut tail = vec![
            Bytes::copy_from_slice(&whole[start..end]),
            Bytes::copy_from_slice(&whole[end..]),
            Bytes::from_static(b"+"),
        ];
        let (late, moved) = decode_pieces::<Mixed>(&whole[..start], &mut tail, true, &limits);
        assert!(late.unwrap_err().to_string().contains("remaining"));
        assert!(moved, "the piece was handed over before the error");
        assert!(tail[0].is_empty());
    }

    /// Owned types that read a str or bytes through `deserialize_str` / `deserialize_bytes`,
    /// as `url::Url`, `chrono`'s dates and `uuid::Uuid` do (`String` and `ByteBuf` ask for
    /// buffers of their own instead).
    #[derive(Debug, PartialEq, Serialize)]
    struct ViaStr(String);
    #[derive(Debug, PartialEq, Serialize)]
    struct ViaBytes(#[serde(with = "serde_bytes")] Vec<u8>);

    impl<'de> Deserialize<'de> for ViaStr {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = ViaStr;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a str")
                }
                fn visit_str<E>(self, v: &str) -> Result<ViaStr, E> {
                    Ok(ViaStr(v.to_owned()))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for ViaBytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = ViaBytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<ViaBytes, E> {
                    Ok(ViaBytes(v.to_owned()))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    #[test]
    fn strs_bytes_and_buffers_read_from_pieces_are_the_payloads_wherever_it_is_split() {
        // Read in every way bincode reads a length-prefixed run; ending in two empty buffers,
        // so the last reads come after every piece is used up.
        type Runs = (ViaStr, ViaBytes, u8, String, String, serde_bytes::ByteBuf);
        let value = || -> Runs {
            (
                ViaStr("a str ✓".into()),
                ViaBytes(vec![1, 2, 3, 4, 5]),
                9,
                "a String across pieces".into(),
                String::new(),
                serde_bytes::ByteBuf::new(),
            )
        };
        let whole = encode(&value()).unwrap();
        let limits = DecodeLimits::default();
        for i in 0..=whole.len() {
            for j in i..=whole.len() {
                for take in [false, true] {
                    let mut tail = vec![
                        Bytes::copy_from_slice(&whole[i..j]),
                        Bytes::copy_from_slice(&whole[j..]),
                    ];
                    let (got, _) = decode_pieces::<Runs>(&whole[..i], &mut tail, take, &limits);
                    assert_eq!(got.unwrap(), value(), "split at {i} and {j}, take {take}");
                }
            }
        }
    }
}
