//! Python's marshal format, Pyro's serializer "marshal" (Pyro5 id 2, Pyro4 id 3), as CPython's
//! `Python/marshal.c` writes and reads it (version 4), data only.
//!
//! The writer is a serde `Serializer`: `N`, `T`, `F`, ints as `i` (32 bits) or `l` (15-bit
//! digits), floats as `g` (binary, so inf and nan need no dict), strs as `u`, bytes as `s`,
//! tuples as `(`, sequences as `[` (a [`super::PYTHON_SET`] as `<`), maps and structs as `{`
//! … `0`; it never writes references. A non-empty `Vec<u8>` is written as bytes (`s`), as
//! Python's bytes are.
//!
//! The reader parses one marshal object into the shared [`Value`] tree (a complex number as
//! the tuple `(real, imag)`) and refuses anything that is not data (code objects,
//! `StopIteration`, `Ellipsis`, old string references). Every decode is bounded: nesting at most `max_depth` deep (counted after
//! references are resolved), declared lengths within the bytes left, ints at most
//! [`MAX_LONG_DIGITS`] digits (and those beyond 128 bits, whose decimal text costs time
//! quadratic in their length, [`MAX_LONG_DIGITS_TOTAL`] in a document), trailing bytes refused.
//! References (`FLAG_REF` on an object, `r` and its index) must name an object already read
//! whole (so no cycle can be built; a flagged `r` enters nothing, as in CPython), and the
//! values they copy count against a budget of [`EXPANSION`] times the payload's size in bytes
//! of memory, so a small payload cannot expand into a huge tree.

use std::rc::Rc;

use serde::ser::{self, Serialize};

use super::value::Value;
use super::DecodeLimits;
use crate::error::Error;

/// Pyro4's serializer id for marshal.
pub(super) const PYRO4_MARSHAL_ID: u8 = 3;

/// The flag bit on a type code that enters the object in the reference table.
const FLAG_REF: u8 = 0x80;
/// The largest int read, in 15-bit digits (15,360 bits, about 4,600 decimal digits: Python's
/// own default limit on converting an int to text is 4,300).
pub(super) const MAX_LONG_DIGITS: usize = 1024;
/// The digits of ints beyond 128 bits read in one document, in all: each one's decimal text
/// costs time quadratic in its length (16 of the largest: about ten million steps).
pub(super) const MAX_LONG_DIGITS_TOTAL: usize = 16 * MAX_LONG_DIGITS;
/// How many times its size a payload may expand to, in bytes of memory (a value's size plus its
/// str's or bytes' length), beyond a floor of [`EXPANSION_FLOOR`]: four times what a document
/// without references can take (a value for each byte), so that Python's own data, which
/// shares objects freely (`[t] * 100_000` for a tuple `t` of ten ints: 500 KB, 35 MB of
/// values), is read, and a payload cannot grow beyond a fixed multiple of its size.
pub(super) const EXPANSION: usize = 4 * std::mem::size_of::<Value>();
/// The expansion budget of a small payload: 1 MiB (what a 32 KiB document without references
/// can take: nested references would otherwise make a few hundred bytes a large tree).
pub(super) const EXPANSION_FLOOR: usize = 1 << 20;
/// The most any payload may expand to: 1 GiB.
pub(super) const EXPANSION_CAP: usize = 1 << 30;

/// The expansion budget of a payload of `len` bytes, in bytes of memory.
fn budget(len: usize) -> usize {
    len.saturating_mul(EXPANSION)
        .clamp(EXPANSION_FLOOR, EXPANSION_CAP)
}

fn codec_error(e: impl std::fmt::Display) -> Error {
    Error::Codec(format!("marshal: {e}"))
}

/// Encodes `value`; with `pyro4`, a `__class__` value `Pyro5.<rest>` is written `Pyro4.<rest>`.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T, pyro4: bool) -> Result<Vec<u8>, Error> {
    let mut w = Writer {
        out: Vec::new(),
        pyro4,
        class_next: false,
    };
    value.serialize(&mut w).map_err(codec_error)?;
    Ok(w.out)
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, Error> {
    let value = parse(bytes, limits)?;
    T::deserialize(value).map_err(codec_error)
}

/// A marshal list of already encoded `items`.
pub(super) fn list_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(Vec::len).sum::<usize>() + 5);
    out.push(b'[');
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// `marshal.dumps(text)`: type `u`, the UTF-8 length as a little-endian i32, the bytes.
pub(super) fn encode_str(text: &str) -> Vec<u8> {
    // A CONNECTFAIL reason is short; cut at a char boundary below 2 GiB all the same.
    let mut end = text.len().min(i32::MAX as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(5 + end);
    out.push(b'u');
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
    out
}

/// `marshal.loads(bytes)` when it is a str (any of marshal's str types, with or without the
/// reference flag) and nothing else; `None` otherwise.
pub(super) fn decode_str(bytes: &[u8]) -> Option<String> {
    match parse(bytes, &DecodeLimits::default()) {
        Ok(Value::Str(s)) => Some(s),
        _ => None,
    }
}

/// Parses a whole marshal document into a value tree.
pub(super) fn parse(bytes: &[u8], limits: &DecodeLimits) -> Result<Value, Error> {
    let mut r = Reader {
        s: bytes,
        at: 0,
        depth: 0,
        max_depth: limits.depth(),
        refs: Vec::new(),
        height: 0,
        long_digits_left: MAX_LONG_DIGITS_TOTAL,
        nodes_left: budget(bytes.len()) / std::mem::size_of::<Node>(),
    };
    let tree = r.object()?;
    if r.at != bytes.len() {
        return Err(r.error("trailing bytes after the value"));
    }
    // The table's handles go, so values referenced once move instead of being copied.
    drop(r.refs);
    let mut budget = budget(bytes.len());
    tree.into_value(0, limits.depth(), &mut budget)
}

/// A value as read, before references are resolved: referenced objects are shared.
#[derive(Debug)]
enum Node {
    Leaf(Value),
    List(Vec<Node>),
    Tuple(Vec<Node>),
    Set(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    Shared(Rc<Node>),
}

/// The cost of a leaf against the expansion budget: its size, plus its text's or bytes' length.
fn leaf_cost(v: &Value) -> usize {
    VALUE_SIZE
        + match v {
            Value::Str(s) | Value::BigInt(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
}

impl Node {
    /// The value tree, references copied; every value counts against `budget` and nesting
    /// beyond `max_depth` is refused.
    fn into_value(
        self,
        depth: usize,
        max_depth: usize,
        budget: &mut usize,
    ) -> Result<Value, Error> {
        match self {
            Node::Shared(rc) => match Rc::try_unwrap(rc) {
                Ok(node) => node.into_value(depth, max_depth, budget),
                Err(rc) => rc.to_value(depth, max_depth, budget),
            },
            Node::Leaf(v) => {
                spend(budget, leaf_cost(&v))?;
                Ok(v)
            }
            container => {
                let depth = deeper(depth, max_depth)?;
                spend(budget, VALUE_SIZE)?;
                let items = |items: Vec<Node>, budget: &mut usize| {
                    items
                        .into_iter()
                        .map(|n| n.into_value(depth, max_depth, budget))
                        .collect::<Result<Vec<_>, _>>()
                };
                Ok(match container {
                    Node::List(v) => Value::List(items(v, budget)?),
                    Node::Tuple(v) => Value::Tuple(items(v, budget)?),
                    Node::Set(v) => Value::Set(items(v, budget)?),
                    Node::Dict(entries) => Value::Dict(
                        entries
                            .into_iter()
                            .map(|(k, v)| {
                                Ok((
                                    k.into_value(depth, max_depth, budget)?,
                                    v.into_value(depth, max_depth, budget)?,
                                ))
                            })
                            .collect::<Result<Vec<_>, Error>>()?,
                    ),
                    Node::Leaf(_) | Node::Shared(_) => unreachable!("matched above"),
                })
            }
        }
    }

    /// [`into_value`](Self::into_value) for a node still shared: a copy.
    fn to_value(&self, depth: usize, max_depth: usize, budget: &mut usize) -> Result<Value, Error> {
        match self {
            Node::Shared(rc) => rc.to_value(depth, max_depth, budget),
            Node::Leaf(v) => {
                spend(budget, leaf_cost(v))?;
                Ok(v.clone())
            }
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => {
                let depth = deeper(depth, max_depth)?;
                spend(budget, VALUE_SIZE)?;
                let items = v
                    .iter()
                    .map(|n| n.to_value(depth, max_depth, budget))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(match self {
                    Node::List(_) => Value::List(items),
                    Node::Tuple(_) => Value::Tuple(items),
                    _ => Value::Set(items),
                })
            }
            Node::Dict(entries) => {
                let depth = deeper(depth, max_depth)?;
                spend(budget, VALUE_SIZE)?;
                Ok(Value::Dict(
                    entries
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                k.to_value(depth, max_depth, budget)?,
                                v.to_value(depth, max_depth, budget)?,
                            ))
                        })
                        .collect::<Result<Vec<_>, Error>>()?,
                ))
            }
        }
    }
}

