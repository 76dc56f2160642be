//! Names both sides of a connection agree on: annotation ids, the daemon object and its
//! methods, and the batch method.
//!
//! They live here, in the pure protocol layer, so the proxy and the daemon share them without
//! importing each other.

/// Annotation carrying the caller's remaining time in milliseconds (u64, big-endian); the
/// daemon cancels the method when it runs out.
pub const DEADLINE_ANNOTATION: [u8; 4] = *b"DDLN";

/// A time left as the [`DEADLINE_ANNOTATION`]'s whole milliseconds, rounded up: a time under a
/// millisecond is not sent as a deadline that has passed on arrival.
pub(crate) fn deadline_millis(left: std::time::Duration) -> u64 {
    u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Sets `msg`'s [`DEADLINE_ANNOTATION`], if it has one, to `left`: for a request written some
/// time after it was encoded (it waited for an in-flight slot, or behind other writes), which
/// tells the daemon what its caller still waits, not the whole timeout. The value is replaced
/// only when its milliseconds change, so a request written at once costs no allocation. The
/// last one is the proxy's (a caller's own, set with `with_annotation`, comes before it and is
/// left as it is).
pub(crate) fn set_time_left(msg: &mut super::frame::Message, left: std::time::Duration) {
    let Some((_, value)) = msg
        .annotations
        .iter_mut()
        .rev()
        .find(|(id, _)| *id == DEADLINE_ANNOTATION)
    else {
        return;
    };
    let millis = deadline_millis(left).to_be_bytes();
    if value[..] != millis {
        *value = bytes::Bytes::copy_from_slice(&millis);
    }
}
/// Annotation of an ITEMSTREAMRESULT reply carrying the stream's id (a UUID string, as Pyro5).
pub const STREAM_ANNOTATION: [u8; 4] = *b"STRM";
/// Annotation carrying a side's SPAKE2 message during a shared-secret handshake: the client's
/// in its first CONNECT, the daemon's in its first CONNECTOK.
pub const PAKE_ANNOTATION: [u8; 4] = *b"PAKE";
/// Annotation carrying the daemon's key confirmation in its first CONNECTOK on a shared-secret
/// connection.
pub const PROOF_ANNOTATION: [u8; 4] = *b"PROF";
/// Annotation carrying a message's MAC on a shared-secret connection.
pub const MAC_ANNOTATION: [u8; 4] = *b"HMAC";
/// Length of the MAC in a [`MAC_ANNOTATION`] (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// Annotation announcing a large byte string in a bincode or msgpack payload: its offset in the
/// payload and its length, each a u32, big-endian. The payload is unchanged; the annotation
/// only tells an rmi reader where to read those bytes into a buffer of their own, so that a
/// `Vec<u8>` argument or result is handed to the method (or the caller) without being copied
/// out of the message. A reader that ignores it (Python's Pyro5 ignores annotations it does not
/// know) reads the same payload. What it says is never trusted: bincode reads the pieces as one
/// payload wherever they were split, and msgpack takes the buffer over only where its decoder
/// reads a bin of exactly those bytes, joining the pieces otherwise.
pub const BULK_ANNOTATION: [u8; 4] = *b"BULK";
/// Annotation (empty) of the error reply to a request a daemon refused without running it, as
/// it shut down: the caller may send it again, on a new connection. Pyro peers ignore it and
/// raise the reply's `ConnectionClosedError`.
pub const NOT_RUN_ANNOTATION: [u8; 4] = *b"NRUN";

/// Object id of the daemon's own object, as in Pyro.
pub const DAEMON_OBJECT_ID: &str = "Pyro.Daemon";

/// Methods of the daemon object, by wire name (Pyro5's `DaemonObject`).
pub mod daemon_method {
    /// Answers `None`: the daemon is alive.
    pub const PING: &str = "ping";
    /// The ids of all registered objects.
    pub const REGISTERED: &str = "registered";
    /// The metadata of one object, by id.
    pub const GET_METADATA: &str = "get_metadata";
    /// A line describing the daemon.
    pub const INFO: &str = "info";
    /// The next item of a streamed result, by stream id; `StopIteration` at the end.
    pub const GET_NEXT_STREAM_ITEM: &str = "get_next_stream_item";
    /// Drops a streamed result (oneway).
    pub const CLOSE_STREAM: &str = "close_stream";
}

/// The method name of a batched call (Pyro's `<batch>`, sent with `FLAGS_BATCH`).
///
/// Its single argument is the list of the batched calls, each an INVOKE payload of its own
/// (object id left empty: the connection's object); the reply is a list of
/// [`BatchItem`](super::codec::BatchItem)s, in order, ending at the first failure. This nesting
/// is rmi's; Pyro peers batch differently.
pub const BATCH_METHOD: &str = "<batch>";

/// Annotation by which an rmi proxy negotiates its serializer at CONNECT, with no extra round
/// trip: the proxy sends its CONNECT in serpent (which every Pyro daemon reads) carrying the
/// serializer ids it would rather use, one byte each, best first; an rmi daemon answers in its
/// CONNECTOK with the one id it picked (rmi's bincode), and the proxy's calls use it. A Python
/// daemon ignores annotations it does not know, answers without it, and the proxy stays on
/// serpent.
pub const SERIALIZER_ANNOTATION: [u8; 4] = *b"RMIS";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::frame::{Message, MessageType};

    #[test]
    fn a_deadline_is_sent_in_milliseconds_rounded_up() {
        assert_eq!(deadline_millis(Duration::ZERO), 0);
        assert_eq!(deadline_millis(Duration::from_nanos(1)), 1);
        assert_eq!(deadline_millis(Duration::from_micros(500)), 1);
        assert_eq!(deadline_millis(Duration::from_millis(1)), 1);
        assert_eq!(deadline_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(deadline_millis(Duration::from_secs(3)), 3_000);
        assert_eq!(deadline_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn the_time_left_replaces_a_deadline_and_adds_none() {
        let mut msg = Message::new(MessageType::Invoke, 0, 0, 1, bytes::Bytes::new());
        set_time_left(&mut msg, Duration::from_secs(1));
        assert!(
            msg.annotations.is_empty(),
            "a request without a deadline gets none"
        );
        let stamped = bytes::Bytes::copy_from_slice(&5_000u64.to_be_bytes());
        msg.annotations = vec![
            (*b"USER", bytes::Bytes::new()),
            (DEADLINE_ANNOTATION, stamped.clone()),
        ];
        // Unchanged milliseconds keep the very same bytes.
        set_time_left(&mut msg, Duration::from_micros(4_999_100));
        assert_eq!(msg.annotations[1].1.as_ptr(), stamped.as_ptr());
        set_time_left(&mut msg, Duration::from_millis(3_500));
        assert_eq!(
            msg.annotations[1],
            (
                DEADLINE_ANNOTATION,
                bytes::Bytes::copy_from_slice(&3_500u64.to_be_bytes())
            )
        );
        set_time_left(&mut msg, Duration::ZERO);
        assert_eq!(
            msg.annotation(&DEADLINE_ANNOTATION).unwrap()[..],
            0u64.to_be_bytes()
        );
        assert_eq!(msg.annotations[0].0, *b"USER");
        // A caller's own, ahead of the proxy's, is left alone.
        let own = bytes::Bytes::copy_from_slice(&2_000u64.to_be_bytes());
        msg.annotations
            .insert(0, (DEADLINE_ANNOTATION, own.clone()));
        set_time_left(&mut msg, Duration::from_millis(700));
        assert_eq!(msg.annotations[0], (DEADLINE_ANNOTATION, own));
        assert_eq!(msg.annotations[2].1[..], 700u64.to_be_bytes());
    }
}
