//! Shared-secret authentication: both sides prove the secret without sending it or anything a
//! guess could be checked against offline, and every message after the handshake carries an
//! HMAC.
//!
//! The handshake is SPAKE2 (Ed25519 group, asymmetric roles: the client is side A, the daemon
//! side B, with the fixed identities `rmi client` and `rmi daemon`), carried in Pyro5's own
//! message types:
//!
//! 1. The client's CONNECT is the usual one (its payload the connect request), plus its SPAKE2
//!    message in the `PAKE` annotation.
//! 2. The daemon answers a CONNECTOK with an empty payload, its own SPAKE2 message (`PAKE`) and
//!    its key confirmation (`PROF`). It has not looked at the request's payload: the answer is
//!    the same whether the object exists or not, and whether the client knows the secret or
//!    not, apart from the random SPAKE2 message and the MAC.
//! 3. The client checks the confirmation in constant time; a daemon without the secret cannot
//!    produce it, and the client sends nothing more on failure. It then sends the connect
//!    request again in a second CONNECT, signed with its session key: that signature is the
//!    client's proof.
//! 4. Only then does the daemon look up the object and run the handshake validator; it answers
//!    the real CONNECTOK (with the object's metadata) or a CONNECTFAIL, both signed. A second
//!    CONNECT with a missing or wrong MAC closes the connection without a word.
//!
//! Keys: SPAKE2 gives both sides the same 32-byte key exactly when they used the same secret.
//! A digest of the handshake (both sides' SPAKE2 messages, the first CONNECT's payload and the
//! daemon's first answer) is bound into everything derived from it, each an
//! `HMAC-SHA256(key, label ‖ digest)`: the daemon's confirmation, and one message key per
//! direction. Every later message is signed (annotation `HMAC`) over its direction, a
//! per-direction message counter, its header fields, its other annotations and its payload. A
//! message with a missing or bad MAC is never decoded: the connection closes. A recorded
//! connection replayed later fails, as each side's SPAKE2 message (and so the key) is new; a
//! message replayed or reordered within a connection fails on the counter. A SPAKE2 message
//! reflected back to its sender fails on its side byte, and with the side relabelled, on the
//! key (the two sides blind with different points).
//!
//! Each handshake lets an active attacker test one guess of the secret, online, as with any
//! password; a passive one, or one who plays either side, gets nothing to test guesses against
//! offline. Without a secret the handshake is Pyro's: one CONNECT, one CONNECTOK.
//!
//! # Pyro4's HMAC key
//!
//! [`HmacKey`] is the other scheme, Pyro4's `_pyroHmacKey`, for talking to Pyro4 programs that
//! set one: every message carries `HMAC-SHA1(key, payload ‖ the other annotations' values in
//! the order of their ids)` in its `HMAC` annotation, and a message without it, or with a
//! wrong one, is refused with Pyro4's words (`message hmac mismatch`, `hmac key config not
//! symmetric`). It is weaker than a shared secret, as in Pyro4: the header (message type,
//! flags, sequence number) is not covered, a message can be replayed, and one message captured
//! on the network lets the key be guessed offline, so the key must be long and random, not a
//! passphrase. (Pyro4's daemon also signs its refusals, which hands anyone who can connect a
//! MAC of known words to guess from; rmi's daemon signs only what it sends to a client that
//! proved the key.) Use it for Pyro4 peers; between rmi programs, a [`SharedSecret`] (or
//! TLS).

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::protocol::frame::{Message, MessageType, Protocol, FLAGS_CORR_ID};
use crate::protocol::names::{MAC_ANNOTATION, PAKE_ANNOTATION, PROOF_ANNOTATION};

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// SPAKE2 identity of the client (side A).
const CLIENT_ID: &[u8] = b"rmi client";
/// SPAKE2 identity of the daemon (side B).
const DAEMON_ID: &[u8] = b"rmi daemon";

/// The reason a daemon with a secret gives a client that brought none.
pub(crate) const SECRET_REQUIRED: &str = "the daemon requires the shared secret";

/// A secret shared by a daemon and its clients. Neither the secret nor anything a guess of it
/// could be checked against offline goes on the wire.
#[derive(Clone)]
pub struct SharedSecret {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(…)")
    }
}

