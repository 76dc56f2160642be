//! Trailing `None` arguments left out of a call in a Pyro format, as a Python caller leaves out
//! arguments that have defaults: `greet("Ada", None)` goes as `greet("Ada")`, so a Python method
//! `greet(name, greeting="Hello")` uses its default, and a Pyro5 name server's
//! `list(prefix=None, regex=None, return_metadata=False)` is not handed five arguments. An rmi
//! daemon reads a left-out trailing `Option` parameter as `None`, so nothing changes for it.
//! A `()` argument travels as `None` too but is never left out: the caller's way to pass a
//! trailing `None` explicitly (to a Python parameter without a default).
//!
//! A probe serializer first finds which elements of the argument tuple are `None` (stopping at
//! the first byte of anything else); the real serializer then sees the tuple without its
//! trailing `None`s. Arguments that are not a tuple are left as they are, except no arguments
//! at all (`&()`), which go as an empty tuple.

use serde::ser::{self, Impossible, Serialize, SerializeTuple, Serializer};

/// An argument tuple without its trailing `None` elements.
pub(super) struct Trimmed<'a, A: ?Sized>(pub(super) &'a A);

impl<A: Serialize + ?Sized> Serialize for Trimmed<'_, A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Ok(nones) = self.0.serialize(TupleProbe) else {
            // No arguments (`&()`, which serde writes as None) are an empty tuple.
            if std::mem::size_of_val(self.0) == 0 {
                return s.serialize_tuple(0)?.end();
            }
            return self.0.serialize(s);
        };
        let keep = nones.iter().rposition(|none| !none).map_or(0, |i| i + 1);
        if keep == nones.len() {
            self.0.serialize(s)
        } else {
            self.0.serialize(Truncate { inner: s, keep })
        }
    }
}

/// Why a probe stopped: the value was not what it looks for.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not probed")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// The methods of a probe that stops at anything but what it looks for.
macro_rules! stop_at {
    ($ok:ty; $($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ok, Stop> { Err(Stop) })*
    };
}