/// A value's own size, what each costs against the expansion budget.
const VALUE_SIZE: usize = std::mem::size_of::<Value>();

fn deeper(depth: usize, max_depth: usize) -> Result<usize, Error> {
    if depth >= max_depth {
        return Err(codec_error(format_args!(
            "value nested deeper than max_depth ({max_depth})"
        )));
    }
    Ok(depth + 1)
}

fn spend(budget: &mut usize, cost: usize) -> Result<(), Error> {
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        codec_error(format_args!(
            "references expand the payload beyond {EXPANSION} times its size in memory"
        ))
    })?;
    Ok(())
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
    max_depth: usize,
    /// The reference table: an entry is `None` while its object is still being read; with
    /// each object, its height (see `height`).
    refs: Vec<Option<(Rc<Node>, usize)>>,
    /// The height of the object read last, references followed: 0 for a leaf, one more than
    /// its highest item for a container. A reference's holder is as high as the object it
    /// names plus one, so wrapping each reference in a flagged one-item tuple made a chain of
    /// shared nodes as long as the payload (150,000 links a megabyte), which `into_value`
    /// refused at `max_depth` but whose drop recursed once per link: a stack overflow that
    /// aborted the process. An object whose height and place together go deeper than
    /// `max_depth` is refused as it is read.
    height: usize,
    /// What is left of [`MAX_LONG_DIGITS_TOTAL`].
    long_digits_left: usize,
    /// Nodes the document may still read: its expansion budget counts them too, as they are
    /// read (a 64 MiB list of `N` was 67 million nodes, over 2 GiB, before the budget that
    /// refuses the values they make was ever applied).
    nodes_left: usize,
}