impl SharedSecret {
    /// A secret from any bytes. The handshake resists offline guessing, so each guess costs a
    /// connection to the daemon, which refuses an address after 30 failed ones in a minute
    /// (logging them as warnings): a passphrase of several random words is out of reach; a
    /// dictionary word is not, from many addresses. A long random secret makes online guessing
    /// hopeless.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        SharedSecret {
            key: secret.as_ref().into(),
        }
    }

    fn password(&self) -> Password {
        Password::new(&self.key)
    }
}

/// Pyro4's HMAC key (`_pyroHmacKey`, the name server's `-k`): every message is signed with
/// HMAC-SHA1 and checked as a Pyro4 peer does. For Pyro4 programs that set one; it protects
/// less than a [`SharedSecret`], and a captured message lets it be guessed offline: use a long
/// random key (see [the module docs](self#pyro4s-hmac-key)).
#[derive(Clone)]
pub struct HmacKey {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(…)")
    }
}

impl HmacKey {
    /// The key's bytes, as Pyro4 takes them (a Python `str` key is its UTF-8 bytes). An empty
    /// key is a key: Pyro4 treats one as none, so its peers would answer `hmac key config not
    /// symmetric`.
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        HmacKey {
            key: key.as_ref().into(),
        }
    }
}

/// Pyro4's answer to a message whose MAC is wrong.
pub(crate) const HMAC_MISMATCH: &str = "message hmac mismatch";
/// Pyro4's answer to a message with a MAC where none is expected, or none where one is.
pub(crate) const HMAC_NOT_SYMMETRIC: &str = "hmac key config not symmetric";

/// The annotation a Pyro4 header carries the correlation id in.
const CORR_ANNOTATION: [u8; 4] = *b"CORR";

/// Pyro4's MAC of `msg` as the peer reads it in `protocol`: HMAC-SHA1 over the payload, then
/// the value of every other annotation in the order of their ids. Under Pyro4 the correlation
/// id is the `CORR` annotation (`corr`, when it travels); under Pyro5 it is in the header and
/// not covered.
fn pyro4_mac(key: &HmacKey, msg: &Message, corr: Option<&[u8; 16]>) -> [u8; 20] {
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(&key.key).expect("any key length");
    mac.update(&msg.payload);
    for piece in &msg.payload_tail {
        mac.update(piece);
    }
    let mut values: Vec<(&[u8; 4], &[u8])> = corr
        .map(|c| (&CORR_ANNOTATION, &c[..]))
        .into_iter()
        .chain(
            msg.annotations
                .iter()
                .filter(|(id, _)| *id != MAC_ANNOTATION)
                .map(|(id, v)| (id, v.as_ref())),
        )
        .collect();
    values.sort_by_key(|(id, _)| **id);
    for (_, value) in values {
        mac.update(value);
    }
    mac.finalize().into_bytes().into()
}