/// The rest of a probe's `Serializer` impl: every compound it does not look into stops.
macro_rules! stop_at_the_rest {
    ($ok:ty) => {
        stop_at!($ok;
            serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
            serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
            serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
            serialize_str(&str), serialize_bytes(&[u8]), serialize_unit(),
            serialize_unit_struct(&'static str),
            serialize_unit_variant(&'static str, u32, &'static str),
        );
        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<$ok, Stop> {
            Err(Stop)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, Stop> {
            Err(Stop)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, Stop> {
            Err(Stop)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
            Err(Stop)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Stop> {
            Err(Stop)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Stop> {
            Err(Stop)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
            Err(Stop)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Stop> {
            Err(Stop)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Stop> {
            Err(Stop)
        }
    };
}

/// Finds whether a value is `None`: `Ok` for `None`, `Err` at once for anything else.
struct IsNone;

impl Serializer for IsNone {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Impossible<(), Stop>;
    type SerializeStructVariant = Impossible<(), Stop>;

    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop)
    }

    stop_at_the_rest!(());
}

/// Finds, for a tuple, which of its elements are `None`; anything else stops.
struct TupleProbe;

/// The elements seen so far: `true` for each `None`.
struct Elements(Vec<bool>);

impl SerializeTuple for Elements {
    type Ok = Vec<bool>;
    type Error = Stop;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        self.0.push(value.serialize(IsNone).is_ok());
        Ok(())
    }

    fn end(self) -> Result<Vec<bool>, Stop> {
        Ok(self.0)
    }
}

impl Serializer for TupleProbe {
    type Ok = Vec<bool>;
    type Error = Stop;
    type SerializeSeq = Impossible<Vec<bool>, Stop>;
    type SerializeTuple = Elements;
    type SerializeTupleStruct = Impossible<Vec<bool>, Stop>;
    type SerializeTupleVariant = Impossible<Vec<bool>, Stop>;
    type SerializeMap = Impossible<Vec<bool>, Stop>;
    type SerializeStruct = Impossible<Vec<bool>, Stop>;
    type SerializeStructVariant = Impossible<Vec<bool>, Stop>;

    fn serialize_none(self) -> Result<Vec<bool>, Stop> {
        Err(Stop)
    }

    fn serialize_tuple(self, len: usize) -> Result<Elements, Stop> {
        Ok(Elements(Vec::with_capacity(len)))
    }

    stop_at_the_rest!(Vec<bool>);
}

/// `inner`, except that a tuple keeps only its first `keep` elements.
struct Truncate<S> {
    inner: S,
    keep: usize,
}

/// A tuple whose elements past `keep` are skipped.
struct TruncatedTuple<T> {
    inner: T,
    keep: usize,
    seen: usize,
}

impl<T: SerializeTuple> SerializeTuple for TruncatedTuple<T> {
    type Ok = T::Ok;
    type Error = T::Error;

    fn serialize_element<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), T::Error> {
        self.seen += 1;
        if self.seen <= self.keep {
            self.inner.serialize_element(value)?;
        }
        Ok(())
    }

    fn end(self) -> Result<T::Ok, T::Error> {
        self.inner.end()
    }
}

/// Methods of [`Truncate`] handed to the inner serializer unchanged.
macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty),* $(,)?) => {
        $(fn $name(self, $($arg: $ty),*) -> Result<$ret, S::Error> {
            self.inner.$name($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Truncate<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = S::SerializeSeq;
    type SerializeTuple = TruncatedTuple<S::SerializeTuple>;
    type SerializeTupleStruct = S::SerializeTupleStruct;
    type SerializeTupleVariant = S::SerializeTupleVariant;
    type SerializeMap = S::SerializeMap;
    type SerializeStruct = S::SerializeStruct;
    type SerializeStructVariant = S::SerializeStructVariant;

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(TruncatedTuple {
            inner: self.inner.serialize_tuple(self.keep)?,
            keep: self.keep,
            seen: 0,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    forward!(
        serialize_bool(v: bool) -> S::Ok,
        serialize_i8(v: i8) -> S::Ok,
        serialize_i16(v: i16) -> S::Ok,
        serialize_i32(v: i32) -> S::Ok,
        serialize_i64(v: i64) -> S::Ok,
        serialize_i128(v: i128) -> S::Ok,
        serialize_u8(v: u8) -> S::Ok,
        serialize_u16(v: u16) -> S::Ok,
        serialize_u32(v: u32) -> S::Ok,
        serialize_u64(v: u64) -> S::Ok,
        serialize_u128(v: u128) -> S::Ok,
        serialize_f32(v: f32) -> S::Ok,
        serialize_f64(v: f64) -> S::Ok,
        serialize_char(v: char) -> S::Ok,
        serialize_str(v: &str) -> S::Ok,
        serialize_bytes(v: &[u8]) -> S::Ok,
        serialize_none() -> S::Ok,
        serialize_unit() -> S::Ok,
        serialize_unit_struct(name: &'static str) -> S::Ok,
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> S::Ok,
        serialize_seq(len: Option<usize>) -> S::SerializeSeq,
        serialize_tuple_struct(name: &'static str, len: usize) -> S::SerializeTupleStruct,
        serialize_tuple_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> S::SerializeTupleVariant,
        serialize_map(len: Option<usize>) -> S::SerializeMap,
        serialize_struct(name: &'static str, len: usize) -> S::SerializeStruct,
        serialize_struct_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> S::SerializeStructVariant,
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(value)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_variant(name, index, variant, value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Serializer as Format;
    use super::Trimmed;

    fn serpent<T: serde::Serialize>(value: &T) -> String {
        let bytes = Format::Serpent.encode(value).unwrap();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    }

    #[test]
    fn trailing_nones_are_left_out_and_nothing_else() {
        assert_eq!(
            serpent(&Trimmed(&("Ada", None::<String>, None::<u32>))),
            "('Ada',)"
        );
        assert_eq!(
            serpent(&Trimmed(&(None::<u32>, 1, None::<u32>))),
            "(None,1)",
            "a None before a value stays"
        );
        assert_eq!(serpent(&Trimmed(&(Some(1), 2))), "(1,2)");
        assert_eq!(
            serpent(&Trimmed(&("k", ()))),
            "('k',None)",
            "() is an explicit None, kept"
        );
        assert_eq!(serpent(&Trimmed(&(None::<u32>,))), "()");
        assert_eq!(serpent(&Trimmed(&[(); 0])), "()");
        assert_eq!(serpent(&Trimmed(&vec![1, 2])), "[1,2]", "not a tuple");
        // Nested tuples and options are values, untouched.
        assert_eq!(
            serpent(&Trimmed(&(("x", None::<u8>), Some(None::<u8>)))),
            serpent(&(("x", None::<u8>), Some(None::<u8>)))
        );
        // msgpack too: the array's length is the kept elements'.
        let packed = Format::MsgPack
            .encode(&Trimmed(&(1u8, None::<u8>)))
            .unwrap();
        assert_eq!(packed, Format::MsgPack.encode(&(1u8,)).unwrap());
    }
}
