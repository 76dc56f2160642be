//! The Python-shaped value tree the Pyro formats decode into, and a serde `Deserializer` over it.
//!
//! serpent and json (and msgpack, for the values that need it) read a payload into a [`Value`] within the decode
//! limits (depth, and sizes bounded by the payload), then serde types are deserialized from the
//! tree, as `serde_json::Value` does. Pyro's conventions are understood here, once for every
//! format: bytes arrive as `{'data': <base64>, 'encoding': 'base64'}`, NaN as
//! `{'__class__': 'float', 'value': 'nan'}`, and tuples, lists and sets are all sequences.

use std::fmt::{self, Write as _};

use base64::Engine;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// A Python value, as Pyro's formats carry it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits 128 bits.
    Int(i128),
    /// A larger int, as its decimal digits.
    BigInt(String),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A bytes literal.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A set.
    Set(Vec<Value>),
    /// A dict, in order.
    Dict(Vec<(Value, Value)>),
    /// Bound call arguments: each parameter's name and value (`None`: not given); deserializes
    /// as a tuple whose errors name the parameter.
    Named(Vec<(String, Option<Value>)>),
}

impl Value {
    /// The value of key `name` in a dict.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == name))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of Pyro's base64 dict, if this is one.
    fn base64_bytes(&self) -> Option<Result<Vec<u8>, Error>> {
        let Value::Dict(entries) = self else {
            return None;
        };
        if entries.len() != 2
            || !matches!(self.get("encoding"), Some(Value::Str(e)) if e == "base64")
        {
            return None;
        }
        let Some(Value::Str(data)) = self.get("data") else {
            return None;
        };
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Error(format!("invalid base64 bytes: {e}"))),
        )
    }

    /// True for Pyro's NaN: `{'__class__': 'float', 'value': 'nan'}`.
    fn is_nan_dict(&self) -> bool {
        matches!(self.get("__class__"), Some(Value::Str(c)) if c == "float")
            && matches!(self.get("value"), Some(Value::Str(v)) if v.eq_ignore_ascii_case("nan"))
    }

    /// The real and imaginary parts of Pyro's complex dict, which serpent writes for a complex
    /// number with a NaN part: `{'__class__': 'complex', 'real': …, 'imag': …}`.
    pub(super) fn complex_parts(&self) -> Option<(Value, Value)> {
        let Value::Dict(entries) = self else {
            return None;
        };
        if entries.len() != 3
            || !matches!(self.get("__class__"), Some(Value::Str(c)) if c == "complex")
        {
            return None;
        }
        Some((self.get("real")?.clone(), self.get("imag")?.clone()))
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Set(_) => "a set",
            Value::Dict(_) => "a dict",
            Value::Named(_) => "arguments",
        }
    }
}