/// Checks `msg` as a Pyro4 peer with `key` (or none) does, returning Pyro4's reason on failure.
/// `msg` was received in `protocol`.
pub(crate) fn pyro4_check(
    key: Option<&HmacKey>,
    protocol: Protocol,
    msg: &Message,
) -> Result<(), &'static str> {
    let mut macs = msg
        .annotations
        .iter()
        .filter(|(id, _)| *id == MAC_ANNOTATION);
    let (tag, more) = (macs.next(), macs.next());
    match (key, tag) {
        (Some(_), Some(_)) if more.is_some() => Err(HMAC_MISMATCH),
        (Some(key), Some((_, tag))) => {
            // A parsed Pyro4 message has its CORR annotation as the correlation id.
            let corr = (protocol == Protocol::Pyro4 && msg.has_flag(FLAGS_CORR_ID))
                .then_some(&msg.corr_id);
            if same(&pyro4_mac(key, msg, corr), tag) {
                Ok(())
            } else {
                Err(HMAC_MISMATCH)
            }
        }
        (None, None) => Ok(()),
        _ => Err(HMAC_NOT_SYMMETRIC),
    }
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("32-byte key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A digest of the handshake: the first CONNECT's serializer and payload, both SPAKE2
/// messages, and the daemon's first answer's payload, each with its length.
fn transcript(
    connect: &Message,
    client_msg: &[u8],
    server_msg: &[u8],
    offer: &Message,
) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(b"rmi spake2 handshake v1");
    for part in [
        &[connect.serializer][..],
        &connect.payload,
        client_msg,
        server_msg,
        &[offer.serializer][..],
        &offer.payload,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// What both sides derive from the SPAKE2 key and the transcript.
struct Keys {
    /// The daemon's key confirmation, sent in its first CONNECTOK.
    confirmation: [u8; 32],
    /// Signs what the client sends.
    to_daemon: [u8; 32],
    /// Signs what the daemon sends.
    to_client: [u8; 32],
}

impl Keys {
    fn derive(spake_key: &[u8], transcript: &[u8; 32]) -> Keys {
        let mut key = [0u8; 32];
        // SPAKE2 over Ed25519 hashes its result with SHA-256: always 32 bytes.
        key.copy_from_slice(&spake_key[..32]);
        let derive = |label: &[u8]| hmac(&key, &[label, transcript]);
        Keys {
            confirmation: derive(b"rmi daemon key confirmation"),
            to_daemon: derive(b"rmi client-to-daemon message key"),
            to_client: derive(b"rmi daemon-to-client message key"),
        }
    }
}

/// Constant-time equality of a received confirmation or MAC.
fn same(expected: &[u8], got: &[u8]) -> bool {
    expected.ct_eq(got).into()
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ToServer = 0,
    ToClient = 1,
}

fn message_mac(
    key: &[u8; 32],
    direction: Direction,
    protocol: Protocol,
    counter: u64,
    msg: &Message,
) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("32-byte key");
    mac.update(&[direction as u8]);
    mac.update(&counter.to_be_bytes());
    mac.update(&[msg.msg_type as u8, msg.serializer]);
    // The flags and correlation id as the peer will read them (a Pyro4 exception reply
    // carries no correlation id), so both sides sign the same.
    let (flags, corr_id) = protocol.as_received(msg);
    mac.update(&flags.to_be_bytes());
    mac.update(&msg.seq.to_be_bytes());
    mac.update(&corr_id);
    for (id, value) in msg
        .annotations
        .iter()
        .filter(|(id, _)| *id != MAC_ANNOTATION)
    {
        mac.update(id);
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value);
    }
    mac.update(&(msg.payload_len() as u64).to_be_bytes());
    mac.update(&msg.payload);
    for piece in &msg.payload_tail {
        mac.update(piece);
    }
    mac.finalize().into_bytes().into()
}

/// What a side's messages are signed with.
#[derive(Clone)]
enum Keying {
    /// A shared-secret session's key for one direction (with a message counter).
    Session { key: [u8; 32], direction: Direction },
    /// Pyro4's HMAC key (no counter, no direction).
    Pyro4(HmacKey),
}

impl std::fmt::Debug for Keying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keying::Session { direction, .. } => write!(f, "Session({direction:?})"),
            Keying::Pyro4(_) => f.write_str("Pyro4Hmac"),
        }
    }
}

/// Signs the messages one side sends (owned by its writer).
pub struct Signer {
    keying: Keying,
    protocol: Protocol,
    sent: u64,
}

/// Checks the messages one side receives (owned by its reader).
pub struct Verifier {
    keying: Keying,
    protocol: Protocol,
    received: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.keying)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.keying)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs for a connection speaking `protocol` (Pyro5 unless told): the MAC covers a
    /// message as the peer reads it in that protocol.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Adds the MAC annotation to an outgoing message.
    pub fn sign(&mut self, msg: &mut Message) {
        msg.annotations.retain(|(id, _)| *id != MAC_ANNOTATION);
        let tag = match &self.keying {
            Keying::Session { key, direction } => {
                Bytes::copy_from_slice(&message_mac(key, *direction, self.protocol, self.sent, msg))
            }
            Keying::Pyro4(key) => {
                // The correlation id as the peer will read it: a CORR annotation under Pyro4.
                let (_, corr) = self.protocol.as_received(msg);
                let corr = (self.protocol == Protocol::Pyro4 && corr != [0; 16]).then_some(&corr);
                Bytes::copy_from_slice(&pyro4_mac(key, msg, corr))
            }
        };
        self.sent += 1;
        msg.annotations.push((MAC_ANNOTATION, tag));
    }
}

