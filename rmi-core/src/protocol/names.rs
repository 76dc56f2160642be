//! Names both sides of a connection agree on: annotation ids, the daemon object and its
//! methods, and the batch method.
//!
//! They live here, in the pure protocol layer, so the proxy and the daemon share them without
//! importing each other.

/// Annotation carrying the caller's remaining time in milliseconds (u64, big-endian); the
/// daemon cancels the method when it runs out.
pub const DEADLINE_ANNOTATION: [u8; 4] = *b"DDLN";
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
