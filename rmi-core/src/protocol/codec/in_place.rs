//! Large byte arguments sent from their own buffers: a `Vec<u8>` argument the macro hands over
//! by value ([`ByteArg`]) is encoded as bytes as always, but when it is large the request's
//! payload stops where its bytes start, and its buffer goes to the socket as it is, after the
//! payload (as the message's [`payload_tail`](crate::protocol::frame::Message::payload_tail)).
//!
//! The payload's bytes do not change: the peer reads the same bytes. Only encoders that write a
//! byte string with one `write` of the caller's whole slice can leave it out (bincode and
//! msgpack do); the others copy it as before. An encoder recognises the buffer by its address
//! and length, so nothing but that very buffer is ever left out.
//!
//! The receiving end, rmi to rmi: the message also announces where the buffer
//! lies in the payload ([`BULK_ANNOTATION`](crate::protocol::names::BULK_ANNOTATION)), the
//! peer's reader reads those bytes into a buffer of their own
//! ([`FrameReader::split_bulk`](crate::transport::FrameReader::split_bulk)), and the decoder
//! hands that buffer to the method's `Vec<u8>` (or the caller's) instead of copying it
//! ([`Args::take_named`](super::Args::take_named)).

use std::cell::{Cell, RefCell};
use std::io;

use bytes::Bytes;
use serde::Serialize;

/// Byte arguments at least this large are sent from their own buffer (below it, a copy into
/// the payload costs less than a write of its own).
pub(crate) const IN_PLACE_MIN: usize = 64 * 1024;

/// What an encoding in [`offering`] has seen: the large buffer a [`ByteArg`] offered, then
/// what the encoder left out.
#[derive(Default)]
struct Scope {
    offered: Option<Bytes>,
    /// The offered buffer and the bytes written after it.
    left_out: Option<(Bytes, Vec<u8>)>,
}

/// [`STATE`]: no encoding that can leave a buffer out is running.
const IDLE: u8 = 0;
/// [`STATE`]: one is running; nothing offered yet.
const ACTIVE: u8 = 1;
/// [`STATE`]: one is running, and a large buffer was offered.
const OFFERED: u8 = 2;

thread_local! {
    /// Whether an encoding that can leave a buffer out runs on this thread ([`IDLE`],
    /// [`ACTIVE`], or [`OFFERED`] once a buffer was offered). Every call's encoding sets it:
    /// kept to a flag, so that calls without a large argument pay next to nothing.
    static STATE: Cell<u8> = const { Cell::new(IDLE) };
    /// What the running encoding has seen; touched only by large arguments.
    static SCOPE: RefCell<Scope> = const {
        RefCell::new(Scope {
            offered: None,
            left_out: None,
        })
    };
}

/// A `Vec<u8>` argument taken by value: serialized as bytes (Python's `bytes` in the Pyro
/// formats); a large one is offered to the encoder to send from its own buffer.
pub struct ByteArg(Repr);

enum Repr {
    Small(Vec<u8>),
    Large(Bytes),
}

impl From<Vec<u8>> for ByteArg {
    fn from(mut v: Vec<u8>) -> Self {
        ByteArg(if v.len() >= IN_PLACE_MIN {
            // The buffer lives until the message is written, counted by its length: it must
            // not hold more than that (a `read_to_end` buffer is often twice its length).
            // Shrinking gives the rest back, mostly without a copy (the allocator shrinks in
            // place).
            v.shrink_to_fit();
            Repr::Large(Bytes::from(v))
        } else {
            Repr::Small(v)
        })
    }
}

impl std::fmt::Debug for ByteArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteArg({} bytes)", self.as_slice().len())
    }
}

impl ByteArg {
    fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Small(v) => v,
            Repr::Large(b) => b,
        }
    }
}

impl Serialize for ByteArg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Repr::Large(b) = &self.0 {
            if STATE.get() != IDLE {
                STATE.set(OFFERED);
                SCOPE.with_borrow_mut(|scope| scope.offered = Some(b.clone()));
            }
        }
        s.serialize_bytes(self.as_slice())
    }
}