impl Verifier {
    /// Checks messages of a connection speaking `protocol` (Pyro5 unless told); see
    /// [`Signer::set_protocol`].
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Checks an incoming message's MAC; on failure the connection must close.
    pub fn verify(&mut self, msg: &Message) -> Result<(), Error> {
        let (key, direction) = match &self.keying {
            Keying::Session { key, direction } => (key, *direction),
            Keying::Pyro4(key) => {
                return pyro4_check(Some(key), self.protocol, msg).map_err(|reason| {
                    Error::Protocol(format!("{reason} (Pyro4's HMAC key); closing"))
                })
            }
        };
        let expected = message_mac(key, direction, self.protocol, self.received, msg);
        self.received += 1;
        // The MAC leaves out every HMAC annotation: a message must carry exactly one, or an
        // extra one could ride along unsigned.
        let macs = msg
            .annotations
            .iter()
            .filter(|(id, _)| *id == MAC_ANNOTATION);
        if macs.count() > 1 {
            return Err(Error::Protocol(
                "message authentication failed (more than one HMAC); closing".into(),
            ));
        }
        match msg.annotation(&MAC_ANNOTATION) {
            Some(tag) if same(&expected, tag) => Ok(()),
            Some(_) => Err(Error::Protocol(
                "message authentication failed (bad HMAC); closing".into(),
            )),
            None => Err(Error::Protocol(
                "message authentication failed (no HMAC); closing".into(),
            )),
        }
    }
}

/// Both halves of one side's session: the writer signs, the reader verifies.
pub type Session = (Signer, Verifier);

/// A session from what each half signs with, for a connection speaking `protocol`.
fn session(send: Keying, receive: Keying, protocol: Protocol) -> Session {
    (
        Signer {
            keying: send,
            protocol,
            sent: 0,
        },
        Verifier {
            keying: receive,
            protocol,
            received: 0,
        },
    )
}

fn client_session(keys: &Keys) -> Session {
    session(
        Keying::Session {
            key: keys.to_daemon,
            direction: Direction::ToServer,
        },
        Keying::Session {
            key: keys.to_client,
            direction: Direction::ToClient,
        },
        Protocol::Pyro5,
    )
}

fn server_session(keys: &Keys) -> Session {
    session(
        Keying::Session {
            key: keys.to_client,
            direction: Direction::ToClient,
        },
        Keying::Session {
            key: keys.to_daemon,
            direction: Direction::ToServer,
        },
        Protocol::Pyro5,
    )
}

/// Either side's session with Pyro4's HMAC `key` on a connection speaking `protocol`: both
/// directions sign with the key itself, from the first message on.
pub(crate) fn hmac_session(key: &HmacKey, protocol: Protocol) -> Session {
    session(
        Keying::Pyro4(key.clone()),
        Keying::Pyro4(key.clone()),
        protocol,
    )
}

/// The client's half of the handshake: started on the first CONNECT, confirmed on the daemon's
/// first CONNECTOK. The session it returns signs the second CONNECT, which proves the client.
pub struct ClientHandshake {
    spake: Spake2<Ed25519Group>,
    msg: Vec<u8>,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake(…)")
    }
}

impl ClientHandshake {
    /// Adds the client's SPAKE2 message to `connect`, which must not change after this.
    pub fn start(secret: &SharedSecret, connect: &mut Message) -> Self {
        let (spake, msg) = Spake2::<Ed25519Group>::start_a(
            &secret.password(),
            &Identity::new(CLIENT_ID),
            &Identity::new(DAEMON_ID),
        );
        connect
            .annotations
            .push((PAKE_ANNOTATION, Bytes::copy_from_slice(&msg)));
        ClientHandshake { spake, msg }
    }

    /// Checks the daemon's key confirmation in its first CONNECTOK `offer` (to the first
    /// `connect`), in constant time, and returns the client's session. On `Err` the client
    /// must send nothing more on this connection.
    pub fn confirm(self, connect: &Message, offer: &Message) -> Result<Session, Error> {
        if offer.msg_type != MessageType::ConnectOk {
            return Err(Error::Protocol(format!(
                "expected CONNECTOK or CONNECTFAIL, got {:?}",
                offer.msg_type
            )));
        }
        let Some(server_msg) = offer.annotation(&PAKE_ANNOTATION) else {
            return Err(Error::ConnectFailed(
                "the daemon did not authenticate: it answered without the shared-secret handshake \
                 (does it have no secret?)"
                    .into(),
            ));
        };
        let spake_key = self.spake.finish(server_msg).map_err(|e| {
            Error::ConnectFailed(format!(
                "the daemon could not prove the shared secret (invalid key exchange message: {e})"
            ))
        })?;
        let keys = Keys::derive(
            &spake_key,
            &transcript(connect, &self.msg, server_msg, offer),
        );
        let confirmation = offer
            .annotation(&PROOF_ANNOTATION)
            .map(|p| p.as_ref())
            .unwrap_or_default();
        if !same(&keys.confirmation, confirmation) {
            return Err(Error::ConnectFailed(
                "the daemon could not prove the shared secret (wrong secret?)".into(),
            ));
        }
        Ok(client_session(&keys))
    }
}

