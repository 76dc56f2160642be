//! serpent, Pyro's default serializer (id 1): Python literal syntax behind a fixed header.
//!
//! The writer is a serde `Serializer` that prints Python literals (`None`, `True`, ints,
//! floats with `1e30000` for infinity and Pyro's NaN dict, quoted strs, bytes as Pyro's base64
//! dict, tuples, lists, dicts). The reader parses one Python literal expression into the
//! shared [`Value`] tree, nesting at most `max_depth` deep, then deserializes from the tree.
//! A complex number (`(1.5-2.0j)`, `2j`) is read as the tuple `(real, imag)` of two floats,
//! which is how `num_complex::Complex64` and `(f64, f64)` deserialize.
//! `../shared/serpent.md` is the specification.

use std::fmt::Write as _;

use base64::Engine;
use serde::ser::{self, Serialize};

use super::value::Value;
use super::DecodeLimits;
use crate::error::Error;

/// The header every serpent document starts with.
pub(super) const HEADER: &str = "# serpent utf-8 python3.2\n";

fn codec_error(e: impl std::fmt::Display) -> Error {
    Error::Codec(format!("serpent: {e}"))
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    encode_in(value, false)
}

/// Encodes `value`; with `pyro4`, a `__class__` value `Pyro5.<rest>` is written `Pyro4.<rest>`
/// (a URI is `Pyro4.core.URI` there, an error `Pyro4.errors.…`).
pub(super) fn encode_in<T: Serialize + ?Sized>(value: &T, pyro4: bool) -> Result<Vec<u8>, Error> {
    let mut out = Writer {
        out: String::from(HEADER),
        pyro4,
        json: false,
        class_next: false,
    };
    value.serialize(&mut out).map_err(codec_error)?;
    Ok(out.out.into_bytes())
}

/// Encodes `value` as JSON text the way Pyro's json serializer writes it (module `json` reads
/// it): the same writer in its JSON dialect. `null`/`true`/`false`, tuples and sets as arrays,
/// `NaN`/`Infinity` as bare tokens (as Python's `json` writes them), bytes as the base64 dict
/// serpent uses, keys that are not strs written as strs (`1` → `"1"`, as Python's `json` does).
pub(super) fn encode_json<T: Serialize + ?Sized>(value: &T, pyro4: bool) -> Result<Vec<u8>, Error> {
    let mut out = Writer {
        out: String::new(),
        pyro4,
        json: true,
        class_next: false,
    };
    value
        .serialize(&mut out)
        .map_err(|e| Error::Codec(format!("json: {e}")))?;
    Ok(out.out.into_bytes())
}

/// A serpent list of already encoded `items` (each a whole document, header included).
pub(super) fn list_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = HEADER.as_bytes().to_vec();
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.strip_prefix(HEADER.as_bytes()).unwrap_or(item));
    }
    out.push(b']');
    out
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, Error> {
    let value = parse(bytes, limits)?;
    T::deserialize(value).map_err(codec_error)
}

