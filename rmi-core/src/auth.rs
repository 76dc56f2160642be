//! Shared-secret authentication: both sides prove the secret without sending it, and every
//! message after the handshake carries an HMAC.
//!
//! The client's CONNECT carries a random nonce (annotation `NONC`). The daemon answers
//! CONNECTOK with its own nonce and a proof, `HMAC-SHA256(secret, "rmi server proof" ‖ client
//! nonce ‖ server nonce ‖ handshake digest)` (annotation `PROF`), which the client checks in
//! constant time; the handshake digest covers the CONNECT and CONNECTOK payloads, so the
//! handshake data, the daemon's answer and the object's metadata cannot be altered on the way.
//! Both then derive a session key, `HMAC-SHA256(secret, "rmi session key" ‖ client nonce ‖
//! server nonce ‖ handshake digest)`, and sign every later message with it (annotation `HMAC`) over its direction, a
//! per-direction message counter, its header fields, its other annotations and its payload.
//! The first signed request proves the client knows the secret. A message with a missing or
//! bad MAC is never decoded: the connection closes. A recorded connection replayed later
//! fails, since the daemon's nonce (and so the key) is new; a message replayed or reordered
//! within a connection fails on the counter. Pyro4 signed messages the same way (an `HMAC`
//! annotation); Pyro5 dropped it.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::protocol::frame::Message;
use crate::protocol::names::{MAC_ANNOTATION, NONCE_ANNOTATION, PROOF_ANNOTATION};

const NONCE_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A secret shared by a daemon and its clients. The secret itself never goes on the wire.
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
    /// A secret from any bytes (use at least 16 random ones).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        SharedSecret {
            key: secret.as_ref().into(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The daemon's proof for this pair of nonces and this handshake (see [`transcript`]).
    fn server_proof(&self, client: &[u8], server: &[u8], transcript: &[u8; 32]) -> [u8; 32] {
        self.mac(&[b"rmi server proof", client, server, transcript])
    }

    /// The session on the client's side of a connection.
    fn client_session(&self, client: &[u8], server: &[u8], transcript: &[u8; 32]) -> Session {
        session(
            self.mac(&[b"rmi session key", client, server, transcript]),
            Direction::ToServer,
        )
    }

    /// The session on the daemon's side of a connection.
    fn server_session(&self, client: &[u8], server: &[u8], transcript: &[u8; 32]) -> Session {
        session(
            self.mac(&[b"rmi session key", client, server, transcript]),
            Direction::ToClient,
        )
    }
}

/// A digest of the handshake (the CONNECT and CONNECTOK payloads), bound into the proof and the
/// session key so that neither the handshake data, the daemon's answer nor the object's
/// metadata can be altered on the way.
fn transcript(connect: &[u8], connect_ok: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update((connect.len() as u64).to_be_bytes());
    h.update(connect);
    h.update((connect_ok.len() as u64).to_be_bytes());
    h.update(connect_ok);
    h.finalize().into()
}

/// A fresh random nonce.
fn nonce() -> Result<[u8; NONCE_LEN], Error> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| Error::Protocol(format!("no randomness for a nonce: {e}")))?;
    Ok(n)
}

/// Checks a nonce received from the peer.
fn check_nonce(value: Option<&bytes::Bytes>) -> Result<&[u8], String> {
    match value {
        Some(v) if v.len() == NONCE_LEN => Ok(v),
        Some(_) => Err("malformed authentication nonce".into()),
        None => Err("this daemon requires authentication with the shared secret".into()),
    }
}

/// Constant-time equality of a received proof or MAC.
fn same(expected: &[u8], got: &[u8]) -> bool {
    expected.ct_eq(got).into()
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ToServer = 0,
    ToClient = 1,
}

fn message_mac(key: &[u8; 32], direction: Direction, counter: u64, msg: &Message) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("32-byte key");
    mac.update(&[direction as u8]);
    mac.update(&counter.to_be_bytes());
    mac.update(&[msg.msg_type as u8, msg.serializer]);
    // Encoding sets FLAGS_CORR_ID whenever there is a correlation id: sign the flags as sent.
    let flags = if msg.corr_id != [0; 16] {
        msg.flags | crate::protocol::frame::FLAGS_CORR_ID
    } else {
        msg.flags
    };
    mac.update(&flags.to_be_bytes());
    mac.update(&msg.seq.to_be_bytes());
    mac.update(&msg.corr_id);
    for (id, value) in msg
        .annotations
        .iter()
        .filter(|(id, _)| *id != MAC_ANNOTATION)
    {
        mac.update(id);
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value);
    }
    mac.update(&(msg.payload.len() as u64).to_be_bytes());
    mac.update(&msg.payload);
    mac.finalize().into_bytes().into()
}

