//! JSON, Pyro's serializer "json" (Pyro5 id 3, Pyro4 id 2), as Python's `json` module writes
//! and reads it.
//!
//! Writing is serpent's writer in its JSON dialect (`serpent::encode_json`): `NaN` and
//! `Infinity` as the bare tokens Python's `json` uses, bytes as serpent's base64 dict (Pyro's
//! json cannot carry bytes at all), keys that are not strs written as strs. Reading parses one
//! JSON document into the shared [`Value`] tree, nesting at most `max_depth` deep, refusing
//! trailing text, and keeping ints of any size (a Python int beyond 128 bits stays digits);
//! collections are built from what the payload holds, so no length can be claimed beyond it.
//!
//! A call is Pyro's object form: `{"object": …, "method": …, "params": [...], "kwargs": {...}}`.

use serde::Serialize;

use super::value::Value;
use super::DecodeLimits;
use crate::error::Error;

fn codec_error(e: impl std::fmt::Display) -> Error {
    Error::Codec(format!("json: {e}"))
}

/// Encodes `value`; with `pyro4`, a `__class__` value `Pyro5.<rest>` is written `Pyro4.<rest>`.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T, pyro4: bool) -> Result<Vec<u8>, Error> {
    super::serpent::encode_json(value, pyro4)
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, Error> {
    let value = parse(bytes, limits)?;
    T::deserialize(value).map_err(codec_error)
}

/// A JSON array of already encoded `items`.
pub(super) fn list_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

