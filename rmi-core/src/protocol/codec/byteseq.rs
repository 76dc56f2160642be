//! A `Vec<u8>` (or `&[u8]`) written as bytes by the Pyro-format writers, as rmp-serde's
//! `BytesMode::ForceIterables` does for msgpack: serde hands a sequence to `collect_seq`, which
//! cannot know its item type, so the same guess is made here: items as small as a `u8` or a
//! reference, an iterator as small as a slice's, and a first item that serializes as a `u8`.
//! An empty sequence stays a list.

use serde::ser::{self, Impossible, Serialize};

/// The items of a sequence as bytes when they are all `u8`; else (or when there are none)
/// the items, to be written as a list.
pub(super) fn as_bytes<I>(iter: I) -> Result<Vec<u8>, Vec<I::Item>>
where
    I: IntoIterator,
    I::Item: Serialize,
{
    const SLICE_ITER: usize = std::mem::size_of::<<&[u8] as IntoIterator>::IntoIter>();
    let small_items = std::mem::size_of::<I::Item>() == 1
        || std::mem::size_of::<I::Item>() == std::mem::size_of::<&u8>();
    let iter = iter.into_iter();
    let items: Vec<I::Item> = iter.collect();
    if !small_items
        || std::mem::size_of::<I::IntoIter>() > SLICE_ITER
        || items.first().and_then(u8_of).is_none()
    {
        return Err(items);
    }
    items
        .iter()
        .map(u8_of)
        .collect::<Option<Vec<u8>>>()
        .ok_or(items)
}

fn u8_of<T: Serialize + ?Sized>(item: &T) -> Option<u8> {
    item.serialize(OnlyU8).ok()
}

/// A serializer that accepts a `u8` and nothing else.
struct OnlyU8;

#[derive(Debug)]
struct NotU8;

impl std::fmt::Display for NotU8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a u8")
    }
}

impl std::error::Error for NotU8 {}

impl ser::Error for NotU8 {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        NotU8
    }
}

macro_rules! refuse {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {$(
        fn $method(self, $(_: $ty),*) -> Result<u8, NotU8> {
            Err(NotU8)
        }
    )*};
}

impl ser::Serializer for OnlyU8 {
    type Ok = u8;
    type Error = NotU8;
    type SerializeSeq = Impossible<u8, NotU8>;
    type SerializeTuple = Impossible<u8, NotU8>;
    type SerializeTupleStruct = Impossible<u8, NotU8>;
    type SerializeTupleVariant = Impossible<u8, NotU8>;
    type SerializeMap = Impossible<u8, NotU8>;
    type SerializeStruct = Impossible<u8, NotU8>;
    type SerializeStructVariant = Impossible<u8, NotU8>;

    fn serialize_u8(self, v: u8) -> Result<u8, NotU8> {
        Ok(v)
    }

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotU8> {
        Err(NotU8)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotU8> {
        Err(NotU8)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotU8> {
        Err(NotU8)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotU8> {
        Err(NotU8)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotU8> {
        Err(NotU8)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotU8> {
        Err(NotU8)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotU8> {
        Err(NotU8)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotU8> {
        Err(NotU8)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotU8> {
        Err(NotU8)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotU8> {
        Err(NotU8)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sequences_of_u8_are_bytes() {
        assert_eq!(super::as_bytes(&vec![1u8, 2]), Ok(vec![1, 2]));
        assert_eq!(super::as_bytes(&b"ab"[..]), Ok(b"ab".to_vec()));
        assert!(super::as_bytes(&Vec::<u8>::new()).is_err(), "empty: a list");
        assert!(super::as_bytes(&vec![1u16]).is_err());
        assert!(super::as_bytes(&vec![Some(1u8)]).is_err());
        assert!(super::as_bytes(&vec!["a"]).is_err());
        // Items by value, as a `Serialize` that calls `collect_seq(bytes.iter().copied())`
        // hands them; an i8 or a bool is as small as a u8 and still no byte.
        assert_eq!(super::as_bytes([7u8, 8].iter().copied()), Ok(vec![7, 8]));
        assert!(super::as_bytes([-1i8].iter().copied()).is_err());
        assert!(super::as_bytes([true].iter().copied()).is_err());
        // A newtype or an enum around a u8 is no byte.
        #[derive(serde::Serialize)]
        struct Wrapped(u8);
        #[derive(serde::Serialize)]
        enum Tagged {
            Byte(u8),
        }
        assert!(super::as_bytes(&vec![Wrapped(5)]).is_err());
        assert!(super::as_bytes(&vec![Tagged::Byte(5)]).is_err());
        // Only iterators as small as a slice's: a VecDeque<u8> (whose iterator is two slices')
        // stays a list.
        let deque = std::collections::VecDeque::from([1u8, 2]);
        assert!(super::as_bytes(&deque).is_err());
    }
}