/// Parses a whole serpent document into a value tree.
pub(super) fn parse(bytes: &[u8], limits: &DecodeLimits) -> Result<Value, Error> {
    let text = std::str::from_utf8(bytes).map_err(codec_error)?;
    if text.contains('\0') {
        return Err(codec_error("the document contains a NUL character"));
    }
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
        depth: 0,
        max_depth: limits.depth(),
    };
    p.skip_space();
    let value = p.value()?;
    p.skip_space();
    if p.at != p.s.len() {
        return Err(p.error("trailing text after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Error {
        codec_error(format!("{what} at byte {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// Skips whitespace and `#` comments.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.at += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.at += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("a value was expected")),
            Some(b'(') => self.nested(|p| p.tuple()),
            Some(b'[') => self.nested(|p| p.list()),
            Some(b'{') => self.nested(|p| p.dict_or_set()),
            Some(b'\'' | b'"') => Ok(Value::Str(self.strings()?)),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.word(),
            Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Value, Error>,
    ) -> Result<Value, Error> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(self.error(&format!(
                "value nested deeper than max_depth ({})",
                self.max_depth
            )));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    /// Items up to `close`, separated by commas, a trailing comma allowed; returns them and
    /// whether the last one was followed by a comma.
    fn items(&mut self, close: u8) -> Result<(Vec<Value>, bool), Error> {
        self.at += 1; // the opening bracket
        let mut items = Vec::new();
        let mut trailing = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing));
            }
            items.push(self.value()?);
            trailing = self.eat(b',');
            if !trailing {
                if self.eat(close) {
                    return Ok((items, false));
                }
                return Err(self.error("expected ',' or a closing bracket"));
            }
        }
    }

    fn tuple(&mut self) -> Result<Value, Error> {
        let (mut items, trailing) = self.items(b')')?;
        // `(x)` is x; `(x,)` and `()` are tuples (a complex number `(a+bj)` is a number).
        if items.len() == 1 && !trailing {
            return Ok(items.pop().expect("one item"));
        }
        Ok(Value::Tuple(items))
    }

    fn list(&mut self) -> Result<Value, Error> {
        Ok(Value::List(self.items(b']')?.0))
    }

    fn dict_or_set(&mut self) -> Result<Value, Error> {
        self.at += 1; // '{'
        if self.eat(b'}') {
            return Ok(Value::Dict(Vec::new()));
        }
        let first = self.value()?;
        if self.eat(b':') {
            let mut entries = vec![(first, self.value()?)];
            loop {
                if !self.eat(b',') {
                    if !self.eat(b'}') {
                        return Err(self.error("expected ',' or '}' in a dict"));
                    }
                    break;
                }
                if self.eat(b'}') {
                    break;
                }
                let key = self.value()?;
                if !self.eat(b':') {
                    return Err(self.error("expected ':' in a dict"));
                }
                entries.push((key, self.value()?));
            }
            let dict = Value::Dict(entries);
            // Serpent writes a complex number with a NaN part as this dict: read as any
            // complex number is, the tuple `(real, imag)`.
            Ok(match dict.complex_parts() {
                Some((real, imag)) => Value::Tuple(vec![real, imag]),
                None => dict,
            })
        } else {
            let mut items = vec![first];
            while self.eat(b',') {
                if self.eat(b'}') {
                    return Ok(Value::Set(items));
                }
                items.push(self.value()?);
            }
            if !self.eat(b'}') {
                return Err(self.error("expected ',' or '}' in a set"));
            }
            Ok(Value::Set(items))
        }
    }

    fn word(&mut self) -> Result<Value, Error> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.at += 1;
        }
        let word = &self.s[start..self.at];
        match word {
            b"None" => Ok(Value::None),
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            _ if matches!(self.peek(), Some(b'\'' | b'"')) => {
                let prefix = String::from_utf8_lossy(word).to_ascii_lowercase();
                self.at = start;
                match prefix.as_str() {
                    "b" | "rb" | "br" => Ok(Value::Bytes(self.bytes_literal()?)),
                    "r" | "u" => Ok(Value::Str(self.strings()?)),
                    _ => Err(self.error("unsupported string prefix")),
                }
            }
            b"set" if self.s[self.at..].starts_with(b"()") => {
                self.at += 2;
                Ok(Value::Set(Vec::new()))
            }
            _ => Err(self.error("unexpected name (only None, True, False are literals)")),
        }
    }

    /// A number: an int, a float, or a complex number (`a+bj`, `a-bj`, `bj`: serpent writes
    /// `(a+bj)`, parenthesized), read as the tuple `(real, imag)`.
    fn number(&mut self) -> Result<Value, Error> {
        let (value, imaginary) = self.real_or_imaginary()?;
        if imaginary {
            // `bj` alone: Python's `-2j` is `(-0.0-2.0j)`, its real part the sign's.
            let Value::Float(imag) = value else {
                unreachable!("an imaginary part is a float")
            };
            let real = if imag.is_sign_negative() { -0.0 } else { 0.0 };
            return Ok(complex(real, imag));
        }
        // `a+bj` or `a-bj`: a real number, a sign, then an imaginary one with no sign of its own.
        let after_real = self.at;
        self.skip_space();
        if let Some(sign @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            self.skip_space();
            if self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                if let (Value::Float(imag), true) = self.real_or_imaginary()? {
                    let real = match value {
                        Value::Int(i) => i as f64,
                        Value::BigInt(ref digits) => digits.parse().unwrap_or(f64::NAN),
                        Value::Float(f) => f,
                        _ => unreachable!("a number"),
                    };
                    return Ok(complex(real, if sign == b'-' { -imag } else { imag }));
                }
            }
            return Err(self.error("a number followed by a sign and no imaginary number"));
        }
        self.at = after_real;
        Ok(value)
    }

    /// An int or float, or an imaginary number (its float, and `true`).
    fn real_or_imaginary(&mut self) -> Result<(Value, bool), Error> {
        let start = self.at;
        let negative = match self.peek() {
            Some(b'-') => {
                self.at += 1;
                true
            }
            Some(b'+') => {
                self.at += 1;
                false
            }
            _ => false,
        };
        self.skip_space();
        let digits_start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_'))
            || (self.at > digits_start
                && matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s[self.at - 1], b'e' | b'E')
                && !self
                    .s
                    .get(digits_start..digits_start + 2)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"0x")))
        {
            self.at += 1;
        }
        let text: String = std::str::from_utf8(&self.s[digits_start..self.at])
            .expect("ascii")
            .replace('_', "");
        if text.is_empty() {
            self.at = start;
            return Err(self.error("a number was expected"));
        }
        let sign = if negative { "-" } else { "" };
        let lower = text.to_ascii_lowercase();
        let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
            .into_iter()
            .find(|(p, _)| lower.starts_with(p));
        if let Some((prefix, radix)) = radix {
            let n = i128::from_str_radix(&lower[prefix.len()..], radix)
                .map_err(|_| self.error("invalid or too large an int literal"))?;
            return Ok((Value::Int(if negative { -n } else { n }), false));
        }
        if lower.bytes().all(|c| c.is_ascii_digit()) {
            if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|c| c != b'0') {
                return Err(self.error("leading zeros in an int literal"));
            }
            return Ok((
                match format!("{sign}{lower}").parse::<i128>() {
                    Ok(n) => Value::Int(n),
                    Err(_) => Value::BigInt(format!("{sign}{}", lower.trim_start_matches('0'))),
                },
                false,
            ));
        }
        let (lower, imaginary) = match lower.strip_suffix('j') {
            Some(imag) => (imag, true),
            None => (lower.as_str(), false),
        };
        // A float, as Python writes them (digits, a point, an exponent: not "inf" or "nan",
        // which Rust would read); out of range (1e30000, Pyro's infinity) is infinity.
        if !lower
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
        {
            return Err(self.error("invalid number literal"));
        }
        let f: f64 = lower
            .parse()
            .map_err(|_| self.error("invalid number literal"))?;
        Ok((Value::Float(if negative { -f } else { f }), imaginary))
    }

    /// One or more adjacent string literals (Python concatenates them).
    fn strings(&mut self) -> Result<String, Error> {
        let mut out = String::new();
        loop {
            self.skip_space();
            let raw = match self.peek() {
                Some(b'r' | b'R') => {
                    self.at += 1;
                    true
                }
                Some(b'u' | b'U') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            // (Only the first pass can miss its quote: the loop comes round again only when
            // one follows.)
            if !matches!(self.peek(), Some(b'\'' | b'"')) {
                return Err(self.error("a string was expected"));
            }
            out.push_str(&self.quoted(raw)?);
            // Another string literal follows (a prefix counts only with its quote).
            let save = self.at;
            self.skip_space();
            let quote_at = match self.peek() {
                Some(b'r' | b'R' | b'u' | b'U') => self.at + 1,
                _ => self.at,
            };
            if !matches!(self.s.get(quote_at), Some(b'\'' | b'"')) {
                self.at = save;
                return Ok(out);
            }
        }
    }

    /// A bytes literal `b'…'` (Pyro5 with SERPENT_BYTES_REPR).
    fn bytes_literal(&mut self) -> Result<Vec<u8>, Error> {
        let mut raw = false;
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphabetic()) {
            raw |= c.eq_ignore_ascii_case(&b'r');
            self.at += 1;
        }
        let text = self.quoted(raw)?;
        text.chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| self.error("non-byte in a bytes literal"))
            })
            .collect()
    }

    /// A quoted string at the cursor, single or triple quoted, escapes decoded unless `raw`.
    fn quoted(&mut self, raw: bool) -> Result<String, Error> {
        let q = self.peek().expect("a quote");
        let triple = self.s[self.at..].starts_with(&[q, q, q]);
        self.at += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            if c == q && (!triple || self.s[self.at..].starts_with(&[q, q, q])) {
                self.at += if triple { 3 } else { 1 };
                return Ok(out);
            }
            if c == b'\n' && !triple {
                return Err(self.error("newline in a string"));
            }
            if c == b'\\' {
                self.at += 1;
                if raw {
                    // The backslash stays, and keeps a quote after it in the string; a
                    // character beyond ASCII after it is read whole below.
                    out.push('\\');
                    if let Some(n) = self.peek().filter(u8::is_ascii) {
                        out.push(char::from(n));
                        self.at += 1;
                    }
                    continue;
                }
                self.escape(&mut out)?;
                continue;
            }
            // A run of plain ASCII at once (the common case: base64, names), else one whole
            // UTF-8 character, validated over its own bytes only: validating the rest of the
            // input for each character made long strings quadratic.
            let run = self.s[self.at..]
                .iter()
                .position(|&b| b == q || b == b'\\' || b == b'\n' || !b.is_ascii())
                .unwrap_or(self.s.len() - self.at);
            if run > 0 {
                let ascii = std::str::from_utf8(&self.s[self.at..self.at + run]).expect("ASCII");
                out.push_str(ascii);
                self.at += run;
                continue;
            }
            let end = self.s.len().min(self.at + 4);
            let head = std::str::from_utf8(&self.s[self.at..end]).unwrap_or_else(|e| {
                std::str::from_utf8(&self.s[self.at..self.at + e.valid_up_to()]).expect("valid")
            });
            let ch = head
                .chars()
                .next()
                .ok_or_else(|| self.error("invalid text"))?;
            out.push(ch);
            self.at += ch.len_utf8();
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), Error> {
        let Some(c) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.at += 1;
        let hex = |p: &mut Self, n: usize| -> Result<char, Error> {
            let digits =
                p.s.get(p.at..p.at + n)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .ok_or_else(|| p.error("truncated escape"))?;
            // Hex digits only (`from_str_radix` would take a sign too, Python does not).
            if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                return Err(p.error("invalid escape"));
            }
            let code = u32::from_str_radix(digits, 16).map_err(|_| p.error("invalid escape"))?;
            p.at += n;
            char::from_u32(code).ok_or_else(|| p.error("escape of an invalid code point"))
        };
        let ch = match c {
            b'\n' => return Ok(()),
            b'\\' => '\\',
            b'\'' => '\'',
            b'"' => '"',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'a' => '\x07',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'v' => '\x0b',
            b'x' => hex(self, 2)?,
            b'u' => hex(self, 4)?,
            b'U' => hex(self, 8)?,
            b'0'..=b'7' => {
                let mut code = u32::from(c - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            code = code * 8 + u32::from(d - b'0');
                            self.at += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(code).ok_or_else(|| self.error("invalid octal escape"))?
            }
            // Unknown escapes stay as written, as in Python; a character beyond ASCII after
            // the backslash is read whole by the caller.
            other if other.is_ascii() => {
                out.push('\\');
                char::from(other)
            }
            _ => {
                self.at -= 1;
                '\\'
            }
        };
        out.push(ch);
        Ok(())
    }
}