impl Reader<'_> {
    fn error(&self, what: impl std::fmt::Display) -> Error {
        codec_error(format_args!("{what} at byte {}", self.at))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.s.len())
            .ok_or_else(|| self.error(format_args!("{n} bytes declared, fewer left")))?;
        let bytes = &self.s[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A declared length (a non-negative i32) of items each at least `min_size` bytes long,
    /// refused when the bytes left cannot hold them.
    fn len(&mut self, min_size: usize) -> Result<usize, Error> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| self.error("a negative length"))?;
        self.fits(n, min_size)
    }

    fn fits(&self, n: usize, min_size: usize) -> Result<usize, Error> {
        if n.saturating_mul(min_size) > self.s.len() - self.at {
            return Err(self.error(format_args!(
                "declared length {n} is larger than the bytes left"
            )));
        }
        Ok(n)
    }

    fn object(&mut self) -> Result<Node, Error> {
        self.nodes_left = self.nodes_left.checked_sub(1).ok_or_else(|| {
            self.error(format_args!(
                "the payload expands beyond {EXPANSION_CAP} bytes of memory as it is read"
            ))
        })?;
        let code = self.byte()?;
        // A flagged reference enters nothing (CPython ignores the flag there): entering it
        // would let each reference wrap the one before, a chain as long as the payload.
        let slot = (code & FLAG_REF != 0 && code & !FLAG_REF != b'r').then(|| {
            self.refs.push(None);
            self.refs.len() - 1
        });
        let node = self.body(code & !FLAG_REF)?;
        if self.depth + self.height > self.max_depth {
            return Err(self.error(format_args!(
                "value nested deeper than max_depth ({}), references followed",
                self.max_depth
            )));
        }
        Ok(match slot {
            Some(slot) => {
                let rc = Rc::new(node);
                self.refs[slot] = Some((Rc::clone(&rc), self.height));
                Node::Shared(rc)
            }
            None => node,
        })
    }

    /// One object after its type code; sets `height`.
    fn body(&mut self, code: u8) -> Result<Node, Error> {
        // Leaves and complex numbers (height 1) here; containers and references set their own.
        self.height = usize::from(matches!(code, b'y' | b'x'));
        let leaf = |v| Ok(Node::Leaf(v));
        match code {
            b'N' => leaf(Value::None),
            b'T' => leaf(Value::Bool(true)),
            b'F' => leaf(Value::Bool(false)),
            b'i' => leaf(Value::Int(self.i32()?.into())),
            b'I' => {
                let v = i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                leaf(Value::Int(v.into()))
            }
            b'l' => leaf(self.long()?),
            b'g' => {
                let v = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                leaf(Value::Float(v))
            }
            b'f' => leaf(Value::Float(self.text_float()?)),
            // A complex number, binary (`y`) or as text (`x`, before marshal version 2): the
            // tuple `(real, imag)`, as serpent's is read.
            b'y' => {
                let real = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                let imag = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                Ok(Node::Tuple(vec![
                    Node::Leaf(Value::Float(real)),
                    Node::Leaf(Value::Float(imag)),
                ]))
            }
            b'x' => {
                let real = self.text_float()?;
                let imag = self.text_float()?;
                Ok(Node::Tuple(vec![
                    Node::Leaf(Value::Float(real)),
                    Node::Leaf(Value::Float(imag)),
                ]))
            }
            b's' => {
                let n = self.len(1)?;
                leaf(Value::Bytes(self.take(n)?.to_vec()))
            }
            b'u' | b't' => {
                let n = self.len(1)?;
                let at = self.at;
                match std::str::from_utf8(self.take(n)?) {
                    Ok(text) => leaf(Value::Str(text.to_owned())),
                    Err(e) => Err(codec_error(format_args!(
                        "a str that is not UTF-8 ({e}) at byte {at}"
                    ))),
                }
            }
            b'a' | b'A' => {
                let n = self.len(1)?;
                leaf(Value::Str(latin1(self.take(n)?)))
            }
            b'z' | b'Z' => {
                let n = usize::from(self.byte()?);
                leaf(Value::Str(latin1(self.take(n)?)))
            }
            b'(' | b'[' | b'<' | b'>' => {
                let n = self.len(1)?;
                let items = self.nested(|r| r.items(n))?;
                Ok(match code {
                    b'(' => Node::Tuple(items),
                    b'[' => Node::List(items),
                    _ => Node::Set(items),
                })
            }
            b')' => {
                let n = usize::from(self.byte()?);
                let n = self.fits(n, 1)?;
                Ok(Node::Tuple(self.nested(|r| r.items(n))?))
            }
            b'{' => self.nested(|r| {
                let mut entries = Vec::new();
                let mut highest = 0;
                loop {
                    if r.s.get(r.at) == Some(&b'0') {
                        r.at += 1;
                        r.height = highest + 1;
                        return Ok(Node::Dict(entries));
                    }
                    let key = r.object()?;
                    highest = highest.max(r.height);
                    let value = r.object()?;
                    highest = highest.max(r.height);
                    entries.push((key, value));
                }
            }),
            b'r' => {
                let index = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                match self.refs.get(index as usize) {
                    Some(Some((rc, height))) => {
                        self.height = *height;
                        Ok(Node::Shared(Rc::clone(rc)))
                    }
                    Some(None) => Err(self.error(format_args!(
                        "reference {index} to an object still being read (a cycle)"
                    ))),
                    None => Err(self.error(format_args!(
                        "reference {index} beyond the {} objects read",
                        self.refs.len()
                    ))),
                }
            }
            b'c' => Err(self.error("a code object (refused: only data is read)")),
            b'0' => Err(self.error("a NULL outside a dict")),
            other => Err(self.error(format_args!(
                "type code {:?} is not data rmi reads (StopIteration, Ellipsis and code \
                 objects are refused)",
                other as char
            ))),
        }
    }

    /// A float as text (`f`, and each half of `x`): a length byte, then Python's repr.
    fn text_float(&mut self) -> Result<f64, Error> {
        let n = usize::from(self.byte()?);
        std::str::from_utf8(self.take(n)?)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .ok_or_else(|| self.error("an invalid float"))
    }

    fn items(&mut self, n: usize) -> Result<Vec<Node>, Error> {
        // Not all of a declared length at once: each level of a nested document could claim
        // the bytes left, a value's size for each.
        let mut items = Vec::with_capacity(n.min(256));
        let mut highest = 0;
        for _ in 0..n {
            items.push(self.object()?);
            highest = highest.max(self.height);
        }
        self.height = highest + 1;
        Ok(items)
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(self.error(format_args!(
                "value nested deeper than max_depth ({})",
                self.max_depth
            )));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    /// `l`: a signed count of 15-bit digits, least significant first.
    fn long(&mut self) -> Result<Value, Error> {
        let n = self.i32()?;
        let count = n.unsigned_abs() as usize;
        if count > MAX_LONG_DIGITS {
            return Err(self.error(format_args!(
                "an int of {count} digits (at most {MAX_LONG_DIGITS} are read)"
            )));
        }
        let raw = self.take(count * 2)?;
        let digits: Vec<u16> = raw
            .chunks_exact(2)
            .map(|d| u16::from_le_bytes([d[0], d[1]]))
            .collect();
        if digits.iter().any(|&d| d >= 1 << 15) {
            return Err(self.error("an int digit out of range"));
        }
        if digits.last() == Some(&0) {
            return Err(self.error("unnormalized long data"));
        }
        let negative = n < 0;
        let mut small: Option<u128> = Some(0);
        for &d in digits.iter().rev() {
            small = small
                .and_then(|v| v.checked_mul(1 << 15))
                .and_then(|v| v.checked_add(u128::from(d)));
        }
        if let Some(v) = small {
            if negative && v == 1 << 127 {
                return Ok(Value::Int(i128::MIN));
            }
            if let Ok(v) = i128::try_from(v) {
                return Ok(Value::Int(if negative { -v } else { v }));
            }
            if !negative {
                return Ok(Value::BigInt(v.to_string()));
            }
        }
        self.long_digits_left = self.long_digits_left.checked_sub(count).ok_or_else(|| {
            self.error(format_args!(
                "ints beyond 128 bits of more than {MAX_LONG_DIGITS_TOTAL} digits in all"
            ))
        })?;
        let text = digits_to_decimal(&digits);
        Ok(Value::BigInt(if negative {
            format!("-{text}")
        } else {
            text
        }))
    }
}

/// Marshal's one-byte strs: each byte one char (Latin-1; Python writes ASCII there).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Decimal digits of a magnitude in 15-bit digits, least significant first.
fn digits_to_decimal(digits: &[u16]) -> String {
    // Most significant first; divided by 10,000 until nothing is left.
    let mut n: Vec<u32> = digits.iter().rev().map(|&d| u32::from(d)).collect();
    let mut start = 0;
    let mut groups = Vec::new();
    while start < n.len() {
        let mut rem = 0u32;
        for d in &mut n[start..] {
            let cur = rem << 15 | *d;
            *d = cur / 10_000;
            rem = cur % 10_000;
        }
        groups.push(rem);
        while start < n.len() && n[start] == 0 {
            start += 1;
        }
    }
    let mut text = groups.pop().unwrap_or(0).to_string();
    for g in groups.iter().rev() {
        text.push_str(&format!("{g:04}"));
    }
    text
}

/// Writes marshal.
struct Writer {
    out: Vec<u8>,
    /// Write Pyro4's class names for Pyro5's.
    pyro4: bool,
    /// The key just written is `'__class__'` (with `pyro4`).
    class_next: bool,
}

#[derive(Debug)]
struct WriteError(String);

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WriteError {}

impl ser::Error for WriteError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WriteError(msg.to_string())
    }
}

impl Writer {
    fn len(&mut self, n: usize) -> Result<(), WriteError> {
        let n = i32::try_from(n).map_err(|_| WriteError("longer than marshal allows".into()))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }

    fn int(&mut self, v: i128) {
        if let Ok(v) = i32::try_from(v) {
            self.out.push(b'i');
            self.out.extend_from_slice(&v.to_le_bytes());
            return;
        }
        self.long(v < 0, v.unsigned_abs());
    }

    /// `l`: the magnitude in 15-bit digits, least significant first; the count's sign is the
    /// number's.
    fn long(&mut self, negative: bool, mut magnitude: u128) {
        let mut digits = Vec::new();
        while magnitude != 0 {
            digits.push((magnitude & 0x7fff) as u16);
            magnitude >>= 15;
        }
        let count = digits.len() as i32;
        self.out.push(b'l');
        self.out
            .extend_from_slice(&(if negative { -count } else { count }).to_le_bytes());
        for d in digits {
            self.out.extend_from_slice(&d.to_le_bytes());
        }
    }

    fn string(&mut self, s: &str) -> Result<(), WriteError> {
        self.out.push(b'u');
        self.len(s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), WriteError> {
        self.out.push(b's');
        self.len(b.len())?;
        self.out.extend_from_slice(b);
        Ok(())
    }

    /// A container of `code` whose count is patched in at the end.
    fn open(&mut self, code: u8, counted: bool) -> Compound<'_> {
        self.out.push(code);
        let count_at = self.out.len();
        if counted {
            self.out.extend_from_slice(&[0; 4]);
        }
        Compound {
            w: self,
            count_at: counted.then_some(count_at),
            items: 0,
            close: None,
        }
    }

    /// Writes a map value, renaming a Pyro5 class to Pyro4's after a `__class__` key.
    fn map_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        let class = std::mem::take(&mut self.class_next);
        let start = self.out.len();
        value.serialize(&mut *self)?;
        // `u`, four length bytes, then the text.
        if class
            && self.out[start..].starts_with(b"u")
            && self.out[start + 5..].starts_with(b"Pyro5.")
        {
            self.out[start + 9] = b'4';
        }
        Ok(())
    }
}

/// A container being written.
struct Compound<'a> {
    w: &'a mut Writer,
    /// Where the item count goes (`None`: a dict, closed by `0`).
    count_at: Option<usize>,
    items: usize,
    /// What ends it (a dict's `0`, or a variant's dict around it).
    close: Option<&'static [u8]>,
}