/// The daemons that answered this process's key exchange without proving the secret. Such an
/// answer is one online guess at the secret, which the daemon checks by whether the proxy then
/// sends its proof; a fake daemon (a callback URI a client chose, a spoofed broadcast answer)
/// could otherwise guess as fast as it is dialed. Past [`ClientGuesses::LIMIT`] in a
/// [`ClientGuesses::WINDOW`] from one host, no exchange is started with it until the window
/// ends. (Twice the daemon's own limit: an rmi daemon refuses a client that failed 30 times
/// before this side's limit is reached, and says so.)
///
/// Counted as the daemon counts its clients: per IPv4 address or IPv6 /64, whatever port or
/// name it was dialed by ([`guesser`]). A host that has failed once in the window has its
/// exchanges under way counted as guesses too, so that many dials at once get no more; a host
/// that never failed is not limited, however many connections a program opens to it at once
/// (a gateway with a secret, a proxy per task), and takes no place in the table. A proof wipes
/// nothing (a fake daemon that relays one real exchange now and then would start from nothing
/// otherwise), and while the table is full, hosts that fail and are not in it share one tally.
#[derive(Debug, Default)]
pub(crate) struct ClientGuesses {
    /// Per host that failed in its window: when the window opened, its failed answers in it,
    /// and its exchanges under way.
    hosts: parking_lot::Mutex<std::collections::HashMap<String, Tally>>,
}

/// One host's guesses.
#[derive(Debug, Clone, Copy)]
struct Tally {
    since: std::time::Instant,
    failed: u32,
    under_way: u32,
}

/// Where a daemon's guesses at this process's secret are counted: its IPv4 address, its IPv6
/// /64 (what one subscriber gets), or, for a peer with no IP address (a Unix socket), the
/// location dialed.
pub(crate) fn guesser(ip: Option<std::net::IpAddr>, location: &str) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => location.to_owned(),
    }
}

/// An exchange under way with a host; counted as a guess, until it ends (is dropped), when its
/// host has failed in the window.
#[derive(Debug)]
pub(crate) struct Offering {
    /// The tally it counts in (its host's, or the overflow's).
    key: String,
    /// Whether it is counted as under way.
    counted: bool,
}

impl Drop for Offering {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        if let Some(tally) = ClientGuesses::get().hosts.lock().get_mut(&self.key) {
            tally.under_way = tally.under_way.saturating_sub(1);
        }
    }
}

