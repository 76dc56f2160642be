//! A serde `Deserializer` wrapper that refuses deep nesting and impossible lengths.
//!
//! Every payload decodes through [`Bounded`]: it counts nesting (sequences, maps, enums, options,
//! newtypes) and fails past `max_depth` instead of overflowing the stack, and it refuses any
//! sequence or map whose declared length exceeds `max_len` (the payload size), so a `Vec<()>`
//! claiming 2^40 elements fails at once instead of spinning. It is format-agnostic; the codec
//! wraps bincode and msgpack deserializers in it.
//!
//! It also hands a byte string that arrived in a buffer of its own to the visitor that reads it
//! ([`with_apart`]): the decoder reads an empty byte string where it belongs, and the visitor
//! gets the buffer by value.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How much nesting is left and the largest believable collection length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    depth_left: usize,
    max_depth: usize,
    max_len: usize,
}

/// Elements (of sequences and maps, at every depth) a decode may read per byte of its payload,
/// beyond [`ELEMENTS_FREE`]: what a value of zero-size elements (`()`, unit structs) needs,
/// which bincode writes in no bytes at all.
const ELEMENTS_PER_BYTE: usize = 8;
/// Elements any decode may read, whatever its payload's size.
const ELEMENTS_FREE: usize = 4096;

thread_local! {
    /// Elements the running decode may still read. Each collection's declared length is
    /// checked against the payload's size, but nested ones multiply: a `Vec<Vec<()>>` of a
    /// megabyte declares 10^11 elements of no bytes each, and its decoding would spin for
    /// minutes on the request loop. Decoding is synchronous, so one count per thread serves.
    static ELEMENTS_LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Takes one element off the running decode's allowance.
#[inline]
fn one_more_element<E: de::Error>() -> Result<(), E> {
    let left = ELEMENTS_LEFT.get();
    if left == 0 {
        return Err(E::custom(
            "more elements than the payload's size allows (nested collections of zero-size values?)",
        ));
    }
    ELEMENTS_LEFT.set(left - 1);
    Ok(())
}

/// Runs `decode`, the decode of a payload of `len` bytes, with its own element allowance (a
/// decode within it has its own too, and leaves this one's as it was).
pub(crate) fn counting_elements<R>(len: usize, decode: impl FnOnce() -> R) -> R {
    /// Puts the allowance of the decode around back, however this one ends.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            ELEMENTS_LEFT.set(self.0);
        }
    }
    let allowance = len
        .saturating_mul(ELEMENTS_PER_BYTE)
        .saturating_add(ELEMENTS_FREE);
    let _restore = Restore(ELEMENTS_LEFT.replace(allowance));
    decode()
}

impl Budget {
    pub(crate) fn new(max_depth: usize, max_len: usize) -> Self {
        Budget {
            depth_left: max_depth,
            max_depth,
            max_len,
        }
    }

    fn deeper<E: de::Error>(self) -> Result<Budget, E> {
        if self.depth_left == 0 {
            return Err(E::custom(format_args!(
                "value nested deeper than max_depth ({})",
                self.max_depth
            )));
        }
        Ok(Budget {
            depth_left: self.depth_left - 1,
            ..self
        })
    }

    /// Counts an element of a collection at this depth against the decode's allowance. Those
    /// of the outermost collection (a call's argument tuple, say) are not counted: its length
    /// is checked against the payload's size, and only nested ones multiply. (So a call's
    /// arguments cost nothing here.)
    #[inline]
    fn count_element<E: de::Error>(self) -> Result<(), E> {
        if self.depth_left + 1 >= self.max_depth {
            return Ok(());
        }
        one_more_element()
    }

    fn check_len<E: de::Error>(self, len: Option<usize>) -> Result<(), E> {
        match len {
            Some(n) if n > self.max_len => Err(E::custom(format_args!(
                "declared length {n} is larger than the {} bytes of the payload",
                self.max_len
            ))),
            _ => Ok(()),
        }
    }
}

