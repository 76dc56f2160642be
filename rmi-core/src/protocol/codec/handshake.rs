//! Handshake data: what a client sends in its CONNECT (Pyro's `_pyroHandshake`) and what the
//! daemon's validator answers in its CONNECTOK. In the Pyro formats it is any value, read into
//! the value tree; under bincode (rmi to rmi, not self-describing) it is a string, as it always
//! was.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::value::{repr, Value};
use super::{DecodeLimits, Serializer};
use crate::error::Error;

/// Handshake data or a validator's answer: any Python value in the Pyro formats (serpent, json,
/// msgpack, marshal), a string under bincode.
///
/// A string compares equal to a `&str` (`info.data == "hello"`) and displays as its text;
/// other values display as Python would `repr` them (`{'user': 'ada', 'token': 42}`). Read a
/// value with [`as_str`](Self::as_str) or [`decode`](Self::decode); make one from a string
/// (`"welcome".into()`) or from any serde value with [`new`](Self::new).
///
/// Under bincode a value that is not a string is written as its Python `repr` (an rmi proxy's
/// [`validate_handshake`](crate::ProxyBuilder::validate_handshake) sees that text too).
#[derive(Clone, PartialEq)]
pub struct HandshakeData(Value);

impl HandshakeData {
    /// Any serde value as handshake data (a struct or map becomes a dict, a sequence a list).
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let encoded = Serializer::MsgPack.encode(value)?;
        Serializer::MsgPack
            .decode::<Value>(&encoded, &DecodeLimits::default())
            .map(HandshakeData)
    }

    /// The text, when the data is a string (Pyro's default handshake is `"hello"`).
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The data as a `T`, as a call's argument would be read (a dict as a struct or map, bytes
    /// as `Vec<u8>`, a tuple, list or set as a sequence).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(self.0.clone()).map_err(|e| Error::Codec(e.0))
    }
}

impl From<String> for HandshakeData {
    fn from(text: String) -> Self {
        HandshakeData(Value::Str(text))
    }
}

impl From<&str> for HandshakeData {
    fn from(text: &str) -> Self {
        HandshakeData(Value::Str(text.to_owned()))
    }
}

impl PartialEq<str> for HandshakeData {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for HandshakeData {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<String> for HandshakeData {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == Some(other.as_str())
    }
}

/// A string's text; any other value as Python's `repr`.
impl fmt::Display for HandshakeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Value::Str(text) => f.write_str(text),
            other => repr(other, f),
        }
    }
}

/// A string as Rust debugs a `&str` (quoted); any other value as Python's `repr`.
impl fmt::Debug for HandshakeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Value::Str(text) => fmt::Debug::fmt(text, f),
            other => repr(other, f),
        }
    }
}

/// The value in its Pyro shape in the Pyro formats; a string under bincode (not
/// self-describing): the text, or the `repr` of another value.
impl Serialize for HandshakeData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return self.0.serialize(s);
        }
        match &self.0 {
            Value::Str(text) => s.serialize_str(text),
            _ => s.collect_str(self),
        }
    }
}

/// Any value in the Pyro formats; a string under bincode.
impl<'de> Deserialize<'de> for HandshakeData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Value::deserialize(d).map(HandshakeData)
        } else {
            String::deserialize(d).map(HandshakeData::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Protocol;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Login {
        user: String,
        token: i64,
    }

    #[test]
    fn a_string_is_carried_by_bincode_exactly_as_before() {
        let data = HandshakeData::from("hello");
        let as_string = Serializer::Bincode.encode(&"hello".to_owned()).unwrap();
        assert_eq!(Serializer::Bincode.encode(&data).unwrap(), as_string);
        let back: HandshakeData = Serializer::Bincode
            .decode(&as_string, &DecodeLimits::default())
            .unwrap();
        assert_eq!(back, "hello");
        assert_eq!(back.to_string(), "hello");
        assert_eq!(format!("{back:?}"), "\"hello\"");
    }

    #[test]
    fn any_value_travels_in_the_pyro_formats() {
        let login = Login {
            user: "ada".into(),
            token: 42,
        };
        let data = HandshakeData::new(&login).unwrap();
        assert_eq!(data.as_str(), None);
        assert_eq!(data.to_string(), "{'user': 'ada', 'token': 42}");
        for ser in [
            Serializer::Serpent,
            Serializer::Json,
            Serializer::MsgPack,
            Serializer::Marshal,
        ] {
            let bytes = ser.encode_in(Protocol::Pyro5, &data).unwrap();
            let back: HandshakeData = ser.decode(&bytes, &DecodeLimits::default()).unwrap();
            assert_eq!(back.decode::<Login>().unwrap(), login, "{ser:?}");
        }
        // bincode carries its repr.
        let bytes = Serializer::Bincode.encode(&data).unwrap();
        let back: String = Serializer::Bincode
            .decode(&bytes, &DecodeLimits::default())
            .unwrap();
        assert_eq!(back, "{'user': 'ada', 'token': 42}");
    }

    #[test]
    fn values_display_as_python_reprs_them_and_only_strings_equal_text() {
        let list = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Bool(false),
            Value::BigInt("12345678901234567890123456789012345678901".into()),
            Value::Float(1.5),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Str("a\\b\n\r\t\u{1}\u{7f}\u{85}é".into()),
            Value::Bytes(b"\0a\n".to_vec()),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
            Value::Tuple(vec![]),
            Value::Set(vec![]),
            Value::Set(vec![Value::Int(1)]),
            Value::Dict(vec![(
                Value::Str("k".into()),
                Value::List(vec![Value::None]),
            )]),
            Value::Named(vec![("a".into(), Some(Value::Int(3))), ("b".into(), None)]),
        ]);
        // Python 3's repr of the same list (the last item, bound arguments, as a tuple).
        assert_eq!(
            HandshakeData(list).to_string(),
            r"[None, True, False, 12345678901234567890123456789012345678901, 1.5, nan, inf, -inf, 'a\\b\n\r\t\x01\x7f\x85é', b'\x00a\n', (1,), (1, 2), (), set(), {1}, {'k': [None]}, (3, None)]"
        );
        let text = HandshakeData::from("hello");
        let other = HandshakeData(Value::List(vec![Value::Str("hello".into())]));
        let (hello, hell) = (String::from("hello"), String::from("hell"));
        for (data, is_hello) in [(&text, true), (&other, false)] {
            assert_eq!(*data == *"hello", is_hello);
            assert_eq!(*data == "hello", is_hello);
            assert_eq!(*data == hello, is_hello);
            assert!(*data != *"hell" && *data != "hell" && *data != hell);
        }
    }
}
