//! bincode 1.3.3, rmi's own serializer (id [`Serializer::BINCODE_ID`](super::Serializer::BINCODE_ID)):
//! the only module that names the bincode crate.
//!
//! One pinned configuration (varint integers, little endian), the payload length as the size
//! limit and trailing bytes refused. bincode is not self-describing, so types that need
//! `deserialize_any` (untagged enums, `#[serde(flatten)]`, `skip_serializing_if`) fail at run
//! time under it; msgpack is the answer for those.

use bincode::Options;
use bytes::Bytes;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};

use super::bounded::{Bounded, Budget};
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

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    let budget = Budget::new(limits.max_depth, bytes.len());
    options()
        .with_limit(bytes.len() as u64)
        .reject_trailing_bytes()
        .deserialize_seed(BoundedRoot::<T>::new(budget), bytes)
        .map_err(codec_error)
}

/// Object id and method name of an INVOKE payload, and the argument bytes after them.
pub(super) fn decode_route(payload: &Bytes) -> Result<(String, String, Bytes), Error> {
    let mut rest: &[u8] = payload;
    let (object, method): (String, String) = options()
        .with_limit(payload.len() as u64)
        .allow_trailing_bytes()
        .deserialize_from(&mut rest)
        .map_err(codec_error)?;
    let args = payload.slice(payload.len() - rest.len()..);
    Ok((object, method, args))
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