thread_local! {
    /// The address of the empty byte string the running [`with_apart`] stands its buffer for
    /// (0: none); kept to a `Cell` so that other byte strings pay one comparison.
    static APART_AT: Cell<usize> = const { Cell::new(0) };
    static APART: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `decode`, in which the empty byte string read at `at` (and only there) is handed to its
/// visitor as `buf`, by value; returns what `decode` returned, and `buf` if no visitor took it.
pub(crate) fn with_apart<R>(
    at: *const u8,
    buf: Vec<u8>,
    decode: impl FnOnce() -> R,
) -> (R, Option<Vec<u8>>) {
    /// Leaves the thread with no buffer apart, however `decode` ends.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            APART_AT.set(0);
            APART.take();
        }
    }
    APART.set(Some(buf));
    APART_AT.set(at as usize);
    let _clear = Clear;
    let decoded = decode();
    (decoded, APART.take())
}

/// The buffer of the running [`with_apart`], when `v` is its empty byte string.
fn apart(v: &[u8]) -> Option<Vec<u8>> {
    let at = APART_AT.get();
    if at == 0 || !v.is_empty() || v.as_ptr() as usize != at {
        return None;
    }
    APART_AT.set(0);
    APART.take()
}

/// The wrapping deserializer.
pub(crate) struct Bounded<D> {
    pub(crate) inner: D,
    pub(crate) budget: Budget,
}

struct BoundedVisitor<V> {
    inner: V,
    budget: Budget,
    /// The length of the tuple (or array) asked for: bytes read as its elements (msgpack's
    /// bin for a `[u8; 4]`, which rmp-serde hands over as a sequence without checking that it
    /// was read to its end) must have exactly as many.
    tuple_len: Option<usize>,
}

struct BoundedSeed<S> {
    inner: S,
    budget: Budget,
}