/// The parts of a call document: object, method, positional and keyword arguments.
pub(super) fn decode_call(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(String, String, Value, Value), Error> {
    let Value::Dict(entries) = parse(bytes, limits)? else {
        return Err(codec_error("a call must be an object"));
    };
    let (mut object, mut method, mut params, mut kwargs) = (None, None, None, Value::None);
    for (key, value) in entries {
        let Value::Str(key) = key else { continue };
        match (key.as_str(), value) {
            ("object", Value::Str(s)) => object = Some(s),
            ("method", Value::Str(s)) => method = Some(s),
            ("params", v) => params = Some(v),
            ("kwargs", v) => kwargs = v,
            (k @ ("object" | "method"), _) => {
                return Err(codec_error(format_args!(
                    "the call's {k:?} must be a string"
                )))
            }
            _ => {}
        }
    }
    match (object, method) {
        (Some(object), Some(method)) => Ok((
            object,
            method,
            params.unwrap_or(Value::List(Vec::new())),
            kwargs,
        )),
        _ => Err(codec_error("a call needs \"object\" and \"method\"")),
    }
}

/// Parses a whole JSON document into a value tree.
pub(super) fn parse(bytes: &[u8], limits: &DecodeLimits) -> Result<Value, Error> {
    let text = std::str::from_utf8(bytes).map_err(codec_error)?;
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
        depth: 0,
        max_depth: limits.depth(),
    };
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

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
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

    fn expect(&mut self, c: u8) -> Result<(), Error> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("{:?} expected", c as char)))
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("a value was expected")),
            Some(b'[') => self.nested(Self::array),
            Some(b'{') => self.nested(Self::object),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.word(),
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

    fn array(&mut self) -> Result<Value, Error> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.eat(b']') {
            return Ok(Value::List(items));
        }
        loop {
            items.push(self.value()?);
            if self.eat(b']') {
                return Ok(Value::List(items));
            }
            self.expect(b',')?;
        }
    }

    fn object(&mut self) -> Result<Value, Error> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        if self.eat(b'}') {
            return Ok(Value::Dict(entries));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("a string key expected"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            entries.push((Value::Str(key), value));
            if self.eat(b'}') {
                return Ok(Value::Dict(entries));
            }
            self.expect(b',')?;
        }
    }

    /// `true`, `false`, `null`, and Python's `NaN`, `Infinity`.
    fn word(&mut self) -> Result<Value, Error> {
        let rest = &self.s[self.at..];
        for (word, value) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::None),
            ("NaN", Value::Float(f64::NAN)),
            ("Infinity", Value::Float(f64::INFINITY)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.at += word.len();
                return Ok(value);
            }
        }
        Err(self.error("unexpected character"))
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
            if self.s[self.at..].starts_with(b"Infinity") {
                self.at += "Infinity".len();
                return Ok(Value::Float(f64::NEG_INFINITY));
            }
        }
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.at += 1;
            }
            p.at - from
        };
        // JSON's integer part: `0`, or digits not starting with `0` (Python refuses `01`).
        if self.peek() == Some(b'0') {
            self.at += 1;
        } else if digits(self) == 0 {
            return Err(self.error("a digit expected"));
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            float = true;
            if digits(self) == 0 {
                return Err(self.error("a digit expected after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            float = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("a digit expected in the exponent"));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).expect("ascii");
        if float {
            return text
                .parse()
                .map(Value::Float)
                .map_err(|_| self.error("an invalid number"));
        }
        Ok(match text.parse::<i128>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(text.to_owned()),
        })
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let hex = self
            .s
            .get(self.at..self.at + 4)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.error("four hex digits expected after \\u"))?;
        self.at += 4;
        Ok(hex)
    }

    fn string(&mut self) -> Result<String, Error> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let from = self.at;
            while self
                .peek()
                .is_some_and(|c| c != b'"' && c != b'\\' && c >= 0x20)
            {
                self.at += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[from..self.at]).expect("utf-8 input"));
            match self.peek() {
                None => return Err(self.error("an unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let Some(c) = self.peek() else {
                        return Err(self.error("an unterminated string"));
                    };
                    self.at += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code)
                                && self.s[self.at..].starts_with(b"\\u")
                            {
                                let back = self.at;
                                self.at += 2;
                                let low = self.hex4()?;
                                if (0xdc00..0xe000).contains(&low) {
                                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                                } else {
                                    self.at = back;
                                }
                            }
                            out.push(char::from_u32(code).ok_or_else(|| {
                                self.error("a lone surrogate cannot be a Rust string")
                            })?);
                        }
                        _ => return Err(self.error("an invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("a control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<T: Serialize + ?Sized>(v: &T) -> String {
        String::from_utf8(encode(v, false).unwrap()).unwrap()
    }

    #[test]
    fn values_are_written_as_pythons_json_reads_them() {
        use std::collections::BTreeMap;
        assert_eq!(
            text(&(1, "a\"b\\\n\u{1}é", true, None::<u8>)),
            r#"[1,"a\"b\\\n\u0001é",true,null]"#
        );
        assert_eq!(
            text(&[f64::NAN, f64::INFINITY, -f64::INFINITY, 1.5]),
            "[NaN,Infinity,-Infinity,1.5]"
        );
        assert_eq!(text(&BTreeMap::from([(1, "x")])), r#"{"1":"x"}"#);
        assert_eq!(
            text(&serde_bytes::ByteBuf::from(b"hi".to_vec())),
            r#"{"data": "aGk=", "encoding": "base64"}"#
        );
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            text(&uri),
            r#"{"__class__":"Pyro5.core.URI","state":["PYRO","obj",null,"127.0.0.1",4000]}"#
        );
        assert_eq!(
            String::from_utf8(encode(&uri, true).unwrap()).unwrap(),
            r#"{"__class__":"Pyro4.core.URI","state":["PYRO","obj",null,"127.0.0.1",4000]}"#
        );
    }

    #[test]
    fn documents_read_back_within_the_limits() {
        let limits = DecodeLimits::default();
        let v: (i64, String, Vec<f64>, Option<u8>, bool) = decode(
            br#" [ -3, "a\u00e9\ud83d\ude00\"", [1.5e3, NaN, -Infinity], null, true ] "#,
            &limits,
        )
        .unwrap();
        assert_eq!(v.0, -3);
        assert_eq!(v.1, "aé😀\"");
        assert_eq!(v.2[0], 1500.0);
        assert!(v.2[1].is_nan() && v.2[2] == f64::NEG_INFINITY);
        assert_eq!((v.3, v.4), (None, true));
        let big: u128 = decode(b"340282366920938463463374607431768211455", &limits).unwrap();
        assert_eq!(big, u128::MAX);
        assert!(parse(b"123456789012345678901234567890123456789012", &limits).is_ok());
        for bad in [
            &b"[1,]"[..],
            b"{\"a\" 1}",
            b"[1] 2",
            b"\"\\ud800\"",
            b"01x",
            b"[",
            b"\"\x01\"",
        ] {
            assert!(
                parse(bad, &limits).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse(deep.as_bytes(), &limits).unwrap_err().to_string();
        assert!(err.contains("max_depth"), "{err}");
    }

    #[test]
    fn numbers_follow_jsons_grammar_as_python_reads_it() {
        let limits = DecodeLimits::default();
        // Each expected value is what Python 3's `json.loads` gives.
        for (text, want) in [
            ("1E+2", Value::Float(100.0)),
            ("2e-1", Value::Float(0.2)),
            ("-0", Value::Int(0)),
            ("-0.5", Value::Float(-0.5)),
            ("10", Value::Int(10)),
            (
                "[0,-0,7]",
                Value::List(vec![Value::Int(0), Value::Int(0), Value::Int(7)]),
            ),
        ] {
            assert_eq!(parse(text.as_bytes(), &limits).unwrap(), want, "{text}");
        }
        // Python refuses each of these ("Expecting value" or "Extra data").
        for bad in [
            "-", "[1,-]", "1.", "1e", "1e+", ".5", "+1", "01", "-01", "[01]", "-NaN",
        ] {
            let err = parse(bad.as_bytes(), &limits).expect_err(bad).to_string();
            assert!(
                err.contains("json: ") && err.contains("at byte"),
                "{bad}: {err}"
            );
        }
    }

    /// Only serpent writes Pyro's complex dict: in json it is a dict like any other.
    #[test]
    fn a_dict_shaped_like_serpents_complex_stays_a_dict() {
        let text = br#"{"__class__": "complex", "real": 1.0, "imag": 2.0}"#;
        let Value::Dict(entries) = parse(text, &DecodeLimits::default()).unwrap() else {
            panic!("a dict")
        };
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn every_escape_reads_as_pythons_json_reads_it() {
        let limits = DecodeLimits::default();
        // Python 3: json.loads of this text is 'q"b\\s/b\x08f\x0cn\nr\rt\tuéA😀'.
        let text = br#""q\"b\\s\/b\bf\fn\nr\rt\tu\u00e9\u0041\ud83d\ude00""#;
        assert_eq!(
            parse(text, &limits).unwrap(),
            Value::Str("q\"b\\s/b\u{8}f\u{c}n\nr\rt\tuéA😀".into())
        );
        // Python refuses the first four too; the last three hold lone surrogates, which Python's
        // str holds and a Rust String cannot.
        for (bad, why) in [
            (&br#""\x""#[..], "invalid escape"),
            (br#""\u12""#, "four hex digits"),
            (br#""\u12g4""#, "four hex digits"),
            (br#""\u+041""#, "four hex digits"),
            (br#""abc"#, "unterminated"),
            (br#""\ud83d\u0041""#, "lone surrogate"),
            (br#""\udc00""#, "lone surrogate"),
            (br#""\u0041\udc00""#, "lone surrogate"),
        ] {
            let err = parse(bad, &limits).unwrap_err().to_string();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn nesting_is_counted_per_path_not_per_value() {
        let limits = |max_depth| DecodeLimits {
            max_depth,
            ..DecodeLimits::default()
        };
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(nested(3).as_bytes(), &limits(3)).is_ok());
        let err = parse(nested(4).as_bytes(), &limits(3)).unwrap_err();
        assert!(err.to_string().contains("max_depth (3)"), "{err}");
        // Siblings close what they open: a thousand of them at depth 2 are within a limit of 2.
        let siblings = format!("[{}]", vec![r#"{"a":1}"#; 1000].join(","));
        assert!(parse(siblings.as_bytes(), &limits(2)).is_ok());
        assert!(parse(siblings.as_bytes(), &limits(1)).is_err());
    }

    #[test]
    fn a_call_whose_object_or_method_is_not_a_string_is_refused_by_name() {
        let limits = DecodeLimits::default();
        for (doc, what) in [
            (
                r#"{"object": 1, "method": "m"}"#,
                "\"object\" must be a string",
            ),
            (
                r#"{"object": "o", "method": null}"#,
                "\"method\" must be a string",
            ),
            (r#"{"object": "o"}"#, "needs \"object\" and \"method\""),
            (r#"["o", "m"]"#, "must be an object"),
        ] {
            let err = decode_call(doc.as_bytes(), &limits)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{doc}: {err}");
        }
        // No params means none; unknown keys are ignored, as Pyro's json serializer does.
        let (_, _, params, kwargs) =
            decode_call(br#"{"object": "o", "method": "m", "x": 1}"#, &limits).unwrap();
        assert_eq!((params, kwargs), (Value::List(vec![]), Value::None));
    }

    #[test]
    fn calls_are_pyros_object_form() {
        let (object, method, params, kwargs) = decode_call(
            br#"{"object": "example.welcome", "method": "welcomeMessage", "params": ["Rashmi"], "kwargs": {}}"#,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(
            (object.as_str(), method.as_str()),
            ("example.welcome", "welcomeMessage")
        );
        assert_eq!(params, Value::List(vec![Value::Str("Rashmi".into())]));
        assert_eq!(kwargs, Value::Dict(vec![]));
    }
}