/// Runs `encode` (which returns the payload, or the part before a buffer left out), letting
/// [`Splitter`]s inside it leave an offered buffer out; returns the payload and its tail.
///
/// Only for encodings that write the whole payload with the splitting encoders and touch the
/// bytes they wrote no further (Pyro4's class renaming rewrites msgpack after the fact, and
/// would miss what follows a buffer left out). An `offering` inside another (none today)
/// keeps the outer one's state apart and gives it back.
pub(crate) fn offering<E>(
    encode: impl FnOnce() -> Result<Bytes, E>,
) -> Result<(Bytes, Vec<Bytes>), E> {
    /// Puts back what an enclosing `offering` had, clearing what this one saw.
    struct Reset {
        state: u8,
        scope: Option<Scope>,
    }
    impl Drop for Reset {
        fn drop(&mut self) {
            if STATE.replace(self.state) == OFFERED || self.scope.is_some() {
                SCOPE.with_borrow_mut(|scope| *scope = self.scope.take().unwrap_or_default());
            }
        }
    }
    let state = STATE.replace(ACTIVE);
    // An enclosing offering's buffer is kept aside (and this one starts with nothing).
    let scope = (state == OFFERED).then(|| SCOPE.take());
    let _reset = Reset { state, scope };
    let head = encode()?;
    if STATE.get() != OFFERED {
        return Ok((head, Vec::new()));
    }
    let left_out = SCOPE.with_borrow_mut(|scope| scope.left_out.take());
    Ok(match left_out {
        None => (head, Vec::new()),
        Some((big, after)) if after.is_empty() => (head, vec![big]),
        Some((big, after)) => (head, vec![big, Bytes::from(after)]),
    })
}

/// The buffer offered so far in this thread's [`offering`], if any.
fn offered() -> Option<Bytes> {
    if STATE.get() != OFFERED {
        return None;
    }
    SCOPE.with_borrow(|scope| scope.offered.clone())
}

/// A writer for an encoding of `size` bytes: what is written, but for the offered buffer when
/// it is written whole (in one `write`), which [`finish`](Self::finish) hands to
/// [`offering`]. Outside `offering`, a plain buffer.
pub(crate) struct Splitter {
    head: Vec<u8>,
    big: Option<Bytes>,
    /// `Some` once the offered buffer was left out: the bytes written after it.
    after: Option<Vec<u8>>,
}

impl Splitter {
    /// A writer for `size` bytes (the size counted with the offered buffer in it).
    pub(crate) fn new(size: usize) -> Splitter {
        let big = offered();
        let rest = size.saturating_sub(big.as_ref().map_or(0, Bytes::len));
        Splitter {
            // Room for everything when nothing was offered; else for all but the buffer (if
            // the encoder copies it after all, the vector grows once).
            head: Vec::with_capacity(if big.is_some() { rest } else { size }),
            big,
            after: None,
        }
    }

    /// What was written before the buffer left out (everything, if none was).
    pub(crate) fn finish(self) -> Vec<u8> {
        if let (Some(big), Some(after)) = (self.big, self.after) {
            SCOPE.with_borrow_mut(|scope| scope.left_out = Some((big, after)));
        }
        self.head
    }
}

impl io::Write for Splitter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match (&mut self.after, &self.big) {
            (Some(after), _) => after.extend_from_slice(data),
            (None, Some(big)) if data.as_ptr() == big.as_ptr() && data.len() == big.len() => {
                self.after = Some(Vec::new());
            }
            (None, _) => self.head.extend_from_slice(data),
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn large() -> Vec<u8> {
        (0..IN_PLACE_MIN as u32 + 10).map(|i| i as u8).collect()
    }

    #[test]
    fn a_buffer_written_whole_is_left_out_and_what_follows_is_kept() {
        let arg = ByteArg::from(large());
        let Repr::Large(buffer) = &arg.0 else {
            panic!("a large argument")
        };
        let buffer = buffer.clone();
        let mut copied = Vec::new();
        let (head, tail) = offering(|| {
            // An encoder's two passes: the first (here, a plain copy) offers the buffer; the
            // second writes around it.
            arg.serialize(&mut rmp_serde::Serializer::new(&mut copied))
                .unwrap();
            copied.push(b'z');
            let mut w = Splitter::new(copied.len());
            arg.serialize(&mut rmp_serde::Serializer::new(&mut w))
                .unwrap();
            w.write_all(b"z").unwrap();
            Ok::<_, ()>(Bytes::from(w.finish()))
        })
        .unwrap();
        assert_eq!(tail.len(), 2, "the buffer, then what followed it");
        assert_eq!(
            tail[0].as_ptr(),
            buffer.as_ptr(),
            "sent from its own buffer"
        );
        assert_eq!(&tail[1][..], b"z");
        let joined: Vec<u8> = [&head[..], &tail[0], &tail[1]].concat();
        assert_eq!(joined, copied, "the same bytes as a copy");
        // The scope is over: a buffer offered now is copied.
        let mut w = Splitter::new(copied.len());
        arg.serialize(&mut rmp_serde::Serializer::new(&mut w))
            .unwrap();
        assert_eq!(w.finish().len(), copied.len() - 1);
    }