impl ClientGuesses {
    /// Failed answers one host may give in a window.
    pub(crate) const LIMIT: u32 = 60;
    /// The window.
    pub(crate) const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
    /// Hosts remembered at most; past it, the hosts that fail and are not in the table share
    /// one tally.
    const MAX_HOSTS: usize = 4096;
    /// The shared tally's key.
    const OVERFLOW: &'static str = "(hosts past the table's bound)";

    /// The process's.
    pub(crate) fn get() -> &'static ClientGuesses {
        static GUESSES: std::sync::OnceLock<ClientGuesses> = std::sync::OnceLock::new();
        GUESSES.get_or_init(ClientGuesses::default)
    }

    /// The key of `key`'s tally: its own, or the overflow's while the table is full without it
    /// (its expired tallies dropped first).
    fn tally_key<'k>(
        hosts: &mut std::collections::HashMap<String, Tally>,
        key: &'k str,
        now: std::time::Instant,
    ) -> &'k str {
        if hosts.contains_key(key) || hosts.len() < Self::MAX_HOSTS {
            return key;
        }
        hosts.retain(|_, t| t.under_way > 0 || now.duration_since(t.since) < Self::WINDOW);
        if hosts.len() < Self::MAX_HOSTS {
            key
        } else {
            Self::OVERFLOW
        }
    }

    /// Starts an exchange with the daemon at `location` (host `key`, see [`guesser`]), if it may
    /// have another guess now; the refusal says why. The exchange counts until the `Offering`
    /// is dropped; a failure it ends in is told to [`failed`](Self::failed).
    pub(crate) fn may_offer(&self, key: &str, location: &str) -> Result<Offering, Error> {
        let now = std::time::Instant::now();
        let mut hosts = self.hosts.lock();
        let key = Self::tally_key(&mut hosts, key, now);
        let Some(tally) = hosts.get_mut(key) else {
            // Never failed: not limited.
            return Ok(Offering {
                key: key.to_owned(),
                counted: false,
            });
        };
        if now.duration_since(tally.since) >= Self::WINDOW {
            (tally.since, tally.failed) = (now, 0);
        }
        let counted = tally.failed > 0;
        if counted && tally.failed.saturating_add(tally.under_way) >= Self::LIMIT {
            return Err(Error::ConnectFailed(format!(
                "the daemon at {location} failed to prove the shared secret {} times within \
                 {:?} (with {} more exchanges under way): it gets no other guess at it until \
                 then",
                tally.failed,
                Self::WINDOW,
                tally.under_way
            )));
        }
        if counted {
            tally.under_way += 1;
        }
        Ok(Offering {
            key: key.to_owned(),
            counted,
        })
    }

    /// Counts the exchange `offering` as a failed guess: its daemon did not prove the secret.
    pub(crate) fn failed(&self, offering: &Offering) {
        let now = std::time::Instant::now();
        let mut hosts = self.hosts.lock();
        let key = Self::tally_key(&mut hosts, &offering.key, now);
        let tally = hosts.entry(key.to_owned()).or_insert(Tally {
            since: now,
            failed: 0,
            under_way: 0,
        });
        if now.duration_since(tally.since) >= Self::WINDOW {
            (tally.since, tally.failed) = (now, 0);
        }
        tally.failed = tally.failed.saturating_add(1);
    }
}

/// The daemon's half of the handshake: started on the first CONNECT (whose payload it does not
/// read), finished on the second, signed one.
pub struct ServerHandshake {
    keys: Keys,
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHandshake(…)")
    }
}

impl ServerHandshake {
    /// Whether `connect` asks for the key exchange at all (carries the client's SPAKE2
    /// message): a client without the secret does not, and tests no guess at it.
    pub fn asked_for(connect: &Message) -> bool {
        connect.annotation(&PAKE_ANNOTATION).is_some()
    }

    /// Takes the client's SPAKE2 message from `connect` and adds the daemon's own message and
    /// key confirmation to `offer`, the first CONNECTOK, whose payload must be final (and must
    /// not depend on the request: rmi sends it empty). `Err` carries the reason for the
    /// CONNECTFAIL; it never depends on the secret or on the objects.
    pub fn start(
        secret: &SharedSecret,
        connect: &Message,
        offer: &mut Message,
    ) -> Result<Self, String> {
        let client_msg = connect
            .annotation(&PAKE_ANNOTATION)
            .ok_or_else(|| SECRET_REQUIRED.to_string())?;
        let (spake, server_msg) = Spake2::<Ed25519Group>::start_b(
            &secret.password(),
            &Identity::new(CLIENT_ID),
            &Identity::new(DAEMON_ID),
        );
        let spake_key = spake
            .finish(client_msg)
            .map_err(|e| format!("{SECRET_REQUIRED}: invalid key exchange message ({e})"))?;
        let keys = Keys::derive(
            &spake_key,
            &transcript(connect, client_msg, &server_msg, offer),
        );
        offer
            .annotations
            .push((PAKE_ANNOTATION, Bytes::from(server_msg)));
        offer
            .annotations
            .push((PROOF_ANNOTATION, Bytes::copy_from_slice(&keys.confirmation)));
        Ok(ServerHandshake { keys })
    }

    /// Checks the client's proof: `proof`, the second message, must carry the client's first
    /// MAC. Returns the daemon's session (its verifier past that message); on `Err` the
    /// connection must close without an answer.
    pub fn finish(self, proof: &Message) -> Result<Session, Error> {
        let (signer, mut verifier) = server_session(&self.keys);
        verifier.verify(proof).map_err(|_| {
            Error::Protocol("the client did not prove the shared secret (wrong secret?)".into())
        })?;
        Ok((signer, verifier))
    }
}

#[cfg(test)]
mod tests;
