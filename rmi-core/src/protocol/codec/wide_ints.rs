//! Integers of 128 bits in msgpack as Pyro5 writes them: within 64 bits a msgpack int, beyond
//! it extension 0x31 with the decimal digits.
//!
//! rmp-serde writes every `i128` and `u128` as a 16-byte bin, even `5`: Python reads that as
//! `bytes`, and rmi's own value tree (a Python caller's arguments) as bytes too. [`WideInts`]
//! wraps a serializer and changes only those two methods; everything else, nested values
//! included, goes to the wrapped serializer as it was.

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// Pyro5's msgpack extension type of an int beyond 64 bits (its decimal text).
const INT_EXTENSION: i8 = 0x31;

/// A serializer (or one of its compound parts) that writes wide integers as Pyro5 does.
pub(super) struct WideInts<S>(pub(super) S);

/// A value serialized through [`WideInts`].
struct Wide<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Wide<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(WideInts(s))
    }
}

/// An item of a collected sequence or map, serialized through [`WideInts`]: the same size as
/// the item, so rmp-serde still recognizes a `Vec<u8>`'s items as bytes (it judges by size).
struct WideItem<T>(T);

impl<T: Serialize> Serialize for WideItem<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(WideInts(s))
    }
}

/// `digits` as extension 0x31 (rmp-serde's extension newtype: the tag, then the data).
fn extension<S: Serializer>(s: S, digits: &str) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(
        rmp_serde::MSGPACK_EXT_STRUCT_NAME,
        &(INT_EXTENSION, serde_bytes::Bytes::new(digits.as_bytes())),
    )
}

/// Forwards scalar methods unchanged.
macro_rules! forward {
    ($($method:ident($($ty:ty)?)),* $(,)?) => {
        $(
            fn $method(self $(, v: $ty)?) -> Result<S::Ok, S::Error> {
                self.0.$method($(forward!(@arg v $ty))?)
            }
        )*
    };
    (@arg $v:ident $ty:ty) => { $v };
}

impl<S: Serializer> Serializer for WideInts<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = WideInts<S::SerializeSeq>;
    type SerializeTuple = WideInts<S::SerializeTuple>;
    type SerializeTupleStruct = WideInts<S::SerializeTupleStruct>;
    type SerializeTupleVariant = WideInts<S::SerializeTupleVariant>;
    type SerializeMap = WideInts<S::SerializeMap>;
    type SerializeStruct = WideInts<S::SerializeStruct>;
    type SerializeStructVariant = WideInts<S::SerializeStructVariant>;

    forward! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
        serialize_str(&str), serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
    }

    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => self.0.serialize_i64(i),
            (_, Ok(u)) => self.0.serialize_u64(u),
            _ => extension(self.0, &v.to_string()),
        }
    }

    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        match u64::try_from(v) {
            Ok(u) => self.0.serialize_u64(u),
            Err(_) => extension(self.0, &v.to_string()),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wide(value))
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wide(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wide(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(WideInts)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(WideInts)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(WideInts)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(WideInts)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(WideInts)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(WideInts)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(WideInts)
    }

    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        self.0.collect_seq(iter.into_iter().map(WideItem))
    }

    fn collect_map<K, V, I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        self.0
            .collect_map(iter.into_iter().map(|(k, v)| (WideItem(k), WideItem(v))))
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Forwards a compound part's element methods, each element through [`Wide`].
macro_rules! compound {
    ($trait:ident, $($method:ident($($name:ident: $ty:ty),*)),*) => {
        impl<S: $trait> $trait for WideInts<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            $(
                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $($name: $ty,)*
                    value: &T,
                ) -> Result<(), S::Error> {
                    self.0.$method($($name,)* &Wide(value))
                }
            )*
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element());
compound!(SerializeTuple, serialize_element());
compound!(SerializeTupleStruct, serialize_field());
compound!(SerializeTupleVariant, serialize_field());
compound!(SerializeStruct, serialize_field(key: &'static str));
compound!(SerializeStructVariant, serialize_field(key: &'static str));

impl<S: SerializeMap> SerializeMap for WideInts<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Wide(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Wide(value))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::codec::{decode_invoke, encode_invoke, DecodeLimits};
    use crate::protocol::Serializer;

    /// 128-bit integers in msgpack: small ones are msgpack ints, wide ones Pyro5's extension
    /// 0x31 of their digits; both read back, directly and as a Python caller's arguments
    /// (through the value tree, which took rmp-serde's 16-byte bin for bytes).
    #[test]
    fn wide_integers_go_as_pyro5_writes_them() {
        assert_eq!(Serializer::MsgPack.encode(&5i128).unwrap(), [0x05]);
        assert_eq!(Serializer::MsgPack.encode(&5u128).unwrap(), [0x05]);
        assert_eq!(Serializer::MsgPack.encode(&-1i128).unwrap(), [0xff]);
        let wide = Serializer::MsgPack.encode(&(1u128 << 100)).unwrap();
        let digits = (1u128 << 100).to_string();
        assert_eq!(&wide[..3], [0xc7, digits.len() as u8, 0x31]);
        assert_eq!(&wide[3..], digits.as_bytes());
        let limits = DecodeLimits::default();
        for value in [5u128, 1 << 100, u128::MAX] {
            let back: u128 = Serializer::MsgPack
                .decode(&Serializer::MsgPack.encode(&value).unwrap(), &limits)
                .unwrap();
            assert_eq!(back, value);
        }
        for value in [5i128, -5, i128::MIN, i128::MAX] {
            let payload =
                encode_invoke(Serializer::MsgPack, "o", "f", &(value, Some(value))).unwrap();
            let call = decode_invoke(Serializer::MsgPack, payload.into(), &limits).unwrap();
            let (a, b): (i128, Option<i128>) = call.args.decode_named(&["a", "b"]).unwrap();
            assert_eq!((a, b), (value, Some(value)));
        }
    }
}