impl Compound<'_> {
    fn finish(self) -> Result<(), WriteError> {
        if let Some(at) = self.count_at {
            let n = i32::try_from(self.items)
                .map_err(|_| WriteError("too many items for marshal".into()))?;
            self.w.out[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        if let Some(close) = self.close {
            self.w.out.extend_from_slice(close);
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), WriteError> {
        self.out.push(if v { b'T' } else { b'F' });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<(), WriteError> {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), WriteError> {
        self.serialize_i128(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<(), WriteError> {
        match i128::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => self.long(false, v),
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), WriteError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), WriteError> {
        self.out.push(b'g');
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), WriteError> {
        self.string(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), WriteError> {
        self.string(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), WriteError> {
        self.bytes(v)
    }
    fn serialize_none(self) -> Result<(), WriteError> {
        self.out.push(b'N');
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WriteError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), WriteError> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), WriteError> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), WriteError> {
        self.string(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        let start = self.out.len();
        value.serialize(&mut *self)?;
        // A Python set: the list's code made a set's. Pyro4 peers get the list: Pyro4's own
        // name server sends its metadata sets as lists (`list(metadata)`), which its clients
        // index.
        if name == super::PYTHON_SET && !self.pyro4 && self.out.get(start) == Some(&b'[') {
            self.out[start] = b'<';
        }
        Ok(())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        self.out.push(b'{');
        self.string(variant)?;
        value.serialize(&mut *self)?;
        self.out.push(b'0');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        Ok(self.open(b'[', true))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, WriteError> {
        Ok(self.open(b'(', true))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        self.out.push(b'{');
        self.string(variant)?;
        let mut c = self.open(b'(', true);
        c.close = Some(b"0");
        Ok(c)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        let mut c = self.open(b'{', false);
        c.close = Some(b"0");
        Ok(c)
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a>, WriteError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, WriteError> {
        self.out.push(b'{');
        self.string(variant)?;
        let mut c = self.open(b'{', false);
        c.close = Some(b"00");
        Ok(c)
    }
    fn collect_seq<I>(self, iter: I) -> Result<(), WriteError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        match super::byteseq::as_bytes(iter) {
            Ok(bytes) => self.bytes(&bytes),
            Err(items) => {
                let mut seq = ser::Serializer::serialize_seq(self, Some(items.len()))?;
                for item in items {
                    ser::SerializeSeq::serialize_element(&mut seq, &item)?;
                }
                ser::SerializeSeq::end(seq)
            }
        }
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.items += 1;
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WriteError> {
        let start = self.w.out.len();
        key.serialize(&mut *self.w)?;
        self.w.class_next = self.w.pyro4 && self.w.out[start..] == *b"u\x09\x00\x00\x00__class__";
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.w.map_value(value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        ser::SerializeMap::serialize_key(self, key)?;
        ser::SerializeMap::serialize_value(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn strs_in_marshal_are_read_back() {
        assert_eq!(decode_str(b"u\x03\x00\x00\x00caf").as_deref(), Some("caf"));
        // What a Pyro4 daemon sent for a Pyro5 header (captured): short ascii with FLAG_REF.
        let mut captured = vec![0xfa, 44];
        captured.extend_from_slice(b"invalid data or unsupported protocol version");
        assert_eq!(
            decode_str(&captured).as_deref(),
            Some("invalid data or unsupported protocol version")
        );
        assert_eq!(decode_str(b"z\x05ab"), None, "too short");
        assert_eq!(decode_str(b"i\x01\x00\x00\x00"), None, "an int");
        assert_eq!(decode_str(b""), None);
    }

    #[test]
    fn a_str_is_pythons_marshal_unicode() {
        // marshal.loads(b'u\x03\x00\x00\x00caf') == 'caf'
        assert_eq!(encode_str("caf"), b"u\x03\x00\x00\x00caf");
        assert_eq!(encode_str("é"), b"u\x02\x00\x00\x00\xc3\xa9");
    }

    /// Python 3.11's `marshal.dumps(v)` for each value, captured.
    #[test]
    fn pythons_marshal_reads_as_python_wrote_it() {
        let cases: &[(&[u8], Value)] = &[
            (b"N", Value::None),
            (b"T", Value::Bool(true)),
            (b"\xe9\xfb\xff\xff\xff", Value::Int(-5)),
            // 2**40
            (
                b"\xec\x03\x00\x00\x00\x00\x00\x00\x00\x00\x04",
                Value::Int(1 << 40),
            ),
            // -(2**100)
            (
                b"\xec\xf9\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04",
                Value::Int(-(1i128 << 100)),
            ),
            (b"\xe7\x00\x00\x00\x00\x00\x00\xf8?", Value::Float(1.5)),
            (b"\xda\x03abc", Value::Str("abc".into())),
            (b"\xfa\x02h\xc3", Value::Str("hÃ".into())),
            (b"\xf5\x02\x00\x00\x00\xc3\xa9", Value::Str("é".into())),
            (
                b"\xf3\x03\x00\x00\x00\x00\x01\xff",
                Value::Bytes(vec![0, 1, 255]),
            ),
            (
                b"\xa9\x02\xe9\x01\x00\x00\x00\xe9\x02\x00\x00\x00",
                Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
            ),
            // marshal.dumps(complex(1.5, -2)), and with version 1 (as text): (real, imag).
            (
                b"y\x00\x00\x00\x00\x00\x00\xf8?\x00\x00\x00\x00\x00\x00\x00\xc0",
                Value::Tuple(vec![Value::Float(1.5), Value::Float(-2.0)]),
            ),
            (
                b"x\x031.5\x02-2",
                Value::Tuple(vec![Value::Float(1.5), Value::Float(-2.0)]),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(&parse(bytes, &limits()).unwrap(), want, "{bytes:?}");
        }
        // A reference copies the object: a = 'a'; [a, a].
        let bytes = b"[\x02\x00\x00\x00\xda\x01ar\x00\x00\x00\x00";
        assert_eq!(
            parse(bytes, &limits()).unwrap(),
            Value::List(vec![Value::Str("a".into()), Value::Str("a".into())])
        );
        // {'k': {1}, 'b': frozenset()} and a dict's 0.
        let bytes = b"{\xda\x01k<\x01\x00\x00\x00\xe9\x01\x00\x00\x00\xda\x01b>\x00\x00\x00\x000";
        assert_eq!(
            parse(bytes, &limits()).unwrap(),
            Value::Dict(vec![
                (Value::Str("k".into()), Value::Set(vec![Value::Int(1)])),
                (Value::Str("b".into()), Value::Set(vec![])),
            ])
        );
    }

    #[test]
    fn big_ints_keep_their_digits() {
        // 2**200 + 1: 14 digits of 15 bits (Python's marshal.dumps).
        let mut bytes = b"l\x0e\x00\x00\x00\x01\x00".to_vec();
        bytes.extend_from_slice(&[0; 24]);
        bytes.extend_from_slice(b" \x00");
        assert_eq!(
            parse(&bytes, &limits()).unwrap(),
            Value::BigInt("1606938044258990275541962092341162602522202993782792835301377".into())
        );
        assert_eq!(
            parse(&encode(&u128::MAX, false).unwrap(), &limits()).unwrap(),
            Value::BigInt(u128::MAX.to_string())
        );
        assert_eq!(
            parse(&encode(&i128::MIN, false).unwrap(), &limits()).unwrap(),
            Value::Int(i128::MIN)
        );
        for v in [
            0i64,
            1,
            -1,
            i32::MAX.into(),
            i32::MIN.into(),
            1 << 40,
            i64::MIN,
        ] {
            let back: i64 = decode(&encode(&v, false).unwrap(), &limits()).unwrap();
            assert_eq!(back, v);
        }
        // Negative ints beyond i128 keep their sign (Python 3's marshal.dumps of each).
        for (bytes, want) in [
            (
                &b"\xec\xf7\xff\xff\xff\xff\x7f\xff\x7f\xff\x7f\xff\x7f\xff\x7f\xff\x7f\xff\x7f\xff\x7f\xff\x00"[..],
                "-340282366920938463463374607431768211455",
            ),
            (
                b"\xec\xf7\xff\xff\xff\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x00",
                "-170141183460469231731687303715884105729",
            ),
        ] {
            assert_eq!(parse(bytes, &limits()).unwrap(), Value::BigInt(want.into()));
        }
        // 2**(15 × n − 1), n digits: MAX_LONG_DIGITS of them are read, one more is refused.
        let top_bit = |n: usize| {
            let mut bytes = b"l".to_vec();
            bytes.extend_from_slice(&(n as i32).to_le_bytes());
            bytes.extend(std::iter::repeat_n(0u8, 2 * (n - 1)));
            bytes.extend_from_slice(&[0x00, 0x40]);
            bytes
        };
        let Value::BigInt(digits) = parse(&top_bit(MAX_LONG_DIGITS), &limits()).unwrap() else {
            panic!("a big int");
        };
        // Python 3: str(2**15359) starts 3309 and has 4,624 digits.
        assert!(
            digits.starts_with("3309") && digits.len() == 4624,
            "{}",
            &digits[..20]
        );
        let err = parse(&top_bit(MAX_LONG_DIGITS + 1), &limits()).unwrap_err();
        assert!(err.to_string().contains("1025 digits"), "{err}");
    }

    #[test]
    fn values_are_written_as_pythons_marshal_reads_them() {
        use std::collections::BTreeMap;
        // marshal.dumps of each, without reference flags.
        assert_eq!(encode(&(), false).unwrap(), b"N");
        assert_eq!(
            encode(&(1u8, true), false).unwrap(),
            b"(\x02\x00\x00\x00i\x01\x00\x00\x00T"
        );
        assert_eq!(
            encode(&(1u64 << 40), false).unwrap(),
            b"l\x03\x00\x00\x00\x00\x00\x00\x00\x00\x04"
        );
        assert_eq!(
            encode(&BTreeMap::from([("a", 1.5)]), false).unwrap(),
            b"{u\x01\x00\x00\x00ag\x00\x00\x00\x00\x00\x00\xf8?0"
        );
        // A Vec<u8> is bytes; other sequences are lists.
        assert_eq!(
            encode(&vec![0u8, 1, 255], false).unwrap(),
            b"s\x03\x00\x00\x00\x00\x01\xff"
        );
        assert_eq!(
            encode(&vec![7u16], false).unwrap(),
            b"[\x01\x00\x00\x00i\x07\x00\x00\x00"
        );
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
        let text = String::from_utf8_lossy(&encode(&uri, true).unwrap()).into_owned();
        assert!(text.contains("Pyro4.core.URI"), "{text}");
        let text = String::from_utf8_lossy(&encode(&uri, false).unwrap()).into_owned();
        assert!(text.contains("Pyro5.core.URI"), "{text}");
    }

    #[test]
    fn serde_types_round_trip() {
        use std::collections::{BTreeMap, BTreeSet};
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        enum E {
            Unit,
            New(i32),
            Tuple(u8, String),
            Struct { a: Vec<u8>, b: Option<f64> },
        }
        let value = (
            vec![
                E::Unit,
                E::New(-3),
                E::Tuple(1, "x".into()),
                E::Struct {
                    a: vec![1, 2],
                    b: None,
                },
            ],
            BTreeMap::from([(1u32, "one".to_string())]),
            BTreeSet::from(["a".to_string()]),
            f64::INFINITY,
            serde_bytes::ByteBuf::from(vec![9u8; 300]),
            'é',
        );
        let bytes = encode(&value, false).unwrap();
        let back: (
            Vec<E>,
            BTreeMap<u32, String>,
            BTreeSet<String>,
            f64,
            serde_bytes::ByteBuf,
            char,
        ) = decode(&bytes, &limits()).unwrap();
        assert_eq!(back, value);
        let nan: f64 = decode(&encode(&f64::NAN, false).unwrap(), &limits()).unwrap();
        assert!(nan.is_nan());
    }

    #[test]
    fn what_is_not_data_or_not_bounded_is_refused() {
        let refused: &[(&[u8], &str)] = &[
            (b"c\x00\x00\x00\x00", "code object"),
            (b"S", "not data"),
            (b".", "not data"),
            (b"0", "NULL"),
            (b"NN", "trailing"),
            (b"", "bytes declared"),
            (b"[\xff\xff\xff\x7f", "declared length"),
            (b"[\xff\xff\xff\xff", "negative"),
            (b"s\x10\x00\x00\x00abc", "declared length"),
            // Longer than the 3 bytes left, shorter than the payload: refused by the length.
            (b"s\x05\x00\x00\x00abc", "declared length 5 is larger"),
            (b"u\x02\x00\x00\x00\xff\xfe", "UTF-8"),
            (b"r\x00\x00\x00\x00", "beyond"),
            // A list that holds a reference to itself.
            (b"\xdb\x01\x00\x00\x00r\x00\x00\x00\x00", "cycle"),
            (b"l\x01\x00\x00\x00\x00\x80", "out of range"),
            (b"l\x01\x00\x00\x00\x00\x00", "unnormalized"),
            (b"l\x01\x04\x00\x00", "digits"),
            (b"{N", "bytes declared"),
        ];
        for (bytes, why) in refused {
            let err = parse(bytes, &limits()).unwrap_err().to_string();
            assert!(err.contains(why), "{bytes:?}: {err}");
        }
        // Nesting, by hand and through references.
        let mut deep = b"[\x01\x00\x00\x00".repeat(200);
        deep.push(b'N');
        assert!(parse(&deep, &limits())
            .unwrap_err()
            .to_string()
            .contains("max_depth"));
        // At the limit exactly, as read: 128 nested lists are read, 129 are not; siblings
        // close what they open, so a thousand empty lists in one are within a limit of 2.
        let nested = |n: usize| {
            let mut doc = b"[\x01\x00\x00\x00".repeat(n - 1);
            doc.extend_from_slice(b"[\x00\x00\x00\x00");
            doc
        };
        assert_eq!(limits().max_depth, 128);
        assert!(parse(&nested(128), &limits()).is_ok());
        let err = parse(&nested(129), &limits()).unwrap_err().to_string();
        assert!(err.contains("max_depth (128) at byte"), "{err}");
        let mut siblings = b"[\xe8\x03\x00\x00".to_vec();
        siblings.extend(b"[\x00\x00\x00\x00".repeat(1000));
        let two = DecodeLimits {
            max_depth: 2,
            ..limits()
        };
        assert!(parse(&siblings, &two).is_ok());
        // 100 nested one-item lists, flagged, then a list of two references to the innermost
        // outer one: each is within the limit, the copy placed inside is not.
        let mut doc = b"[\x02\x00\x00\x00".to_vec();
        doc.extend(b"\xdb\x01\x00\x00\x00".repeat(100));
        doc.push(b'N');
        doc.extend_from_slice(b"r\x00\x00\x00\x00");
        assert!(parse(&doc, &limits()).is_ok());
        let mut doc = b"[\x01\x00\x00\x00".repeat(60);
        doc.extend_from_slice(b"[\x02\x00\x00\x00");
        doc.extend(b"\xdb\x01\x00\x00\x00".repeat(60));
        doc.push(b'N');
        doc.extend_from_slice(b"r\x00\x00\x00\x00");
        // The reference is at depth 61 and copies 61 levels: 122 stays within 128...
        assert!(parse(&doc, &limits()).is_ok());
        let small = DecodeLimits {
            max_depth: 100,
            ..limits()
        };
        // ...but not within 100.
        assert!(parse(&doc, &small)
            .unwrap_err()
            .to_string()
            .contains("max_depth"));
        // A billion laughs: each list holds two references to the one before.
        let mut doc = Vec::new();
        let levels = 40u32;
        doc.extend_from_slice(b"[");
        doc.extend_from_slice(&(levels + 1).to_le_bytes());
        doc.extend_from_slice(b"\xdb\x01\x00\x00\x00N");
        for i in 0..levels {
            doc.extend_from_slice(b"\xdb\x02\x00\x00\x00r");
            doc.extend_from_slice(&i.to_le_bytes());
            doc.push(b'r');
            doc.extend_from_slice(&i.to_le_bytes());
        }
        let err = parse(&doc, &limits()).unwrap_err().to_string();
        assert!(err.contains("expand"), "{err}");
    }

    #[test]
    fn references_copy_tuples_as_tuples_and_lists_as_lists() {
        // Python 3: marshal.loads of this is [(None,), [None], (None,), [None]].
        let doc =
            b"[\x04\x00\x00\x00\xa9\x01N\xdb\x01\x00\x00\x00Nr\x00\x00\x00\x00r\x01\x00\x00\x00";
        let (tuple, list) = (
            Value::Tuple(vec![Value::None]),
            Value::List(vec![Value::None]),
        );
        assert_eq!(
            parse(doc, &limits()).unwrap(),
            Value::List(vec![tuple.clone(), list.clone(), tuple.clone(), list])
        );
        // `(`: a tuple with a 4-byte length, as Python writes one of 256 items or more.
        assert_eq!(parse(b"(\x01\x00\x00\x00N", &limits()).unwrap(), tuple);
    }

    #[test]
    fn a_reference_is_as_deep_as_where_it_is_placed_plus_what_it_copies() {
        // [A, B]: A is 60 nested lists (flagged, the outermost is reference 0); B is 30 nested
        // lists around a reference to A. As read, nothing is deeper than 61; resolved, the copy
        // of A inside B ends at depth 1 + 30 + 60 = 91.
        let mut doc = b"[\x02\x00\x00\x00".to_vec();
        doc.extend(b"\xdb\x01\x00\x00\x00".repeat(60));
        doc.push(b'N');
        doc.extend(b"[\x01\x00\x00\x00".repeat(30));
        doc.extend_from_slice(b"r\x00\x00\x00\x00");
        let within = |max_depth| DecodeLimits {
            max_depth,
            ..limits()
        };
        assert!(parse(&doc, &within(91)).is_ok());
        let err = parse(&doc, &within(90)).unwrap_err().to_string();
        assert!(err.contains("max_depth (90)"), "{err}");
    }

    #[test]
    fn references_may_expand_a_payload_to_four_values_per_byte_from_1_mib_to_1_gib() {
        // The budget's bounds: a few hundred bytes of nested references (each level a list of
        // 20 references to the one below) cannot build more than the floor, nor a 64 MiB
        // message more than the cap.
        assert_eq!(budget(500), EXPANSION_FLOOR);
        assert_eq!(budget(64 << 20), EXPANSION_CAP);
        assert_eq!(budget(1 << 20), (1 << 20) * EXPANSION);
        // A list of `n` copies of one str (`u`) or bytes (`s`) of `len` bytes: the first, then
        // references to it.
        let doc = |code: u8, len: usize, n: usize| {
            let mut doc = vec![b'['];
            doc.extend_from_slice(&(n as u32).to_le_bytes());
            doc.push(code | FLAG_REF);
            doc.extend_from_slice(&(len as u32).to_le_bytes());
            doc.extend(std::iter::repeat_n(b'x', len));
            for _ in 1..n {
                doc.extend_from_slice(b"r\x00\x00\x00\x00");
            }
            doc
        };
        // What it costs, in bytes of memory: the list's value, and each copy's value and text.
        let cost = |len: usize, n: usize| VALUE_SIZE + n * (VALUE_SIZE + len);
        // The most copies that fit a budget.
        let most = |len: usize, budget: usize| (budget - VALUE_SIZE) / (VALUE_SIZE + len);
        for code in [b'u', b's'] {
            // Within the floor (the documents are far smaller than the floor / EXPANSION).
            let n = most(1_000, EXPANSION_FLOOR);
            assert!(doc(code, 1_000, n + 1).len() * EXPANSION < EXPANSION_FLOOR);
            assert!(cost(1_000, n) <= EXPANSION_FLOOR && cost(1_000, n + 1) > EXPANSION_FLOOR);
            // Beyond it, EXPANSION times the payload: 1,000,000 bytes copied, each copy 5 bytes.
            let len = 1_000_000;
            let budget = |n: usize| doc(code, len, n).len() * EXPANSION;
            let at_most = (1..).find(|&n| cost(len, n) > budget(n)).unwrap() - 1;
            assert!(budget(at_most) > EXPANSION_FLOOR);
            for (len, n, fits) in [
                (1_000, n, true),
                (1_000, n + 1, false),
                (len, at_most, true),
                (len, at_most + 1, false),
            ] {
                let got = parse(&doc(code, len, n), &limits());
                let what = format!(
                    "{} of {len} bytes × {n}: {:?}",
                    code as char,
                    got.as_ref().err()
                );
                assert_eq!(got.is_ok(), fits, "{what}");
                if let Err(e) = got {
                    assert!(
                        e.to_string()
                            .contains(&format!("expand the payload beyond {EXPANSION} times")),
                        "{what}"
                    );
                }
            }
        }
    }

    /// What Python writes for data that shares objects is read: `marshal.dumps(x)` of
    /// `[tuple(range(10))] * 100_000` (500,052 bytes) and of `[{'a': 1, …, 'e': 5}] * 20_000`
    /// (100,042 bytes), byte for byte as CPython 3.11 writes them.
    #[test]
    fn pythons_shared_objects_are_read() {
        let mut tuples = vec![b'['];
        tuples.extend_from_slice(&100_000u32.to_le_bytes());
        tuples.extend_from_slice(b"\xa9\x0a");
        for i in 0..10i32 {
            tuples.push(b'i' | FLAG_REF);
            tuples.extend_from_slice(&i.to_le_bytes());
        }
        for _ in 1..100_000 {
            tuples.extend_from_slice(b"r\x00\x00\x00\x00");
        }
        assert_eq!(tuples.len(), 500_052);
        let Value::List(read) = parse(&tuples, &limits()).unwrap() else {
            panic!("a list")
        };
        assert_eq!(read.len(), 100_000);
        assert_eq!(
            read[99_999],
            Value::Tuple((0..10).map(Value::Int).collect())
        );

        let mut dicts = vec![b'['];
        dicts.extend_from_slice(&20_000u32.to_le_bytes());
        dicts.push(b'{' | FLAG_REF);
        for (i, key) in [b'a', b'b', b'c', b'd', b'e'].into_iter().enumerate() {
            dicts.extend_from_slice(&[b'z' | FLAG_REF, 1, key, b'i' | FLAG_REF]);
            dicts.extend_from_slice(&(i as i32 + 1).to_le_bytes());
        }
        dicts.push(b'0');
        for _ in 1..20_000 {
            dicts.extend_from_slice(b"r\x00\x00\x00\x00");
        }
        assert_eq!(dicts.len(), 100_042);
        let Value::List(read) = parse(&dicts, &limits()).unwrap() else {
            panic!("a list")
        };
        assert_eq!(read.len(), 20_000);
    }

    /// A 40 MiB list of `N` (42 million objects of one byte each) is refused as it is read,
    /// at the 1 GiB the document may take in memory, not after its nodes took 1.7 GB
    /// (helper-111 #2); a list of 4 million takes its 160 MB and is read.
    #[test]
    fn a_document_of_one_byte_objects_is_bounded_as_it_is_read() {
        let list = |n: u32| {
            let mut doc = vec![b'['];
            doc.extend_from_slice(&n.to_le_bytes());
            doc.extend(std::iter::repeat_n(b'N', n as usize));
            doc
        };
        let err = parse(&list(42 << 20), &limits()).unwrap_err().to_string();
        assert!(err.contains("expands beyond"), "{err}");
        let Value::List(items) = parse(&list(4 << 20), &limits()).unwrap() else {
            panic!("a list")
        };
        assert_eq!(items.len(), 4 << 20);
    }

    /// Hostile documents a review found (each bounded now, each an error, none a crash).
    #[test]
    fn references_cannot_chain_or_multiply_values_and_big_ints_cannot_take_quadratic_time() {
        // Each flagged reference to the one before: CPython enters no flagged reference, so
        // the second names an object never entered ("invalid reference" there). Here it was
        // a chain of 200,000 links, walked once per item (quadratic) and recursively (a stack
        // overflow, the process aborted).
        let n = 200_000u32;
        let mut chain = vec![b'['];
        chain.extend_from_slice(&n.to_le_bytes());
        chain.extend_from_slice(b"\xe9\x07\x00\x00\x00");
        for i in 0..n - 1 {
            chain.push(b'r' | FLAG_REF);
            chain.extend_from_slice(&i.to_le_bytes());
        }
        let err = parse(&chain, &limits()).unwrap_err().to_string();
        assert!(
            err.contains("reference 1 beyond the 1 objects read"),
            "{err}"
        );
        // A flagged list of 39 Nones, then a million references to it: 40 values per 5 bytes,
        // 256 times the payload in memory (a 64 MiB message: 16 GiB). Refused by the budget.
        let m = 1_000_000u32;
        let mut many = vec![b'['];
        many.extend_from_slice(&m.to_le_bytes());
        many.push(b'[' | FLAG_REF);
        many.extend_from_slice(&39u32.to_le_bytes());
        many.extend(std::iter::repeat_n(b'N', 39));
        for _ in 1..m {
            many.extend_from_slice(b"r\x00\x00\x00\x00");
        }
        let err = parse(&many, &limits()).unwrap_err().to_string();
        assert!(err.contains("expand the payload beyond"), "{err}");
        // Ints beyond 128 bits: each one's decimal text costs time quadratic in its length,
        // so a document reads MAX_LONG_DIGITS_TOTAL of their digits, no more.
        let big = |count: usize| {
            let mut doc = vec![b'['];
            doc.extend_from_slice(&(count as u32).to_le_bytes());
            for _ in 0..count {
                doc.push(b'l');
                doc.extend_from_slice(&(MAX_LONG_DIGITS as i32).to_le_bytes());
                doc.extend(std::iter::repeat_n([0xff, 0x7f], MAX_LONG_DIGITS).flatten());
            }
            doc
        };
        let fits = MAX_LONG_DIGITS_TOTAL / MAX_LONG_DIGITS;
        assert!(parse(&big(fits), &limits()).is_ok());
        let err = parse(&big(fits + 1), &limits()).unwrap_err().to_string();
        assert!(err.contains("more than 16384 digits in all"), "{err}");
        // Small ints are not counted: a thousand of 128 bits are read.
        let mut small = vec![b'['];
        small.extend_from_slice(&1000u32.to_le_bytes());
        for _ in 0..1000 {
            small.extend_from_slice(b"l\x08\x00\x00\x00");
            small.extend(std::iter::repeat_n([0xff, 0x7f], 8).flatten());
        }
        assert!(parse(&small, &limits()).is_ok());
    }

    /// Each reference wrapped in a flagged one-item tuple (`)` with FLAG_REF), naming the
    /// tuple before: every link is a whole object, so every reference is taken, and 300,000 of
    /// them (2 MB) made a chain of shared nodes that `into_value` refused at `max_depth`, but
    /// whose drop recursed once per link: a stack overflow, the process aborted (helper-111
    /// #1). It is refused as it is read, on a thread with a worker's stack.
    #[test]
    fn references_wrapped_in_tuples_cannot_chain_deeper_than_max_depth() {
        let n = 300_000u32;
        let mut doc = vec![b'['];
        doc.extend_from_slice(&n.to_le_bytes());
        doc.extend_from_slice(&[b')' | FLAG_REF, 1, b'N']);
        for k in 0..n - 1 {
            doc.extend_from_slice(&[b')' | FLAG_REF, 1, b'r']);
            doc.extend_from_slice(&k.to_le_bytes());
        }
        let err = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&doc, &limits()).map(|_| ()))
            .unwrap()
            .join()
            .expect("no stack overflow")
            .unwrap_err()
            .to_string();
        assert!(err.contains("deeper than max_depth (128)"), "{err}");
        // References within the depth are read as before: each tuple holds the one before.
        let mut fits = vec![b'['];
        fits.extend_from_slice(&100u32.to_le_bytes());
        fits.extend_from_slice(&[b')' | FLAG_REF, 1, b'N']);
        for k in 0..99u32 {
            fits.extend_from_slice(&[b')' | FLAG_REF, 1, b'r']);
            fits.extend_from_slice(&k.to_le_bytes());
        }
        let Value::List(items) = parse(&fits, &limits()).unwrap() else {
            panic!("a list")
        };
        assert_eq!(items.len(), 100);
        let mut deepest = &items[99];
        let mut levels = 0;
        while let Value::Tuple(inner) = deepest {
            deepest = &inner[0];
            levels += 1;
        }
        assert_eq!((levels, deepest), (100, &Value::None));
    }

    #[test]
    fn every_serde_shape_is_written_as_python_reads_it() {
        #[derive(serde::Serialize)]
        struct Unit;
        #[derive(serde::Serialize)]
        struct Wrapper<T>(T);
        #[derive(serde::Serialize)]
        struct Pair(u8, bool);
        #[derive(serde::Serialize)]
        struct Named {
            a: u8,
        }
        struct Set<T>(T);
        impl<T: Serialize> Serialize for Set<T> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_newtype_struct(super::super::PYTHON_SET, &self.0)
            }
        }
        fn enc<T: Serialize>(v: T) -> Vec<u8> {
            encode(&v, false).unwrap()
        }
        // Python 3's marshal.loads of each right-hand side is the value on the left.
        for (got, want) in [
            (enc(-3i8), &b"i\xfd\xff\xff\xff"[..]),
            (enc(300i16), b"i\x2c\x01\x00\x00"),
            (enc(1.5f32), b"g\x00\x00\x00\x00\x00\x00\xf8?"),
            (enc(Some(5u8)), b"i\x05\x00\x00\x00"),
            (enc(Unit), b"N"),
            (enc(Wrapper(7u8)), b"i\x07\x00\x00\x00"),
            // A tuple struct is a tuple, (1, True); a struct a dict of its fields, {'a': 1}.
            (enc(Pair(1, true)), b"(\x02\x00\x00\x00i\x01\x00\x00\x00T"),
            (
                enc(Named { a: 1 }),
                b"{u\x01\x00\x00\x00ai\x01\x00\x00\x000",
            ),
            (
                enc([Named { a: 1 }]),
                b"(\x01\x00\x00\x00{u\x01\x00\x00\x00ai\x01\x00\x00\x000",
            ),
            // i32's range is `i`; one past either end is `l`, 15-bit digits.
            (enc(i64::from(i32::MAX)), b"i\xff\xff\xff\x7f"),
            (enc(i64::from(i32::MIN)), b"i\x00\x00\x00\x80"),
            (
                enc(1i64 << 31),
                b"l\x03\x00\x00\x00\x00\x00\x00\x00\x02\x00",
            ),
            (
                enc(-(1i64 << 31) - 1),
                b"l\xfd\xff\xff\xff\x01\x00\x00\x00\x02\x00",
            ),
            // A Python set ({'a'}) is `<`; only a list becomes one: bytes stay bytes, and any
            // other newtype's list stays a list.
            (enc(Set(vec!["a"])), b"<\x01\x00\x00\x00u\x01\x00\x00\x00a"),
            (enc(Set(vec![1u8, 2])), b"s\x02\x00\x00\x00\x01\x02"),
            (
                enc(Wrapper(vec![1u16])),
                b"[\x01\x00\x00\x00i\x01\x00\x00\x00",
            ),
        ] {
            assert_eq!(got, want, "{}", String::from_utf8_lossy(want));
        }
        // A value that fails to serialize says why.
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("no marshal for this"))
            }
        }
        let err = encode(&(1, Refuses), false).unwrap_err().to_string();
        assert!(err.contains("marshal: no marshal for this"), "{err}");
    }
}
