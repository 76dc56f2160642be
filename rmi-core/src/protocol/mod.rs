//! The wire protocol: Pyro5 messages (protocol 502), Pyro4's (protocol 48), and their payload
//! codec; pure, no I/O.
//!
//! The Pyro5 header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 4 | tag `PYRO` |
//! | 0x04 | 2 | protocol version 502 |
//! | 0x06 | 1 | message type: CONNECT 1, CONNECTOK 2, CONNECTFAIL 3, INVOKE 4, RESULT 5, PING 6 |
//! | 0x07 | 1 | serializer id: msgpack 4, rmi's bincode 98, ping 42 |
//! | 0x08 | 2 | flags: EXCEPTION 1, COMPRESSED 2, ONEWAY 4, BATCH 8, ITEMSTREAMRESULT 0x10, KEEPSERIALIZED 0x20, CORR_ID 0x40 |
//! | 0x0a | 2 | sequence number |
//! | 0x0c | 4 | payload length |
//! | 0x10 | 4 | annotations length |
//! | 0x14 | 16 | correlation id |
//! | 0x24 | 2 | reserved (0) |
//! | 0x26 | 2 | magic 0x4DC5 |
//! | 0x28 | … | annotations (`id[4] len:u32 value`…), then the payload |
//!
//! Pyro4's 24-byte header (`!4sHHHHiHHHH`: tag, version 48, type, flags, seq, data length,
//! serializer id, annotations length, reserved, checksum) is described in `frame`'s `pyro4`
//! module; a connection speaks the protocol of its first header ([`Protocol`]).
//!
//! All integers are big-endian. [`frame`] reads and writes messages; [`codec`] turns payloads
//! into values through the bounded deserializer.

pub mod codec;
pub mod frame;
pub mod names;

pub use codec::{DecodeLimits, Metadata, Serializer};

/// The largest CONNECT message an rmi daemon accepts (annotations and payload, after
/// inflating): 64 KiB, far above what a Pyro or rmi client sends (an object id and handshake
/// data, with a shared secret a SPAKE2 message and a MAC); a larger one closes the connection
/// before its body is read. A proxy whose CONNECT is larger reports a closed handshake as this
/// limit's refusal (`Error::ConnectFailed`), without dialing again.
pub const MAX_HANDSHAKE_SIZE: usize = 64 * 1024;
pub use frame::{Message, MessageType, Protocol};