/// Signs the messages one side sends (owned by its writer).
#[derive(Debug)]
pub struct Signer {
    key: [u8; 32],
    direction: Direction,
    sent: u64,
}

/// Checks the messages one side receives (owned by its reader).
#[derive(Debug)]
pub struct Verifier {
    key: [u8; 32],
    direction: Direction,
    received: u64,
}

impl Signer {
    /// Adds the MAC annotation to an outgoing message.
    pub fn sign(&mut self, msg: &mut Message) {
        let tag = message_mac(&self.key, self.direction, self.sent, msg);
        self.sent += 1;
        msg.annotations.retain(|(id, _)| *id != MAC_ANNOTATION);
        msg.annotations
            .push((MAC_ANNOTATION, bytes::Bytes::copy_from_slice(&tag)));
    }
}

impl Verifier {
    /// Checks an incoming message's MAC; on failure the connection must close.
    pub fn verify(&mut self, msg: &Message) -> Result<(), Error> {
        let expected = message_mac(&self.key, self.direction, self.received, msg);
        self.received += 1;
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
pub(crate) type Session = (Signer, Verifier);

/// The client's half of the handshake: started on the CONNECT, finished on the CONNECTOK.
pub(crate) struct ClientHandshake {
    secret: SharedSecret,
    nonce: [u8; NONCE_LEN],
}

impl ClientHandshake {
    /// Adds the client's nonce to `connect`, which must not change after this.
    pub(crate) fn start(secret: &SharedSecret, connect: &mut Message) -> Result<Self, Error> {
        let nonce = nonce()?;
        connect
            .annotations
            .push((NONCE_ANNOTATION, bytes::Bytes::copy_from_slice(&nonce)));
        Ok(ClientHandshake {
            secret: secret.clone(),
            nonce,
        })
    }

    /// Checks the daemon's proof in its CONNECTOK `reply`; the daemon must prove the secret
    /// before the client sends anything else. Returns the client's session.
    pub(crate) fn finish(self, connect: &Message, reply: &Message) -> Result<Session, Error> {
        let server = check_nonce(reply.annotation(&NONCE_ANNOTATION)).map_err(|_| {
            Error::ConnectFailed("the daemon did not authenticate (no nonce)".into())
        })?;
        let proof = reply
            .annotation(&PROOF_ANNOTATION)
            .map(|p| p.as_ref())
            .unwrap_or_default();
        let transcript = transcript(&connect.payload, &reply.payload);
        let expected = self.secret.server_proof(&self.nonce, server, &transcript);
        if !same(&expected, proof) {
            return Err(Error::ConnectFailed(
                "the daemon could not prove the shared secret".into(),
            ));
        }
        Ok(self.secret.client_session(&self.nonce, server, &transcript))
    }
}

/// The daemon's half of the handshake: checks the client's nonce in `connect`, adds the
/// daemon's nonce and proof to the CONNECTOK `reply` (whose payload must be final), and returns
/// the daemon's session. `Err` carries the reason for the CONNECTFAIL.
pub(crate) fn accept(
    secret: &SharedSecret,
    connect: &Message,
    reply: &mut Message,
) -> Result<Session, String> {
    let client = check_nonce(connect.annotation(&NONCE_ANNOTATION))?;
    let server = nonce().map_err(|e| e.to_string())?;
    let transcript = transcript(&connect.payload, &reply.payload);
    let proof = secret.server_proof(client, &server, &transcript);
    reply
        .annotations
        .push((NONCE_ANNOTATION, bytes::Bytes::copy_from_slice(&server)));
    reply
        .annotations
        .push((PROOF_ANNOTATION, bytes::Bytes::copy_from_slice(&proof)));
    Ok(secret.server_session(client, &server, &transcript))
}

fn session(key: [u8; 32], sends: Direction) -> Session {
    let receives = match sends {
        Direction::ToServer => Direction::ToClient,
        Direction::ToClient => Direction::ToServer,
    };
    (
        Signer {
            key,
            direction: sends,
            sent: 0,
        },
        Verifier {
            key,
            direction: receives,
            received: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::MessageType;

    #[test]
    fn signed_messages_verify_once_and_in_order_only() {
        let secret = SharedSecret::new("correct horse battery staple");
        let (c, s) = (nonce().unwrap(), nonce().unwrap());
        let t = transcript(b"connect", b"ok");
        let (mut client, mut client_in) = secret.client_session(&c, &s, &t);
        let (mut server_out, mut server) = secret.server_session(&c, &s, &t);
        let mut first = Message::new(MessageType::Invoke, 98, 0, 1, &b"one"[..]);
        let mut second = Message::new(MessageType::Invoke, 98, 0, 2, &b"two"[..]);
        client.sign(&mut first);
        client.sign(&mut second);
        // Out of order fails (and a failed check still consumes the counter: the connection closes).
        let (_, mut reordered) = secret.server_session(&c, &s, &t);
        assert!(reordered.verify(&second).is_err());
        server.verify(&first).unwrap();
        server.verify(&second).unwrap();
        // Replay fails.
        assert!(server.verify(&second).is_err());
        // Tampering fails.
        let (_, mut fresh) = secret.server_session(&c, &s, &t);
        let mut tampered = first.clone();
        tampered.payload = bytes::Bytes::from_static(b"ONE");
        assert!(fresh.verify(&tampered).is_err());
        // A session with other nonces (a replayed connection) fails.
        let (_, mut other) = secret.server_session(&c, &nonce().unwrap(), &t);
        assert!(other.verify(&first).is_err());
        // A session over an altered handshake fails too.
        let (_, mut other) = secret.server_session(&c, &s, &transcript(b"connect", b"altered"));
        assert!(other.verify(&first).is_err());
        // Replies verify on the client with the server's direction.
        let mut reply = Message::new(MessageType::Result, 98, 0, 1, &b"r"[..]);
        server_out.sign(&mut reply);
        client_in.verify(&reply).unwrap();
    }

    #[test]
    fn both_halves_of_the_handshake_agree_only_on_the_same_secret() {
        let handshake = |client_secret: &str, server_secret: &str| {
            let mut connect = Message::new(MessageType::Connect, 98, 0, 0, &b"connect"[..]);
            let client = ClientHandshake::start(&SharedSecret::new(client_secret), &mut connect)?;
            let mut ok = Message::new(MessageType::ConnectOk, 98, 0, 0, &b"ok"[..]);
            let (mut server_out, mut server_in) =
                accept(&SharedSecret::new(server_secret), &connect, &mut ok)
                    .map_err(Error::ConnectFailed)?;
            let (mut client_out, mut client_in) = client.finish(&connect, &ok)?;
            let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"call"[..]);
            client_out.sign(&mut call);
            server_in.verify(&call)?;
            let mut reply = Message::new(MessageType::Result, 98, 0, 1, &b"reply"[..]);
            server_out.sign(&mut reply);
            client_in.verify(&reply)
        };
        handshake("s3cret", "s3cret").unwrap();
        let err = handshake("s3cret", "other").unwrap_err().to_string();
        assert!(err.contains("could not prove the shared secret"), "{err}");
        // A CONNECT without a nonce is refused by the daemon.
        let connect = Message::new(MessageType::Connect, 98, 0, 0, &b"connect"[..]);
        let mut ok = Message::new(MessageType::ConnectOk, 98, 0, 0, &b"ok"[..]);
        let err = accept(&SharedSecret::new("s"), &connect, &mut ok).unwrap_err();
        assert!(err.contains("requires authentication"), "{err}");
    }

    #[test]
    fn the_proof_depends_on_the_secret() {
        let (c, s) = (nonce().unwrap(), nonce().unwrap());
        let t = transcript(b"connect", b"ok");
        let a = SharedSecret::new("a").server_proof(&c, &s, &t);
        let b = SharedSecret::new("b").server_proof(&c, &s, &t);
        assert!(!same(&a, &b));
        assert!(same(&a, &SharedSecret::new("a").server_proof(&c, &s, &t)));
        assert!(!same(
            &a,
            &SharedSecret::new("a").server_proof(&c, &s, &transcript(b"connect", b"tampered"))
        ));
    }
}