/// Why a value tree did not fit the type asked for.
#[derive(Debug)]
pub(crate) struct Error(pub(crate) String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => visitor.visit_i64(i),
                (_, Ok(u)) => visitor.visit_u64(u),
                _ => visitor.visit_i128(i),
            },
            // Beyond 128 bits, an int is offered as what it is on the wire in msgpack, Pyro5's
            // extension 0x31 of its decimal text: the tree reads it back as an int, and anything
            // else refuses it as the wrong type (a str would take the digits).
            Value::BigInt(digits) => match digits.parse::<u128>() {
                Ok(u) => visitor.visit_u128(u),
                Err(_) => visitor.visit_newtype_struct(Value::Tuple(vec![
                    Value::Int(0x31),
                    Value::Bytes(digits.into_bytes()),
                ])),
            },
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            v @ Value::Dict(_) if v.is_nan_dict() => visitor.visit_f64(f64::NAN),
            Value::Dict(entries) => visitor.visit_map(Map {
                entries: entries.into_iter(),
                value: None,
            }),
            Value::Named(params) => visitor.visit_seq(Params(params.into_iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::None => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Some(bytes) = self.base64_bytes() {
            return visitor.visit_byte_buf(bytes?);
        }
        match self {
            Value::Str(s) => visitor.visit_byte_buf(s.into_bytes()),
            other => other.deserialize_any(visitor),
        }
    }

    /// A sequence; Python's bytes (and Pyro's base64 dict) are one of ints, so a `Vec<u8>`
    /// reads them.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // (Each byte is handed over as a `u8`, not made a `Value` first: that cost 32 bytes of
        // memory per byte of a `Vec<u8>` inside an `Option` or a struct.)
        let bytes = match self.base64_bytes() {
            Some(bytes) => bytes?,
            None => match self {
                Value::Bytes(b) => b,
                other => return other.deserialize_any(visitor),
            },
        };
        let mut seq = de::value::SeqDeserializer::new(bytes.into_iter());
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Int(i) => visitor.visit_f64(i as f64),
            // Python's `float(10**40)`; its digits parse as an f64 (infinity past f64::MAX, as
            // Python's would overflow).
            Value::BigInt(digits) => match digits.parse::<f64>() {
                Ok(f) if f.is_finite() => visitor.visit_f64(f),
                _ => Err(Error(format!(
                    "an int of {} digits does not fit a float",
                    digits.len()
                ))),
            },
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            // An empty tuple stands for "nothing" too (Python's `()`).
            Value::None => visitor.visit_unit(),
            Value::Tuple(items) | Value::List(items) if items.is_empty() => visitor.visit_unit(),
            other => Err(Error(format!("expected None, got {}", other.kind()))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Value::Str(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Dict(mut entries) if entries.len() == 1 => {
                let (key, value) = entries.pop().expect("one entry");
                match key {
                    Value::Str(variant) => visitor.visit_enum(Enum { variant, value }),
                    other => Err(Error(format!(
                        "an enum variant's name must be a str, not {}",
                        other.kind()
                    ))),
                }
            }
            other => Err(Error(format!(
                "expected an enum (a str or a one-entry dict), got {}",
                other.kind()
            ))),
        }
    }

    /// A tuple, or an array (`[u8; 32]`, which serde reads as a tuple): Python's bytes read
    /// as one of ints, as for a sequence.
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        tuple_struct map struct identifier ignored_any
    }
}

/// A sequence's elements are read as they are (`SeqDeserializer`, which also refuses elements
/// its reader left over: a Python `(3, 4, 5)` for a Rust `(u32, u32)`).
impl<'de> IntoDeserializer<'de, Error> for Value {
    type Deserializer = Value;

    fn into_deserializer(self) -> Value {
        self
    }
}

/// Bound arguments, each deserialized with its parameter's name on any error.
struct Params(std::vec::IntoIter<(String, Option<Value>)>);

