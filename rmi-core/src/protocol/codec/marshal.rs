//! Python's marshal format, only as far as Pyro needs it from rmi: a str, for the CONNECTFAIL
//! that refuses a client's serializer (Pyro4 says that in marshal, id 3, which every client reads;
//! Pyro5 says "invalid data" in marshal, id 2), written by a daemon and read by a proxy.

/// Pyro4's serializer id for marshal.
pub(super) const PYRO4_MARSHAL_ID: u8 = 3;
/// Pyro5's serializer id for marshal.
pub(super) const PYRO5_MARSHAL_ID: u8 = 2;

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
    let (&tag, rest) = bytes.split_first()?;
    let (len, body) = match tag & 0x7f {
        // unicode, interned, ascii, ascii interned: a little-endian i32 length.
        b'u' | b't' | b'a' | b'A' => {
            let (len, body) = rest.split_at_checked(4)?;
            (u32::from_le_bytes(len.try_into().ok()?) as usize, body)
        }
        // short ascii, short ascii interned: a one-byte length.
        b'z' | b'Z' => {
            let (&len, body) = rest.split_first()?;
            (usize::from(len), body)
        }
        _ => return None,
    };
    if body.len() != len {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn strs_in_marshal_are_read_back() {
        assert_eq!(
            super::decode_str(b"u\x03\x00\x00\x00caf").as_deref(),
            Some("caf")
        );
        // What a Pyro4 daemon sent for a Pyro5 header (captured): short ascii with FLAG_REF.
        let mut captured = vec![0xfa, 44];
        captured.extend_from_slice(b"invalid data or unsupported protocol version");
        assert_eq!(
            super::decode_str(&captured).as_deref(),
            Some("invalid data or unsupported protocol version")
        );
        assert_eq!(super::decode_str(b"z\x05ab"), None, "too short");
        assert_eq!(super::decode_str(b"i\x01\x00\x00\x00"), None, "an int");
        assert_eq!(super::decode_str(b""), None);
    }

    #[test]
    fn a_str_is_pythons_marshal_unicode() {
        // marshal.loads(b'u\x03\x00\x00\x00caf') == 'caf'
        assert_eq!(super::encode_str("caf"), b"u\x03\x00\x00\x00caf");
        assert_eq!(super::encode_str("é"), b"u\x02\x00\x00\x00\xc3\xa9");
    }
}