struct BoundedAccess<A> {
    inner: A,
    budget: Budget,
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(BoundedVisitor { inner: visitor, budget: self.budget, tuple_len: None })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(
            name,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(
            name,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(
            len,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: Some(len),
            },
        )
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(
            name,
            len,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(
            name,
            fields,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(
            name,
            variants,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for BoundedVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64, visit_i128: i128,
        visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64, visit_u128: u128,
        visit_f32: f32, visit_f64: f64, visit_char: char,
        visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
        visit_byte_buf: Vec<u8>,
    );

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match apart(v) {
            Some(buf) => self.inner.visit_byte_buf(buf),
            None => self.inner.visit_bytes(v),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        match apart(v) {
            Some(buf) => self.inner.visit_byte_buf(buf),
            None => self.inner.visit_borrowed_bytes(v),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let budget = self.budget.deeper()?;
        self.inner.visit_some(Bounded { inner: d, budget })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let budget = self.budget.deeper()?;
        self.inner
            .visit_newtype_struct(Bounded { inner: d, budget })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.deeper()?;
        budget.check_len(seq.size_hint())?;
        if let (Some(want), Some(given)) = (self.tuple_len, seq.size_hint()) {
            if want != given {
                return Err(de::Error::invalid_length(given, &self));
            }
        }
        self.inner.visit_seq(BoundedAccess { inner: seq, budget })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.deeper()?;
        budget.check_len(map.size_hint())?;
        self.inner.visit_map(BoundedAccess { inner: map, budget })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.deeper()?;
        self.inner.visit_enum(BoundedAccess {
            inner: data,
            budget,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for BoundedSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Bounded {
            inner: d,
            budget: self.budget,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for BoundedAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.budget.count_element()?;
        self.inner.next_element_seed(BoundedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BoundedAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.budget.count_element()?;
        self.inner.next_key_seed(BoundedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(BoundedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for BoundedAccess<A> {
    type Error = A::Error;
    type Variant = BoundedAccess<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let budget = self.budget;
        let (value, variant) = self.inner.variant_seed(BoundedSeed {
            inner: seed,
            budget,
        })?;
        Ok((
            value,
            BoundedAccess {
                inner: variant,
                budget,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for BoundedAccess<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(BoundedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            BoundedVisitor {
                inner: visitor,
                budget: self.budget,
                tuple_len: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the deserializer it was read from said it is human-readable, and the size
    /// hint of the sequence it was read from.
    #[derive(Debug, PartialEq)]
    struct Seen {
        human_readable: bool,
        size_hint: Option<usize>,
    }

    impl<'de> serde::Deserialize<'de> for Seen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seen, D::Error> {
            struct V(bool);
            impl<'de> Visitor<'de> for V {
                type Value = Seen;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a sequence or a map")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
                    let size_hint = seq.size_hint();
                    while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                    Ok(Seen {
                        human_readable: self.0,
                        size_hint,
                    })
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
                    let size_hint = map.size_hint();
                    while map
                        .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                        .is_some()
                    {}
                    Ok(Seen {
                        human_readable: self.0,
                        size_hint,
                    })
                }
            }
            let human_readable = d.is_human_readable();
            d.deserialize_any(V(human_readable))
        }
    }

    fn bounded_msgpack<T: serde::de::DeserializeOwned>(
        bytes: &[u8],
        human_readable: bool,
    ) -> Result<T, rmp_serde::decode::Error> {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        if human_readable {
            let mut de = de.with_human_readable();
            T::deserialize(Bounded {
                inner: &mut de,
                budget: Budget::new(8, bytes.len()),
            })
        } else {
            T::deserialize(Bounded {
                inner: &mut de,
                budget: Budget::new(8, bytes.len()),
            })
        }
    }

    #[test]
    fn what_the_wrapped_deserializer_says_passes_through() {
        let three = rmp_serde::to_vec(&[1u8, 2, 3]).unwrap();
        for human_readable in [true, false] {
            assert_eq!(
                bounded_msgpack::<Seen>(&three, human_readable).unwrap(),
                Seen {
                    human_readable,
                    size_hint: Some(3)
                }
            );
        }
        let two =
            rmp_serde::to_vec(&std::collections::BTreeMap::from([(1u8, 2u8), (3, 4)])).unwrap();
        assert_eq!(
            bounded_msgpack::<Seen>(&two, false).unwrap().size_hint,
            Some(2)
        );
        // The wrapped visitor's own words are the ones an error quotes.
        let err = bounded_msgpack::<Seen>(&rmp_serde::to_vec(&7u8).unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a sequence"), "{err}");
    }

    #[test]
    fn lengths_past_the_payload_and_nesting_past_the_limit_are_refused() {
        // A msgpack array32 header declaring 2^31 elements, in a 5-byte payload.
        let huge = [0xdd, 0x80, 0, 0, 0];
        let err = bounded_msgpack::<Vec<()>>(&huge, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the 5 bytes"), "{err}");
        // A length equal to the payload's is believable (and here simply too short).
        let exact = [0x95, 0xc0, 0xc0, 0xc0, 0xc0];
        let err = bounded_msgpack::<Vec<()>>(&exact, false)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("larger than"), "{err}");
        let deep =
            rmp_serde::to_vec(&vec![vec![vec![vec![vec![vec![vec![vec![vec![1u8]]]]]]]]]).unwrap();
        let err = bounded_msgpack::<de::IgnoredAny>(&deep, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_depth (8)"), "{err}");
    }

    #[test]
    fn a_buffer_apart_goes_to_its_own_empty_byte_string_once_and_never_stays_behind() {
        let payload = [0u8; 8];
        let at = payload[4..4].as_ptr();
        let buf = vec![9u8; 3];
        let (taken, left) = with_apart(at, buf.clone(), || {
            // Not a byte string elsewhere, empty or not, nor one with bytes where it starts.
            assert_eq!(apart(&payload[2..2]), None);
            assert_eq!(apart(&payload[4..5]), None);
            assert_eq!(apart(&payload[3..5]), None);
            let taken = apart(&payload[4..4]);
            // Only once.
            assert_eq!(apart(&payload[4..4]), None);
            taken
        });
        assert_eq!((taken, left), (Some(buf.clone()), None));
        // Not taken: handed back, and nothing stays behind for a later decode.
        let ((), left) = with_apart(at, buf.clone(), || ());
        assert_eq!(left, Some(buf.clone()));
        assert_eq!(APART_AT.get(), 0);
        assert_eq!(apart(&payload[4..4]), None);
        // Nor when the decode panics.
        let panicked = std::panic::catch_unwind(|| with_apart(at, buf, || panic!("in decode")));
        assert!(panicked.is_err());
        assert_eq!(APART_AT.get(), 0);
        assert!(APART.take().is_none());
    }
}