impl<'de> SeqAccess<'de> for Params {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((name, value)) = self.0.next() else {
            return Ok(None);
        };
        // A parameter given no value is None: an Option takes it, anything else says so.
        let missing = value.is_none();
        seed.deserialize(value.unwrap_or(Value::None))
            .map(Some)
            .map_err(|e| {
                Error(if missing {
                    format!("missing argument {name:?}")
                } else {
                    format!("argument {name:?}: {e}")
                })
            })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map {
    entries: std::vec::IntoIter<(Value, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Map {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Key(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(
            self.value
                .take()
                .ok_or_else(|| Error("a value without a key".into()))?,
        )
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Enum {
    variant: String,
    value: Value,
}

impl<'de> EnumAccess<'de> for Enum {
    type Error = Error;
    type Variant = Value;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Value), Error> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, self.value))
    }
}

impl<'de> VariantAccess<'de> for Value {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
}

/// Any self-describing format's value (msgpack's, say) read into the tree.
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::None)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            /// An int of 2**127 up to 2**128 (a [`Value::BigInt`] read again, as serpent's and
            /// marshal's trees are): serde's default refuses it.
            fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
                Ok(i128::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value::Bytes(v))
            }
            /// A msgpack extension (rmp-serde's newtype of tag and data): Pyro5's complex
            /// numbers (0x30, two native f64: the tuple `(real, imag)`), ints beyond 64 bits
            /// (0x31, decimal digits), datetimes (0x32, the POSIX timestamp as a native f64)
            /// and dates (0x33, the proleptic ordinal as a native C long: 8 bytes, or 4 from
            /// Windows).
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                let (tag, data): (i8, serde_bytes::ByteBuf) = serde::Deserialize::deserialize(d)?;
                let eight = |data: &[u8]| -> Result<[u8; 8], D::Error> {
                    data.try_into()
                        .map_err(|_| de::Error::custom("a msgpack extension of the wrong size"))
                };
                match tag {
                    0x31 => {
                        let text = std::str::from_utf8(&data)
                            .ok()
                            .filter(|t| {
                                let digits = t.strip_prefix('-').unwrap_or(t);
                                !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
                            })
                            .ok_or_else(|| de::Error::custom("an invalid int extension"))?;
                        Ok(match text.parse::<i128>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => Value::BigInt(text.to_owned()),
                        })
                    }
                    0x32 => Ok(Value::Float(f64::from_ne_bytes(eight(&data)?))),
                    // A date's ordinal: a C long, 4 bytes on Windows.
                    0x33 if data.len() == 4 => Ok(Value::Int(
                        i32::from_ne_bytes(data[..].try_into().expect("4 bytes")).into(),
                    )),
                    0x33 => Ok(Value::Int(i64::from_ne_bytes(eight(&data)?).into())),
                    // A complex number: two native f64, read as the tuple `(real, imag)`.
                    0x30 if data.len() == 16 => {
                        let (real, imag) = data.split_at(8);
                        Ok(Value::Tuple(vec![
                            Value::Float(f64::from_ne_bytes(eight(real)?)),
                            Value::Float(f64::from_ne_bytes(eight(imag)?)),
                        ]))
                    }
                    other => Err(de::Error::custom(format_args!(
                        "msgpack extension type {other:#x} is not data rmi reads"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Value::Dict(entries))
            }
        }
        d.deserialize_any(Any)
    }
}

