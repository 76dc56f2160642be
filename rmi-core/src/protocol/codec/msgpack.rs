//! MessagePack (Pyro5's serializer id 4, rmp-serde): the only module that names rmp-serde.
//!
//! Structs are written with named fields (maps), as Python peers expect; an INVOKE payload is
//! Pyro5's 4-element array `[object, method, [args...], {kwargs}]`.

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::bounded::{Bounded, Budget};
use super::DecodeLimits;
use crate::error::Error;

fn codec_error(e: impl std::fmt::Display) -> Error {
    Error::Codec(e.to_string())
}

/// msgpack is one of Pyro's formats: values take their Pyro shape (`is_human_readable`), so a
/// URI is Pyro's URI class dict and a UUID a string, as Python peers expect.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut ser = rmp_serde::Serializer::new(&mut out)
        .with_struct_map()
        .with_human_readable();
    value.serialize(&mut ser).map_err(codec_error)?;
    Ok(out)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    let mut de = rmp_serde::Deserializer::new(bytes).with_human_readable();
    let value = T::deserialize(Bounded {
        inner: &mut de,
        budget: Budget::new(limits.max_depth, bytes.len()),
    })
    .map_err(codec_error)?;
    let rest = de.get_ref().len();
    if rest != 0 {
        return Err(Error::Codec(format!(
            "{rest} trailing bytes after the value"
        )));
    }
    Ok(value)
}

/// Object id and method name of an INVOKE payload.
///
/// Routing needs only the first two elements; the rest is skipped over the borrowed payload
/// (no copy) and decoded, with the trailing-bytes check, when the arguments are.
pub(super) fn decode_route(
    payload: &Bytes,
    limits: &DecodeLimits,
) -> Result<(String, String), Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]).with_human_readable();
    let (object, method, _, _): (String, String, IgnoredAny, IgnoredAny) =
        Deserialize::deserialize(Bounded {
            inner: &mut de,
            budget: Budget::new(limits.max_depth, payload.len()),
        })
        .map_err(codec_error)?;
    Ok((object, method))
}

/// The array length the first argument declares, in a `[object, method, [args...], kwargs]`
/// INVOKE payload, read from the headers without decoding anything else.
pub(super) fn leading_seq_len(payload: &[u8]) -> Option<u64> {
    let mut rd = payload;
    if rmp::decode::read_array_len(&mut rd).ok()? != 4 {
        return None;
    }
    for _ in 0..2 {
        let len = rmp::decode::read_str_len(&mut rd).ok()? as usize;
        rd = rd.get(len..)?;
    }
    if rmp::decode::read_array_len(&mut rd).ok()? == 0 {
        return None;
    }
    rmp::decode::read_array_len(&mut rd).ok().map(u64::from)
}