/// A complex number as rmi reads it: the tuple `(real, imag)`.
fn complex(real: f64, imag: f64) -> Value {
    Value::Tuple(vec![Value::Float(real), Value::Float(imag)])
}

/// Writes Python literals.
struct Writer {
    out: String,
    /// Write Pyro4's class names for Pyro5's.
    pyro4: bool,
    /// Write JSON instead of Python literals.
    json: bool,
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
    /// Writes a map value, renaming a Pyro5 class to Pyro4's after a `__class__` key.
    fn map_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        let class = std::mem::take(&mut self.class_next);
        let start = self.out.len();
        value.serialize(&mut *self)?;
        let quoted = if self.json { "\"Pyro5." } else { "'Pyro5." };
        if class && self.out[start..].starts_with(quoted) {
            self.out.replace_range(start + 5..start + 6, "4");
        }
        Ok(())
    }

    /// Notes whether the key written from `start` on is `'__class__'`.
    fn map_key_written(&mut self, start: usize) {
        let key = if self.json {
            "\"__class__\""
        } else {
            "'__class__'"
        };
        self.class_next = self.pyro4 && &self.out[start..] == key;
    }

    /// JSON keys are strings: a key written from `start` that is not one is quoted, as
    /// Python's `json` writes an int key `1` as `"1"`.
    fn json_key(&mut self, start: usize) {
        if self.json && !self.out[start..].starts_with('"') {
            let text = self.out.split_off(start);
            self.string(&text);
        }
    }

    /// A JSON string, `ensure_ascii=False` as Pyro writes it.
    fn json_string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn string(&mut self, s: &str) {
        if self.json {
            return self.json_string(s);
        }
        let quote = if s.contains('\'') && !s.contains('"') {
            '"'
        } else {
            '\''
        };
        self.out.push(quote);
        for c in s.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if c == quote => {
                    self.out.push('\\');
                    self.out.push(c);
                }
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(self.out, "\\x{:02x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push(quote);
    }

    fn float(&mut self, f: f64) {
        if self.json && !f.is_finite() {
            // Python's json writes (and reads) these non-standard tokens.
            self.out.push_str(if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            });
        } else if f.is_nan() {
            self.out.push_str("{'__class__':'float','value':'nan'}");
        } else if f.is_infinite() {
            self.out
                .push_str(if f > 0.0 { "1e30000" } else { "-1e30000" });
        } else {
            // Rust's shortest round-trip form; add ".0" where it would read as an int.
            let text = format!("{f:?}");
            self.out.push_str(&text);
        }
    }
}