    #[test]
    fn an_offering_inside_another_leaves_the_outer_ones_buffer_alone() {
        let outer = ByteArg::from(large());
        let inner = ByteArg::from(large());
        let mut copied = Vec::new();
        outer
            .serialize(&mut rmp_serde::Serializer::new(&mut copied))
            .unwrap();
        let (head, tail) = offering(|| {
            // Offered (the sizing pass), the writer made, then an inner encoding that offers
            // its own buffer and leaves it out, before the outer one writes.
            outer
                .serialize(&mut rmp_serde::Serializer::new(&mut std::io::sink()))
                .unwrap();
            let mut w = Splitter::new(copied.len());
            let (_, inner_tail) = offering(|| {
                // (An encoder's sizing pass offers the buffer; then the writer is made.)
                inner
                    .serialize(&mut rmp_serde::Serializer::new(&mut std::io::sink()))
                    .unwrap();
                let mut w = Splitter::new(copied.len());
                inner
                    .serialize(&mut rmp_serde::Serializer::new(&mut w))
                    .unwrap();
                Ok::<_, ()>(Bytes::from(w.finish()))
            })
            .unwrap();
            assert_eq!(
                inner_tail.len(),
                1,
                "the inner encoding left its own buffer out"
            );
            outer
                .serialize(&mut rmp_serde::Serializer::new(&mut w))
                .unwrap();
            Ok::<_, ()>(Bytes::from(w.finish()))
        })
        .unwrap();
        let Repr::Large(outer_buffer) = &outer.0 else {
            panic!("a large argument")
        };
        assert_eq!(tail.len(), 1);
        assert_eq!(
            tail[0].as_ptr(),
            outer_buffer.as_ptr(),
            "the outer buffer, not the inner"
        );
        assert_eq!([&head[..], &tail[0]].concat(), copied);
        // Nothing is left behind for the next encoding.
        assert_eq!(STATE.get(), IDLE);
        SCOPE.with_borrow(|scope| assert!(scope.offered.is_none() && scope.left_out.is_none()));
    }

    #[test]
    fn a_large_argument_holds_no_more_than_its_length() {
        let mut v = Vec::with_capacity(4 * IN_PLACE_MIN);
        v.extend_from_slice(&large());
        let ByteArg(Repr::Large(b)) = ByteArg::from(v) else {
            panic!("a large argument")
        };
        let held = b.try_into_mut().expect("the only reference").capacity();
        assert_eq!(held, IN_PLACE_MIN + 10, "the spare capacity was given back");
    }

    #[test]
    fn a_small_argument_is_copied() {
        let arg = ByteArg::from(vec![1, 2, 3]);
        let (head, tail) = offering(|| {
            let mut w = Splitter::new(4);
            arg.serialize(&mut rmp_serde::Serializer::new(&mut w))
                .unwrap();
            Ok::<_, ()>(Bytes::from(w.finish()))
        })
        .unwrap();
        assert!(tail.is_empty());
        assert_eq!(&head[..], &[0xc4, 3, 1, 2, 3]);
    }

    #[test]
    fn only_the_offered_buffer_itself_is_left_out_not_bytes_of_its_length() {
        let arg = ByteArg::from(large());
        let twin = large();
        let value = (serde_bytes::Bytes::new(&twin), &arg);
        let copied = rmp_serde::to_vec(&value).unwrap();
        let (head, tail) = offering(|| {
            arg.serialize(&mut rmp_serde::Serializer::new(&mut std::io::sink()))
                .unwrap();
            let mut w = Splitter::new(copied.len());
            value
                .serialize(&mut rmp_serde::Serializer::new(&mut w))
                .unwrap();
            Ok::<_, ()>(Bytes::from(w.finish()))
        })
        .unwrap();
        // The twin, equal in length and content but another buffer, is in the head.
        assert_eq!(tail.len(), 1);
        assert!(head.len() > twin.len());
        assert_eq!([&head[..], &tail[0]].concat(), copied);
    }

    #[test]
    fn byte_arguments_from_64_kib_are_sent_from_their_own_buffer() {
        for (len, large) in [(64 * 1024 - 1, false), (64 * 1024, true)] {
            let arg = ByteArg::from(vec![0; len]);
            assert_eq!(matches!(arg.0, Repr::Large(_)), large, "{len}");
            assert_eq!(format!("{arg:?}"), format!("ByteArg({len} bytes)"));
        }
    }

    #[test]
    fn outside_offering_nothing_is_left_out() {
        let arg = large();
        let mut w = Splitter::new(arg.len() + 2);
        w.write_all(b"ab").unwrap();
        w.write_all(&arg).unwrap();
        let out = w.finish();
        assert_eq!(out.len(), arg.len() + 2);
    }
}
