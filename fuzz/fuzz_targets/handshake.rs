//! The shared-secret handshake (SPAKE2): arbitrary bytes as the client's messages to the daemon's
//! half and as the daemon's messages to the client's half, through `rmi_core::auth`'s state
//! machines (pure functions, no sockets).
//!
//! Nothing may panic; nothing made up may pass: a confirmation or a proof the input did not get
//! from a party that holds the secret is refused. The first byte picks the case:
//!
//! - 0: the daemon's half, the first CONNECT and the proof built from length-prefixed chunks;
//! - 1: the daemon's half, both messages parsed as Pyro5 frames from the rest;
//! - 2: the client's half, the daemon's offer built from length-prefixed chunks;
//! - 3: the client's half, the offer parsed as a Pyro5 frame;
//! - 4: an honest handshake with the input XORed into one part the transcript or the MACs
//!   cover: it fails exactly when that part changed.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rmi_core::auth::{ClientHandshake, ServerHandshake, SharedSecret};
use rmi_core::protocol::codec::DEFAULT_MAX_MESSAGE_SIZE;
use rmi_core::protocol::frame::{self, Message, MessageType};
use rmi_core::protocol::names::{MAC_ANNOTATION, PAKE_ANNOTATION, PROOF_ANNOTATION};

const SECRET: &str = "hunter2";

fuzz_target!(|data: &[u8]| handshake(data));

fn handshake(data: &[u8]) {
    let Some((&case, mut rest)) = data.split_first() else {
        return;
    };
    let secret = SharedSecret::new(SECRET);
    match case % 5 {
        0 => {
            let connect = built(MessageType::Connect, PAKE_ANNOTATION, &mut rest);
            let proof = built(MessageType::Connect, MAC_ANNOTATION, &mut rest);
            daemon_half(&secret, &connect, Some(&proof));
        }
        1 => {
            let mut messages = frames(rest).into_iter();
            if let Some(connect) = messages.next() {
                daemon_half(&secret, &connect, messages.next().as_ref());
            }
        }
        2 => {
            let mut offer = built(MessageType::ConnectOk, PAKE_ANNOTATION, &mut rest);
            let proof = take(&mut rest);
            offer
                .annotations
                .push((PROOF_ANNOTATION, Bytes::copy_from_slice(proof)));
            client_half(&secret, &offer);
        }
        3 => {
            if let Some(offer) = frames(rest).into_iter().next() {
                client_half(&secret, &offer);
            }
        }
        _ => tampered(&secret, rest),
    }
}

/// The next chunk: one length byte, then up to that many bytes.
fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = data.split_first() else {
        return &[];
    };
    let (chunk, rest) = rest.split_at((n as usize).min(rest.len()));
    *data = rest;
    chunk
}

/// A message of `msg_type` whose `annotation` and payload are the next two chunks.
fn built(msg_type: MessageType, annotation: [u8; 4], data: &mut &[u8]) -> Message {
    let value = take(data);
    let mut msg = Message::new(msg_type, 98, 0, 0, Bytes::copy_from_slice(take(data)));
    msg.annotations
        .push((annotation, Bytes::copy_from_slice(value)));
    msg
}

/// Every whole Pyro5 message at the front of `data`.
fn frames(data: &[u8]) -> Vec<Message> {
    let mut buf = BytesMut::from(data);
    let mut messages = Vec::new();
    while let Ok(header) = frame::check(&buf, DEFAULT_MAX_MESSAGE_SIZE) {
        match Message::parse(&mut buf, &header) {
            Ok(msg) => messages.push(msg),
            Err(_) => break,
        }
    }
    messages
}

/// The daemon's half on a made-up CONNECT and proof: the proof never passes.
fn daemon_half(secret: &SharedSecret, connect: &Message, proof: Option<&Message>) {
    let mut offer = Message::new(MessageType::ConnectOk, 98, 0, 0, Bytes::new());
    let Ok(daemon) = ServerHandshake::start(secret, connect, &mut offer) else {
        assert!(
            offer.annotations.is_empty(),
            "a refused CONNECT got an offer"
        );
        return;
    };
    assert_eq!(
        offer.annotation(&PAKE_ANNOTATION).map(|m| m.len()),
        Some(33)
    );
    assert_eq!(
        offer.annotation(&PROOF_ANNOTATION).map(|m| m.len()),
        Some(32)
    );
    if let Some(proof) = proof {
        assert!(daemon.finish(proof).is_err(), "a made-up proof passed");
    }
}

/// The client's half on a made-up offer: it never confirms.
fn client_half(secret: &SharedSecret, offer: &Message) {
    let mut connect = Message::new(MessageType::Connect, 98, 0, 0, &b"connect"[..]);
    let client = ClientHandshake::start(secret, &mut connect);
    assert!(
        client.confirm(&connect, offer).is_err(),
        "a made-up confirmation passed"
    );
}

/// An honest handshake with the input XORed into one covered part of the offer or the proof.
fn tampered(secret: &SharedSecret, data: &[u8]) {
    let Some((&target, mask)) = data.split_first() else {
        return;
    };
    let xor = |value: &Bytes| -> Bytes {
        let mut v = value.to_vec();
        v.resize(v.len().max(mask.len()), 0);
        for (b, m) in v.iter_mut().zip(mask) {
            *b ^= m;
        }
        v.into()
    };
    let mut connect = Message::new(MessageType::Connect, 98, 0, 0, &b"connect"[..]);
    let client = ClientHandshake::start(secret, &mut connect);
    let mut offer = Message::new(MessageType::ConnectOk, 98, 0, 0, Bytes::new());
    let daemon = ServerHandshake::start(secret, &connect, &mut offer).expect("an honest CONNECT");
    let honest_offer = offer.clone();
    match target % 3 {
        0 => offer.payload = xor(&offer.payload),
        1 => {
            for (id, value) in offer.annotations.iter_mut() {
                if *id == PAKE_ANNOTATION {
                    *value = xor(value);
                }
            }
        }
        _ => {
            for (id, value) in offer.annotations.iter_mut() {
                if *id == PROOF_ANNOTATION {
                    *value = xor(value);
                }
            }
        }
    }
    let confirmed = client.confirm(&connect, &offer);
    // Both SPAKE2 messages' bytes are hashed into the key, so any change to one counts.
    if offer == honest_offer {
        let (mut signer, _) = confirmed.expect("an honest handshake confirms");
        let mut proof = Message::new(MessageType::Connect, 98, 0, 0, &b"connect"[..]);
        signer.sign(&mut proof);
        let honest_proof = proof.clone();
        proof.payload = xor(&proof.payload);
        let finished = daemon.finish(&proof);
        assert_eq!(finished.is_ok(), proof == honest_proof, "proof tampering");
    } else {
        assert!(confirmed.is_err(), "a tampered offer confirmed");
    }
}