/// A sequence being written: its closing text, and whether an item has been written.
struct Compound<'a> {
    w: &'a mut Writer,
    close: &'static str,
    items: usize,
    /// A tuple of one needs a trailing comma.
    tuple: bool,
}

impl Compound<'_> {
    fn comma(&mut self) {
        if self.items > 0 {
            self.w.out.push(',');
        }
        self.items += 1;
    }

    fn finish(self) {
        if self.tuple && self.items == 1 {
            self.w.out.push(',');
        }
        self.w.out.push_str(self.close);
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
        self.out.push_str(match (v, self.json) {
            (true, false) => "True",
            (false, false) => "False",
            (true, true) => "true",
            (false, true) => "false",
        });
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
        let _ = write!(self.out, "{v}");
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
        let _ = write!(self.out, "{v}");
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), WriteError> {
        self.float(v.into());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), WriteError> {
        self.float(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), WriteError> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), WriteError> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), WriteError> {
        // Pyro's default: a dict with the bytes in base64.
        let (open, close) = if self.json {
            ("{\"data\": ", ", \"encoding\": \"base64\"}")
        } else {
            ("{'data': ", ", 'encoding': 'base64'}")
        };
        self.out.push_str(open);
        self.string(&base64::engine::general_purpose::STANDARD.encode(v));
        self.out.push_str(close);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), WriteError> {
        self.out.push_str(if self.json { "null" } else { "None" });
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
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        // Pyro4 peers get a list: Python 2 cannot read a set literal, and Pyro4's own name
        // server sends its metadata sets as lists for that reason.
        if name != super::PYTHON_SET || self.json || self.pyro4 {
            return value.serialize(self);
        }
        // A Python set: the sequence's brackets made braces; serpent has no empty-set literal.
        let start = self.out.len();
        value.serialize(&mut *self)?;
        let written = &self.out[start..];
        if written == "[]" {
            self.out.replace_range(start.., "()");
        } else if written.starts_with('[') && written.ends_with(']') {
            let end = self.out.len() - 1;
            self.out.replace_range(end.., "}");
            self.out.replace_range(start..start + 1, "{");
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
        self.out.push('{');
        self.string(variant);
        self.out.push(':');
        value.serialize(&mut *self)?;
        self.out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        self.out.push('[');
        Ok(Compound {
            w: self,
            close: "]",
            items: 0,
            tuple: false,
        })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, WriteError> {
        if self.json {
            return self.serialize_seq(None);
        }
        self.out.push('(');
        Ok(Compound {
            w: self,
            close: ")",
            items: 0,
            tuple: true,
        })
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
        self.out.push('{');
        self.string(variant);
        let json = self.json;
        self.out.push_str(if json { ":[" } else { ":(" });
        Ok(Compound {
            w: self,
            close: if json { "]}" } else { ")}" },
            items: 0,
            tuple: !json,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, WriteError> {
        self.out.push('{');
        Ok(Compound {
            w: self,
            close: "}",
            items: 0,
            tuple: false,
        })
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
        self.out.push('{');
        self.string(variant);
        self.out.push_str(":{");
        Ok(Compound {
            w: self,
            close: "}}",
            items: 0,
            tuple: false,
        })
    }
    /// A non-empty `Vec<u8>` is bytes (Pyro's base64 dict) in serpent; json has no bytes.
    fn collect_seq<I>(self, iter: I) -> Result<(), WriteError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let items = if self.json {
            Err(iter.into_iter().collect())
        } else {
            super::byteseq::as_bytes(iter)
        };
        match items {
            Ok(bytes) => ser::Serializer::serialize_bytes(self, &bytes),
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
        self.comma();
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), WriteError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WriteError> {
        self.comma();
        let start = self.w.out.len();
        key.serialize(&mut *self.w)?;
        self.w.json_key(start);
        self.w.map_key_written(start);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.w.out.push(':');
        self.w.map_value(value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish();
        Ok(())
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
        self.comma();
        let start = self.w.out.len();
        self.w.string(key);
        self.w.map_key_written(start);
        self.w.out.push(':');
        self.w.map_value(value)
    }
    fn end(self) -> Result<(), WriteError> {
        self.finish();
        Ok(())
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
        self.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body<T: Serialize + ?Sized>(v: &T) -> String {
        String::from_utf8(encode(v).unwrap()).unwrap()[HEADER.len()..].to_owned()
    }

    #[test]
    fn the_tutorial_call_is_byte_for_byte_pyros() {
        // serpent.md §5: Pyro4 and Pyro5 send exactly this for welcomeMessage('Rashmi').
        let call = (
            "example.welcome",
            "welcomeMessage",
            ("Rashmi",),
            super::super::NoKwargs,
        );
        assert_eq!(
            String::from_utf8(encode(&call).unwrap()).unwrap(),
            "# serpent utf-8 python3.2\n('example.welcome','welcomeMessage',('Rashmi',),{})"
        );
    }

    #[test]
    fn values_print_as_python_literals() {
        assert_eq!(body(&()), "None");
        assert_eq!(body(&true), "True");
        assert_eq!(body(&-5i32), "-5");
        assert_eq!(body(&u128::MAX), "340282366920938463463374607431768211455");
        assert_eq!(body(&1.5f64), "1.5");
        assert_eq!(body(&f64::INFINITY), "1e30000");
        assert_eq!(body(&f64::NAN), "{'__class__':'float','value':'nan'}");
        assert_eq!(body("it's"), "\"it's\"");
        assert_eq!(body("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(body("l1\nl2\t\x00"), "'l1\\nl2\\t\\x00'");
        assert_eq!(body("日本"), "'日本'");
        assert_eq!(body(&(1,)), "(1,)");
        assert_eq!(body(&vec![1, 2]), "[1,2]");
        assert_eq!(
            body(&serde_bytes::ByteBuf::from(vec![0, 1, b'a', b'b'])),
            "{'data': 'AAFhYg==', 'encoding': 'base64'}"
        );
    }

    #[test]
    fn every_serde_shape_writes_as_its_python_literal() {
        #[derive(serde::Serialize)]
        struct Unit;
        #[derive(serde::Serialize)]
        struct Pair(i8, i8);
        #[derive(serde::Serialize)]
        enum E {
            T(i8, u8),
        }
        fn json<T: Serialize + ?Sized>(v: &T) -> String {
            String::from_utf8(encode_json(v, false).unwrap()).unwrap()
        }
        assert_eq!(body(&-5i8), "-5");
        assert_eq!(body(&-300i16), "-300");
        assert_eq!(body(&u64::MAX), "18446744073709551615");
        assert_eq!(body(&1.5f32), "1.5");
        assert_eq!(body(&'x'), "'x'");
        assert_eq!(body(&Unit), "None");
        assert_eq!(body(&Pair(3, -4)), "(3,-4)");
        assert_eq!(body(&E::T(1, 2)), "{'T':(1,2)}");
        assert_eq!(json(&E::T(1, 2)), r#"{"T":[1,2]}"#);
        // Control characters escaped, a space not.
        assert_eq!(body("a b\u{1f}"), r"'a b\x1f'");
        assert_eq!(json(&f64::NEG_INFINITY), "-Infinity");
        assert_eq!(json(&f64::INFINITY), "Infinity");
    }

    #[test]
    fn a_python_set_is_a_set_literal_and_an_empty_one_a_tuple() {
        struct Set(Vec<&'static str>);
        impl Serialize for Set {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_newtype_struct(super::super::PYTHON_SET, &self.0)
            }
        }
        assert_eq!(body(&Set(vec!["a", "b"])), "{'a','b'}");
        assert_eq!(body(&(Set(vec![]),)), "((),)");
        let json = encode_json(&Set(vec!["a"]), false).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), "[\"a\"]");
        let read = parse_body("{'a','b'}").unwrap();
        assert_eq!(
            read,
            Value::Set(vec![Value::Str("a".into()), Value::Str("b".into())])
        );
    }

    fn parse_body(text: &str) -> Result<Value, Error> {
        parse(
            format!("{HEADER}{text}").as_bytes(),
            &DecodeLimits::default(),
        )
    }

    #[test]
    fn python_literals_parse_as_python_reads_them() {
        assert_eq!(parse_body("None").unwrap(), Value::None);
        assert_eq!(parse_body("  # c\n -5").unwrap(), Value::Int(-5));
        assert_eq!(parse_body("0x_ff").unwrap(), Value::Int(255));
        assert_eq!(
            parse_body("-1361129467683753853853498429727072845824").unwrap(),
            Value::BigInt("-1361129467683753853853498429727072845824".into())
        );
        assert_eq!(parse_body("1e30000").unwrap(), Value::Float(f64::INFINITY));
        assert_eq!(parse_body("1e-07").unwrap(), Value::Float(1e-7));
        assert_eq!(parse_body("'a' \"b\"").unwrap(), Value::Str("ab".into()));
        assert_eq!(
            parse_body(r"'\x41\u00e9\U0001F600\n\101'").unwrap(),
            Value::Str("Aé😀\nA".into())
        );
        assert_eq!(
            parse_body("b'\\x00a'").unwrap(),
            Value::Bytes(vec![0, b'a'])
        );
        assert_eq!(parse_body("(1)").unwrap(), Value::Int(1));
        assert_eq!(
            parse_body("(1,)").unwrap(),
            Value::Tuple(vec![Value::Int(1)])
        );
        assert_eq!(
            parse_body("{1,2,}").unwrap(),
            Value::Set(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(parse_body("set()").unwrap(), Value::Set(vec![]));
        assert_eq!(
            parse_body("{'a':[],}").unwrap(),
            Value::Dict(vec![(Value::Str("a".into()), Value::List(vec![]))])
        );
        for bad in [
            "true",
            "007",
            "1 2",
            "'open",
            "f'x'",
            "[1,,2]",
            "{'a'}:",
            "1+2",
            "1+-2j",
            "inf",
            "nan",
            "-infinity",
            "1e5x",
        ] {
            assert!(parse_body(bad).is_err(), "{bad} should be refused");
        }
        // Complex numbers, as serpent writes them and as Python reads them: the tuple
        // `(real, imag)`.
        let c = |real: f64, imag: f64| Value::Tuple(vec![Value::Float(real), Value::Float(imag)]);
        for (text, expected) in [
            ("(1.0+2.0j)", c(1.0, 2.0)),
            ("(-1.5-2.0j)", c(-1.5, -2.0)),
            ("(0.0+1e30000j)", c(0.0, f64::INFINITY)),
            ("(1e-07-0.0j)", c(1e-7, -0.0)),
            ("3 + 4j", c(3.0, 4.0)),
            ("2j", c(0.0, 2.0)),
            ("0X1E+5j", c(30.0, 5.0)),
            ("1E+5", Value::Float(1e5)),
            (
                "[(1+1j),(2-2.5j)]",
                Value::List(vec![c(1.0, 1.0), c(2.0, -2.5)]),
            ),
        ] {
            assert_eq!(parse_body(text).unwrap(), expected, "{text}");
        }
        // Serpent's dict for a complex with a NaN part: the same tuple, NaN read as a float.
        let nan = "{'__class__':'complex','real':{'__class__':'float','value':'nan'},'imag':1.0}";
        let (real, imag): (f64, f64) = decode(
            format!("{HEADER}{nan}").as_bytes(),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert!(real.is_nan() && imag == 1.0);
        let Value::Tuple(parts) = parse_body("-2j").unwrap() else {
            panic!("a complex")
        };
        assert!(matches!(parts[..], [Value::Float(r), Value::Float(i)]
            if r == 0.0 && r.is_sign_negative() && i == -2.0));
        assert!(parse(b"'a\0'", &DecodeLimits::default()).is_err());
    }

    #[test]
    fn strings_mixing_ascii_multibyte_quotes_and_newlines_parse_whole() {
        assert_eq!(
            parse_body(r"'ab\u00e9c d\\'").unwrap(),
            Value::Str("ab\u{e9}c d\\".into())
        );
        assert_eq!(
            parse_body("'''a'b\"c\nd'''").unwrap(),
            Value::Str("a'b\"c\nd".into())
        );
        assert_eq!(parse_body("'é😀z'").unwrap(), Value::Str("é😀z".into()));
        assert!(
            parse_body("'a\nb'").is_err(),
            "a newline in a one-line string"
        );
        assert!(parse_body("'abc").is_err(), "unterminated");
        // Long strings parse in one pass (this once took seconds for 300 KB).
        let long = "QUJD".repeat(500_000);
        assert_eq!(
            parse_body(&format!("'{long}é'")).unwrap(),
            Value::Str(format!("{long}é"))
        );
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(15_000), "]".repeat(15_000));
        let err = parse_body(&deep).unwrap_err().to_string();
        assert!(err.contains("max_depth"), "{err}");
    }

    /// The corners of Python's literal grammar a Python peer's serpent (or a hand-written
    /// Pyro client's) can send.
    #[test]
    fn literals_parse_in_every_spelling_python_allows() {
        let int = |n: i128| Value::Int(n);
        let s = |t: &str| Value::Str(t.into());
        let cases: [(&str, Value); 26] = [
            ("False", Value::Bool(false)),
            ("True", Value::Bool(true)),
            ("+5", int(5)),
            ("- 5", int(-5)),
            ("1_000_000", int(1_000_000)),
            ("0", int(0)),
            ("000", int(0)),
            ("-0x1F", int(-31)),
            ("0o17", int(15)),
            ("0B101", int(5)),
            ("1.5e+3", Value::Float(1500.0)),
            ("-2.5E-1", Value::Float(-0.25)),
            ("-1e30000", Value::Float(f64::NEG_INFINITY)),
            (".5", Value::Float(0.5)),
            (
                "-340282366920938463463374607431768211456",
                Value::BigInt("-340282366920938463463374607431768211456".into()),
            ),
            ("r'a\\n'", s("a\\n")),
            ("R'a\\n'", s("a\\n")),
            ("u'caf\\xe9'", s("café")),
            ("U'x'", s("x")),
            ("'a' r'\\b' u'c'", s("a\\bc")),
            ("'a'  'b'", s("ab")),
            ("rb'\\x00'", Value::Bytes(b"\\x00".to_vec())),
            ("BR'\\n'", Value::Bytes(b"\\n".to_vec())),
            ("b'\\x00\\n'", Value::Bytes(vec![0, b'\n'])),
            ("set()", Value::Set(vec![])),
            ("[set(),1]", Value::List(vec![Value::Set(vec![]), int(1)])),
        ];
        for (text, expected) in cases {
            let read = parse_body(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(read, expected, "{text}");
        }
        for bad in [
            "set", "set(1)", "[set,1]", "f'x'", "0x", "012", "0012", "1e", "--1",
        ] {
            assert!(parse_body(bad).is_err(), "{bad} should be refused");
        }
        // A prefix without its string is no string: Python refuses these.
        for bad in ["('a' r)", "['a' u]", "('a' rb'x')"] {
            assert!(parse_body(bad).is_err(), "{bad} should be refused");
        }
        // The string that follows a value is not part of it.
        assert_eq!(
            parse_body("['a',u'b']").unwrap(),
            Value::List(vec![s("a"), s("b")])
        );
    }

    #[test]
    fn escapes_decode_as_python_decodes_them() {
        let cases = [
            (r"'\7\60\1010'", "\x07\x30A0"),
            (r"'\a\b\f\v\r\t'", "\x07\x08\x0c\x0b\r\t"),
            (r#"'\'\"\\'"#, "'\"\\"),
            ("'a\\\nb'", "ab"),
            (r"r'\'x'", "\\'x"),
            (r"r'a\\'", "a\\\\"),
            // A character beyond ASCII after a backslash: Python keeps both, raw or not.
            (r"'\é'", "\\é"),
            (r"r'\é'", "\\é"),
            (r"'\€\😀x'", "\\€\\😀x"),
        ];
        for (text, expected) in cases {
            let read = parse_body(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(read, Value::Str(expected.into()), "{text}");
        }
        for bad in [
            r"'\x4'",
            r"'\xzz'",
            r"'\x+1'",
            r"'\u+041'",
            r"'\ud800'",
            r"'\U00110000'",
            "'\\",
        ] {
            assert!(parse_body(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn json_text_escapes_control_characters_only() {
        let json = encode_json("a b~\u{1f}\u{0}é\"\\\n", false).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#""a b~\u001f\u0000é\"\\\n""#
        );
    }

    #[test]
    fn a_value_that_cannot_be_written_says_why() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("this value refuses to be written"))
            }
        }
        for result in [encode(&Refuses), encode_json(&Refuses, false)] {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("this value refuses to be written"), "{err}");
        }
    }

    #[test]
    fn max_depth_counts_nesting_not_siblings() {
        let limits = DecodeLimits {
            max_depth: 3,
            ..DecodeLimits::default()
        };
        let parse_in = |text: &str| parse(format!("{HEADER}{text}").as_bytes(), &limits);
        assert!(parse_in("[[[1]]]").is_ok(), "exactly max_depth");
        let err = parse_in("[[[[1]]]]").unwrap_err().to_string();
        assert!(err.contains("max_depth (3)"), "{err}");
        let siblings = format!("[{}]", vec!["[[1],(2,),{3:4}]"; 100].join(","));
        assert!(parse_in(&siblings).is_ok(), "siblings are not deeper");
    }

    #[test]
    fn an_unexpected_character_is_named_as_such() {
        for bad in ["@", "[1,@]", "{'a':!}"] {
            let err = parse_body(bad).unwrap_err().to_string();
            assert!(err.contains("unexpected character"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_types_round_trip() {
        use serde::{Deserialize, Serialize};
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Shape {
            Dot,
            Circle(f64),
            Rect { w: u32, h: u32 },
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct All {
            name: String,
            n: Option<i64>,
            shapes: Vec<Shape>,
            pair: (u8, String),
            #[serde(with = "serde_bytes")]
            blob: Vec<u8>,
            nan: f64,
        }
        let v = All {
            name: "it's \"x\"\n".into(),
            n: None,
            shapes: vec![Shape::Dot, Shape::Circle(2.5), Shape::Rect { w: 1, h: 2 }],
            pair: (7, "seven".into()),
            blob: vec![0, 255, 10],
            nan: f64::NAN,
        };
        let bytes = encode(&v).unwrap();
        let back: All = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert!(back.nan.is_nan());
        assert_eq!(
            (back.name, back.n, back.shapes, back.pair, back.blob),
            (v.name, v.n, v.shapes, v.pair, v.blob)
        );
    }
}