/// Binds a call's positional `vargs` and keyword `kwargs` to the parameters called `names`, as
/// Python does; the result deserializes as the parameter tuple, and its errors name the
/// parameter.
pub(crate) fn bind(vargs: Value, kwargs: Value, names: &[&str]) -> Result<Value, Error> {
    let positional = match vargs {
        Value::Tuple(items) | Value::List(items) => items,
        other => {
            return Err(Error(format!(
                "positional arguments must be a tuple or list, not {}",
                other.kind()
            )))
        }
    };
    let mut keywords = match kwargs {
        Value::Dict(entries) => entries,
        Value::None => Vec::new(),
        other => {
            return Err(Error(format!(
                "keyword arguments must be a dict, not {}",
                other.kind()
            )))
        }
    };
    if positional.len() > names.len() {
        return Err(Error(format!(
            "takes {} positional argument{} but {} were given",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            positional.len()
        )));
    }
    let mut bound = Vec::with_capacity(names.len());
    let given = positional.len();
    bound.extend(positional.into_iter().map(Some));
    for name in &names[given..] {
        let at = keywords
            .iter()
            .position(|(k, _)| matches!(k, Value::Str(s) if s == name));
        bound.push(at.map(|at| keywords.swap_remove(at).1));
    }
    if let Some((key, _)) = keywords.first() {
        let shown = match key {
            Value::Str(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let already = names[..given].contains(&shown.as_str());
        return Err(Error(if already {
            format!("got multiple values for argument {shown:?}")
        } else {
            format!("got an unexpected keyword argument {shown:?}")
        }));
    }
    Ok(Value::Named(
        names.iter().map(|n| (*n).to_owned()).zip(bound).collect(),
    ))
}

/// The tree written back out in any format: a Pyro value read from one peer, passed on (a
/// batched call's parts, a Python daemon's batch results).
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
        match self {
            Value::None => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            // Within 64 bits, a 64-bit int: msgpack writes 128-bit ones as bytes.
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(i), _) => s.serialize_i64(i),
                (_, Ok(u)) => s.serialize_u64(u),
                _ => s.serialize_i128(*i),
            },
            Value::BigInt(digits) => match digits.parse::<u128>() {
                Ok(u) => s.serialize_u128(u),
                Err(_) => s.serialize_str(digits),
            },
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(text) => s.serialize_str(text),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Tuple(items) => {
                let mut t = s.serialize_tuple(items.len())?;
                for item in items {
                    t.serialize_element(item)?;
                }
                t.end()
            }
            Value::List(items) | Value::Set(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Dict(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Named(params) => {
                let mut seq = s.serialize_seq(Some(params.len()))?;
                for (_, v) in params {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
        }
    }
}

/// A map key: the value itself, except that a str read as an integer, a float or a bool is
/// parsed, as serde_json does (JSON keys are strings; Pyro's json writes Python's integer keys
/// as strings, rmi's own writer a newtype's, a `u128`'s or a bool's too), within newtypes and
/// options as well.
struct Key(Value);

macro_rules! integer_keys {
    ($($method:ident $visit:ident $ty:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Str(text) => match text.parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Value::Str(text).$method(visitor),
                },
                other => other.$method(visitor),
            }
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for Key {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_any(visitor)
    }

    integer_keys! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_i128 visit_i128 i128;
        deserialize_u128 visit_u128 u128;
        deserialize_bool visit_bool bool;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::None => visitor.visit_none(),
            other => visitor.visit_some(Key(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_seq(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Str(text) => match text.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Value::Str(text).deserialize_f64(visitor),
            },
            other => other.deserialize_f64(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_unit(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    serde::forward_to_deserialize_any! {
        char str string tuple tuple_struct map struct identifier ignored_any
    }
}

/// Writes `value` as Python's `repr` would (near enough for messages and logs).
pub(crate) fn repr(value: &Value, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let items = |f: &mut std::fmt::Formatter<'_>, items: &[Value]| -> std::fmt::Result {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            repr(item, f)?;
        }
        Ok(())
    };
    match value {
        Value::None => f.write_str("None"),
        Value::Bool(true) => f.write_str("True"),
        Value::Bool(false) => f.write_str("False"),
        Value::Int(i) => write!(f, "{i}"),
        Value::BigInt(digits) => f.write_str(digits),
        Value::Float(x) if x.is_nan() => f.write_str("nan"),
        Value::Float(x) if x.is_infinite() => f.write_str(if *x > 0.0 { "inf" } else { "-inf" }),
        Value::Float(x) => write!(f, "{x:?}"),
        Value::Str(text) => {
            f.write_char('\'')?;
            for c in text.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('\'')
        }
        Value::Bytes(bytes) => write!(f, "b'{}'", bytes.escape_ascii()),
        Value::List(list) => {
            f.write_char('[')?;
            items(f, list)?;
            f.write_char(']')
        }
        Value::Tuple(tuple) => {
            f.write_char('(')?;
            items(f, tuple)?;
            f.write_str(if tuple.len() == 1 { ",)" } else { ")" })
        }
        Value::Set(set) if set.is_empty() => f.write_str("set()"),
        Value::Set(set) => {
            f.write_char('{')?;
            items(f, set)?;
            f.write_char('}')
        }
        Value::Dict(entries) => {
            f.write_char('{')?;
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                repr(k, f)?;
                f.write_str(": ")?;
                repr(v, f)?;
            }
            f.write_char('}')
        }
        Value::Named(params) => {
            f.write_char('(')?;
            for (i, (_, v)) in params.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match v {
                    Some(v) => repr(v, f)?,
                    None => f.write_str("None")?,
                }
            }
            f.write_char(')')
        }
    }
}

/// A value shown as Python's `repr` (see [`repr`]).
pub(crate) struct Repr<'a>(pub(crate) &'a Value);

impl std::fmt::Display for Repr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        repr(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;

    use super::Value;

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    /// Python's `area((3, 4, 5))` for a Rust `area(size: (u32, u32))`, through the tree as a
    /// Python call's arguments are read: refused, not cut to `(3, 4)`; an exact fit is read.
    #[test]
    fn elements_left_over_by_their_reader_are_refused() {
        let limits = crate::protocol::codec::DecodeLimits::default();
        let three: (Value,) = super::super::json::decode(b"[[3, 4, 5]]", &limits).unwrap();
        let err = <(u32, u32) as serde::Deserialize>::deserialize(three.0.clone()).unwrap_err();
        assert!(err.to_string().contains("invalid length 3"), "{err}");
        assert!(<[u8; 2] as serde::Deserialize>::deserialize(three.0.clone()).is_err());
        let two = Value::List(vec![Value::Int(3), Value::Int(4)]);
        assert_eq!(
            <(u32, u32) as serde::Deserialize>::deserialize(two).unwrap(),
            (3, 4)
        );
        // Bytes read as a sequence: the same rule, and each byte handed over as a u8.
        let bytes = Value::Bytes(vec![1, 2, 3]);
        assert!(<(u8, u8) as serde::Deserialize>::deserialize(bytes.clone()).is_err());
        assert_eq!(
            <Option<Vec<u8>> as serde::Deserialize>::deserialize(bytes).unwrap(),
            Some(vec![1, 2, 3])
        );
    }

    /// What rmi's JSON writer makes of map keys reads back (JSON keys are strings): a
    /// newtype's, a `u128`'s, a bool's, an option's; and Python's json's `{"5": …}`, `{"true":
    /// …}` read as such keys. (Before, only plain integer types were parsed: rmi could not read
    /// back what it wrote, and a Python client's dict was refused as bad arguments.)
    #[test]
    fn json_map_keys_read_back_as_rmi_wrote_them() {
        use crate::protocol::codec::{DecodeLimits, Serializer};
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord, Debug)]
        struct UserId(u64);
        fn round_trip<T>(value: T)
        where
            T: serde::Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            let json = Serializer::Json;
            let doc = json.encode(&value).unwrap();
            let back: T = json
                .decode(&doc, &DecodeLimits::default())
                .unwrap_or_else(|e| {
                    panic!("{}: {e}", String::from_utf8_lossy(&doc));
                });
            assert_eq!(back, value);
        }
        round_trip(BTreeMap::from([(UserId(5), "x".to_owned())]));
        round_trip(BTreeMap::from([(u128::MAX, 1u8), (7, 2)]));
        round_trip(BTreeMap::from([(i128::MIN, 1u8)]));
        round_trip(BTreeMap::from([(true, 1u8), (false, 0)]));
        round_trip(BTreeMap::from([(Some(3u32), 1u8)]));
        let python = br#"{"5": "x", "6": "y"}"#;
        let users: BTreeMap<UserId, String> = Serializer::Json
            .decode(python, &DecodeLimits::default())
            .unwrap();
        assert_eq!(users.len(), 2);
        let flags: BTreeMap<bool, u8> = Serializer::Json
            .decode(br#"{"true": 1}"#, &DecodeLimits::default())
            .unwrap();
        assert_eq!(flags, BTreeMap::from([(true, 1)]));
    }

    /// A byte array (`[u8; N]`, a digest or a key) takes Python's bytes in each Python
    /// format: serpent's base64 dict, marshal's and msgpack's bytes. (Before, serde asked for a
    /// tuple, which took a sequence only: `digest(hashlib.sha256(x).digest())` was refused.)
    #[test]
    fn a_byte_array_takes_python_bytes_in_every_python_format() {
        use crate::protocol::codec::{DecodeLimits, Serializer};
        let limits = DecodeLimits::default();
        let serpent = b"# serpent utf-8 python3.2\n({'data': 'AQIDBA==', 'encoding': 'base64'},)";
        let (digest,): ([u8; 4],) = Serializer::Serpent.decode(serpent, &limits).unwrap();
        assert_eq!(digest, [1, 2, 3, 4]);
        // marshal.dumps((b'\x01\x02\x03\x04',)): a small tuple of one bytes object.
        let marshal = b")\x01s\x04\x00\x00\x00\x01\x02\x03\x04";
        let (digest,): ([u8; 4],) = Serializer::Marshal.decode(marshal, &limits).unwrap();
        assert_eq!(digest, [1, 2, 3, 4]);
        // msgpack: a one-element array holding bin 8 of four bytes.
        let msgpack = b"\x91\xc4\x04\x01\x02\x03\x04";
        let (digest,): ([u8; 4],) = Serializer::MsgPack.decode(msgpack, &limits).unwrap();
        assert_eq!(digest, [1, 2, 3, 4]);
        // Too few or too many bytes are refused, not cut or padded.
        let short = b"\x91\xc4\x03\x01\x02\x03";
        assert!(Serializer::MsgPack
            .decode::<([u8; 4],)>(short, &limits)
            .is_err());
        let long = b"\x91\xc4\x05\x01\x02\x03\x04\x05";
        assert!(Serializer::MsgPack
            .decode::<([u8; 4],)>(long, &limits)
            .is_err());
    }

    /// An int beyond 128 bits (Python's `10**40`) is an int to the tree and to floats, and the
    /// wrong type for a `String` (which took its digits before).
    #[test]
    fn ints_beyond_128_bits_are_not_strs() {
        let limits = crate::protocol::codec::DecodeLimits::default();
        let digits = "1".repeat(45);
        let doc = format!("[{digits}]");
        let (v,): (Value,) = super::super::json::decode(doc.as_bytes(), &limits).unwrap();
        assert_eq!(v, Value::BigInt(digits.clone()));
        assert_eq!(
            <Value as serde::Deserialize>::deserialize(v.clone()).unwrap(),
            v
        );
        assert!(<String as serde::Deserialize>::deserialize(v.clone()).is_err());
        assert!(<u128 as serde::Deserialize>::deserialize(v.clone()).is_err());
        let f = <f64 as serde::Deserialize>::deserialize(v).unwrap();
        assert!((f / 1.111e44 - 1.0).abs() < 1e-3, "{f}");
        let huge = Value::BigInt("9".repeat(400));
        assert!(<f64 as serde::Deserialize>::deserialize(huge).is_err());
    }

    /// Python's `f(2**127)` through serpent: the tree is read again into the call's arguments,
    /// and an int of 2**127 up to 2**128 must stay one (serde's default visitor refused it).
    #[test]
    fn ints_of_128_bits_read_again_stay_ints() {
        let limits = crate::protocol::codec::DecodeLimits::default();
        let top = "170141183460469231731687303715884105728";
        let doc = format!("({top},)");
        let (v,): (Value,) = super::super::serpent::decode(doc.as_bytes(), &limits).unwrap();
        assert_eq!(v, Value::BigInt(top.into()));
        let (u,): (u128,) = super::super::serpent::decode(doc.as_bytes(), &limits).unwrap();
        assert_eq!(u, 1 << 127);
        let max = Value::BigInt(u128::MAX.to_string());
        assert_eq!(
            <Value as serde::Deserialize>::deserialize(max.clone()).unwrap(),
            max
        );
        assert_eq!(
            <Value as serde::Deserialize>::deserialize(Value::Int(-5)).unwrap(),
            Value::Int(-5)
        );
    }

    fn dict(entries: &[(&str, Value)]) -> Value {
        Value::Dict(entries.iter().map(|(k, v)| (s(k), v.clone())).collect())
    }

    fn read<T: DeserializeOwned>(v: Value) -> Result<T, String> {
        T::deserialize(v).map_err(|e| e.0)
    }

    #[test]
    fn only_pyros_exact_base64_dict_is_bytes() {
        let bytes = dict(&[("data", s("aGk=")), ("encoding", s("base64"))]);
        let got: serde_bytes::ByteBuf = read(bytes.clone()).unwrap();
        assert_eq!(got.as_slice(), b"hi");
        assert_eq!(read::<Vec<u8>>(bytes).unwrap(), b"hi");
        // A third key, or another encoding: a dict like any other, which is no bytes.
        for other in [
            dict(&[
                ("data", s("aGk=")),
                ("encoding", s("base64")),
                ("x", s("y")),
            ]),
            dict(&[("data", s("aGk=")), ("encoding", s("utf-8"))]),
        ] {
            assert!(read::<serde_bytes::ByteBuf>(other.clone()).is_err());
            assert!(read::<BTreeMap<String, String>>(other).is_ok());
        }
        let bad = dict(&[("data", s("not base64!")), ("encoding", s("base64"))]);
        let err = read::<Vec<u8>>(bad).unwrap_err();
        assert!(err.contains("invalid base64"), "{err}");
    }

    #[test]
    fn only_pyros_float_class_dict_is_nan() {
        let nan = dict(&[("__class__", s("float")), ("value", s("NaN"))]);
        assert!(read::<f64>(nan).unwrap().is_nan());
        // Either half alone is an ordinary dict.
        for other in [
            dict(&[("__class__", s("decimal.Decimal")), ("value", s("nan"))]),
            dict(&[("__class__", s("float")), ("value", s("1.5"))]),
        ] {
            assert!(read::<f64>(other.clone()).is_err());
            assert_eq!(read::<BTreeMap<String, String>>(other).unwrap().len(), 2);
        }
    }

    #[test]
    fn an_int_past_i64_reaches_a_visitor_as_a_u64() {
        // An untagged enum buffers what it is given, and has no room for an i128.
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum Number {
            Unsigned(u64),
            Text(String),
        }
        assert_eq!(
            read::<Number>(Value::Int(u64::MAX.into())).unwrap(),
            Number::Unsigned(u64::MAX)
        );
    }

    #[test]
    fn none_and_an_empty_tuple_are_unit_and_nothing_else_is() {
        assert!(read::<()>(Value::None).is_ok());
        assert!(read::<()>(Value::Tuple(vec![])).is_ok());
        assert!(read::<()>(Value::List(vec![])).is_ok());
        let err = read::<()>(Value::List(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(err, "expected None, got a list");
        for (value, kind) in [
            (Value::Bool(true), "a bool"),
            (Value::Int(1), "an int"),
            (Value::BigInt("1".repeat(50)), "an int"),
            (Value::Float(1.0), "a float"),
            (s("x"), "a str"),
            (Value::Bytes(vec![1]), "bytes"),
            (Value::Tuple(vec![Value::None]), "a tuple"),
            (Value::Set(vec![]), "a set"),
            (dict(&[]), "a dict"),
            (Value::Named(vec![]), "arguments"),
        ] {
            assert_eq!(
                read::<()>(value).unwrap_err(),
                format!("expected None, got {kind}")
            );
        }
    }

    #[test]
    fn an_enum_is_a_str_or_a_dict_of_exactly_one_entry() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        enum E {
            A(u8),
            B,
        }
        assert_eq!(read::<E>(s("B")).unwrap(), E::B);
        assert_eq!(read::<E>(dict(&[("A", Value::Int(1))])).unwrap(), E::A(1));
        // A unit variant as a dict holds None (or an empty tuple), nothing else.
        assert_eq!(read::<E>(dict(&[("B", Value::None)])).unwrap(), E::B);
        let err = read::<E>(dict(&[("B", Value::Int(5))])).unwrap_err();
        assert_eq!(err, "expected None, got an int");
        let two = dict(&[("A", Value::Int(1)), ("B", Value::None)]);
        let err = read::<E>(two).unwrap_err();
        assert!(err.contains("a one-entry dict), got a dict"), "{err}");
        let err = read::<E>(Value::Dict(vec![(Value::Int(1), Value::None)])).unwrap_err();
        assert!(err.contains("must be a str, not an int"), "{err}");
    }

    #[test]
    fn pyro5s_msgpack_int_extension_must_be_decimal_digits() {
        // Pyro5's msgpack writes an int beyond 64 bits as extension 0x31 of its decimal text.
        let ext = |text: &str| {
            let mut doc = vec![0xc7, text.len() as u8, 0x31];
            doc.extend_from_slice(text.as_bytes());
            rmp_serde::from_slice::<Value>(&doc)
        };
        assert_eq!(
            ext("-18446744073709551616").unwrap(),
            Value::Int(-(1i128 << 64))
        );
        let big = format!("-{}", "9".repeat(45));
        assert_eq!(ext(&big).unwrap(), Value::BigInt(big.clone()));
        for bad in ["", "-", "12a", "--1", "+1", " 1"] {
            let err = ext(bad).unwrap_err().to_string();
            assert!(err.contains("an invalid int extension"), "{bad:?}: {err}");
        }
    }

    /// Pyro5's msgpack: a complex number is extension 0x30 of two native f64 (read as the tuple
    /// `(real, imag)`); a date's ordinal is a C long, 4 bytes when Python runs on Windows.
    #[test]
    fn pyro5s_msgpack_complex_numbers_and_windows_dates_are_read() {
        // Python: msgpack.packb(complex(1.5, -2), default=Pyro5's) on x86-64.
        let mut complex = vec![0xd8, 0x30];
        complex.extend_from_slice(&1.5f64.to_ne_bytes());
        complex.extend_from_slice(&(-2.0f64).to_ne_bytes());
        assert_eq!(
            rmp_serde::from_slice::<Value>(&complex).unwrap(),
            Value::Tuple(vec![Value::Float(1.5), Value::Float(-2.0)])
        );
        let date = |ordinal: &[u8]| {
            let mut doc = vec![0xc7, ordinal.len() as u8, 0x33];
            doc.extend_from_slice(ordinal);
            rmp_serde::from_slice::<Value>(&doc)
        };
        // date(2026, 12, 1).toordinal() == 739_951
        assert_eq!(
            date(&739_951i64.to_ne_bytes()).unwrap(),
            Value::Int(739_951)
        );
        assert_eq!(
            date(&739_951i32.to_ne_bytes()).unwrap(),
            Value::Int(739_951)
        );
        assert!(date(&[1, 2, 3]).is_err());
    }

    #[test]
    fn arguments_bind_to_parameters_as_python_binds_them() {
        use super::bind;
        let names = ["name", "greeting"];
        let args = |items: Vec<Value>| Value::Tuple(items);
        // Every parameter given by position; some by keyword; the rest left out.
        let all: (String, Option<String>) =
            read(bind(args(vec![s("Ada"), s("Hi")]), Value::None, &names).unwrap()).unwrap();
        assert_eq!(all, ("Ada".into(), Some("Hi".into())));
        let kw = dict(&[("greeting", s("Yo")), ("name", s("Bo"))]);
        let by_keyword: (String, Option<String>) =
            read(bind(args(vec![]), kw, &names).unwrap()).unwrap();
        assert_eq!(by_keyword, ("Bo".into(), Some("Yo".into())));
        let left_out: (String, Option<String>) =
            read(bind(Value::List(vec![s("Cy")]), dict(&[]), &names).unwrap()).unwrap();
        assert_eq!(left_out, ("Cy".into(), None));
        // Python's TypeError wording for each mistake.
        for (vargs, kwargs, want) in [
            (
                args(vec![s("a"), s("b"), s("c")]),
                Value::None,
                "takes 2 positional arguments but 3 were given",
            ),
            (
                args(vec![s("a")]),
                dict(&[("name", s("b"))]),
                "got multiple values for argument \"name\"",
            ),
            (
                args(vec![]),
                dict(&[("colour", s("b"))]),
                "got an unexpected keyword argument \"colour\"",
            ),
            (
                s("a"),
                Value::None,
                "positional arguments must be a tuple or list, not a str",
            ),
            (
                args(vec![]),
                Value::List(vec![]),
                "keyword arguments must be a dict, not a list",
            ),
        ] {
            assert_eq!(bind(vargs, kwargs, &names).unwrap_err().0, want);
        }
        let one = bind(args(vec![s("a"), s("b")]), Value::None, &["x"]).unwrap_err();
        assert_eq!(one.0, "takes 1 positional argument but 2 were given");
        // A parameter with no value is None: an Option takes it, anything else names it.
        let err = read::<(String, String)>(bind(args(vec![s("a")]), Value::None, &names).unwrap())
            .unwrap_err();
        assert_eq!(err, "missing argument \"greeting\"");
        let err =
            read::<(u8, Option<String>)>(bind(args(vec![s("a")]), Value::None, &names).unwrap())
                .unwrap_err();
        assert!(err.starts_with("argument \"name\": "), "{err}");
    }
}
