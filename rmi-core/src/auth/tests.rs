//! Both halves of the handshake against each other, honest and attacked, and message signing.

use super::*;

fn connect(payload: &'static [u8]) -> Message {
    Message::new(MessageType::Connect, 98, 0, 0, payload)
}

fn offer() -> Message {
    Message::new(MessageType::ConnectOk, 98, 0, 0, Bytes::new())
}

/// A whole handshake: the client's and the daemon's sessions, or the first error.
fn handshake(client_secret: &str, daemon_secret: &str) -> Result<(Session, Session), Error> {
    let mut first = connect(b"connect");
    let client = ClientHandshake::start(&SharedSecret::new(client_secret), &mut first);
    let mut ok = offer();
    let daemon = ServerHandshake::start(&SharedSecret::new(daemon_secret), &first, &mut ok)
        .map_err(Error::ConnectFailed)?;
    let (mut client_out, client_in) = client.confirm(&first, &ok)?;
    let mut proof = connect(b"connect");
    client_out.sign(&mut proof);
    let daemon_session = daemon.finish(&proof)?;
    Ok(((client_out, client_in), daemon_session))
}

#[test]
fn both_halves_of_the_handshake_agree_only_on_the_same_secret() {
    let ((mut client_out, mut client_in), (mut daemon_out, mut daemon_in)) =
        handshake("s3cret", "s3cret").unwrap();
    let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"call"[..]);
    client_out.sign(&mut call);
    daemon_in.verify(&call).unwrap();
    let mut reply = Message::new(MessageType::Result, 98, 0, 1, &b"reply"[..]);
    daemon_out.sign(&mut reply);
    client_in.verify(&reply).unwrap();

    let err = handshake("s3cret", "other").unwrap_err().to_string();
    assert!(
        err.contains("could not prove the shared secret (wrong secret?)"),
        "{err}"
    );
    // A CONNECT without a SPAKE2 message is refused, with nothing computed.
    let err =
        ServerHandshake::start(&SharedSecret::new("s"), &connect(b"c"), &mut offer()).unwrap_err();
    assert_eq!(err, "the daemon requires the shared secret");
}

#[test]
fn a_client_with_a_wrong_secret_cannot_forge_its_proof() {
    // The client half with a wrong secret, skipping the daemon's confirmation: its proof
    // (the signed second CONNECT) is refused.
    let mut first = connect(b"connect");
    let client = ClientHandshake::start(&SharedSecret::new("guess"), &mut first);
    let mut ok = offer();
    let daemon = ServerHandshake::start(&SharedSecret::new("s3cret"), &first, &mut ok).unwrap();
    let spake_key = client
        .spake
        .finish(ok.annotation(&PAKE_ANNOTATION).unwrap())
        .unwrap();
    let keys = Keys::derive(
        &spake_key,
        &transcript(
            &first,
            &client.msg,
            ok.annotation(&PAKE_ANNOTATION).unwrap(),
            &ok,
        ),
    );
    let (mut forger, _) = client_session(&keys);
    let mut proof = connect(b"connect");
    forger.sign(&mut proof);
    let err = daemon.finish(&proof).unwrap_err().to_string();
    assert!(err.contains("did not prove the shared secret"), "{err}");
}

#[test]
fn the_confirmation_binds_the_transcript() {
    let secret = SharedSecret::new("s3cret");
    let mut first = connect(b"connect");
    let client = ClientHandshake::start(&secret, &mut first);
    let mut ok = offer();
    ServerHandshake::start(&secret, &first, &mut ok).unwrap();
    // The first CONNECT's payload altered on the way (say, another object id).
    let mut altered = first.clone();
    altered.payload = Bytes::from_static(b"CONNECT");
    let err = client.confirm(&altered, &ok).unwrap_err().to_string();
    assert!(err.contains("could not prove"), "{err}");
    // The daemon's answer altered on the way.
    let client = ClientHandshake::start(&secret, &mut first);
    let mut ok = offer();
    ServerHandshake::start(&secret, &first, &mut ok).unwrap();
    ok.payload = Bytes::from_static(b"metadata");
    assert!(client.confirm(&first, &ok).is_err());
}

#[test]
fn reflected_key_exchange_messages_fail() {
    let secret = SharedSecret::new("s3cret");
    // The daemon's message sent back to a daemon as a client's.
    let mut first = connect(b"c");
    ClientHandshake::start(&secret, &mut first);
    let mut ok = offer();
    ServerHandshake::start(&secret, &first, &mut ok).unwrap();
    let server_msg = ok.annotation(&PAKE_ANNOTATION).unwrap().clone();
    let mut reflected = connect(b"c");
    reflected
        .annotations
        .push((PAKE_ANNOTATION, server_msg.clone()));
    let err = ServerHandshake::start(&secret, &reflected, &mut offer()).unwrap_err();
    assert!(err.contains("invalid key exchange message"), "{err}");
    // The same with its side byte relabelled: accepted as a message, but the key differs,
    // so the daemon's own confirmation does not verify as a client's proof.
    let mut relabelled = server_msg.to_vec();
    relabelled[0] = b'A';
    let mut reflected = connect(b"c");
    reflected
        .annotations
        .push((PAKE_ANNOTATION, relabelled.into()));
    let mut ok2 = offer();
    let daemon = ServerHandshake::start(&secret, &reflected, &mut ok2).unwrap();
    let mut proof = connect(b"c");
    proof.annotations.push((
        MAC_ANNOTATION,
        ok2.annotation(&PROOF_ANNOTATION).unwrap().clone(),
    ));
    assert!(daemon.finish(&proof).is_err());

    // The client's message echoed back to the client as the daemon's.
    for side in [b'A', b'B'] {
        let mut first = connect(b"c");
        let client = ClientHandshake::start(&secret, &mut first);
        let mut echoed = first.annotation(&PAKE_ANNOTATION).unwrap().to_vec();
        echoed[0] = side;
        let mut ok = offer();
        ok.annotations.push((PAKE_ANNOTATION, echoed.into()));
        ok.annotations.push((PROOF_ANNOTATION, vec![0; 32].into()));
        let err = client.confirm(&first, &ok).unwrap_err().to_string();
        assert!(err.contains("could not prove"), "{err}");
    }
}

#[test]
fn malformed_key_exchange_messages_are_refused_without_panic() {
    let secret = SharedSecret::new("s3cret");
    let bad: [&[u8]; 5] = [b"", b"A", &[b'A'; 33], &[0xFF; 33], &[b'A'; 200]];
    for msg in bad {
        let mut first = connect(b"c");
        first
            .annotations
            .push((PAKE_ANNOTATION, Bytes::copy_from_slice(msg)));
        // Some 33-byte values decode to a point: then the answer is an ordinary offer.
        let _ = ServerHandshake::start(&secret, &first, &mut offer());

        let mut first = connect(b"c");
        let client = ClientHandshake::start(&secret, &mut first);
        let mut ok = offer();
        ok.annotations
            .push((PAKE_ANNOTATION, Bytes::copy_from_slice(msg)));
        ok.annotations
            .push((PROOF_ANNOTATION, Bytes::copy_from_slice(msg)));
        assert!(client.confirm(&first, &ok).is_err());
    }
    // No answer at all, and a CONNECTFAIL where the offer should be.
    let mut first = connect(b"c");
    let client = ClientHandshake::start(&secret, &mut first);
    let err = client.confirm(&first, &offer()).unwrap_err().to_string();
    assert!(err.contains("did not authenticate"), "{err}");
    let mut first = connect(b"c");
    let client = ClientHandshake::start(&secret, &mut first);
    let fail = Message::new(MessageType::ConnectFail, 98, 0, 0, Bytes::new());
    assert!(client.confirm(&first, &fail).is_err());
}

#[test]
fn signed_messages_verify_once_and_in_order_only() {
    let ((mut client, mut client_in), (mut server_out, mut server)) = handshake(
        "correct horse battery staple",
        "correct horse battery staple",
    )
    .unwrap();
    // `handshake` used the client's first MAC on its proof: these are its second and third.
    let mut first = Message::new(MessageType::Invoke, 98, 0, 1, &b"one"[..]);
    let mut second = Message::new(MessageType::Invoke, 98, 0, 2, &b"two"[..]);
    client.sign(&mut first);
    client.sign(&mut second);
    // Out of order fails (and a failed check still consumes the counter: the connection
    // closes).
    assert!(server.verify(&second).is_err());
    let ((mut client, _), (_, mut server)) = handshake("k", "k").unwrap();
    let mut first = Message::new(MessageType::Invoke, 98, 0, 1, &b"one"[..]);
    let mut second = Message::new(MessageType::Invoke, 98, 0, 2, &b"two"[..]);
    client.sign(&mut first);
    client.sign(&mut second);
    server.verify(&first).unwrap();
    server.verify(&second).unwrap();
    // Replay fails.
    assert!(server.verify(&second).is_err());
    // Tampering fails.
    let ((mut client, _), (_, mut fresh)) = handshake("k", "k").unwrap();
    let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"one"[..]);
    client.sign(&mut call);
    let mut tampered = call.clone();
    tampered.payload = Bytes::from_static(b"ONE");
    assert!(fresh.verify(&tampered).is_err());
    // Another connection's session (a replayed connection) fails.
    let (_, (_, mut other)) = handshake("k", "k").unwrap();
    assert!(other.verify(&call).is_err());
    // A message signed by the daemon does not verify as the client's (reflection).
    let mut reply = Message::new(MessageType::Result, 98, 0, 1, &b"r"[..]);
    server_out.sign(&mut reply);
    client_in.verify(&reply).unwrap();
    let ((_, _), (mut daemon_out, mut daemon_in)) = handshake("k", "k").unwrap();
    let mut echo = Message::new(MessageType::Invoke, 98, 0, 1, &b"e"[..]);
    daemon_out.sign(&mut echo);
    assert!(daemon_in.verify(&echo).is_err());
}

/// What is signed is what crosses the wire: a message with a correlation id (whose flag the
/// encoder adds) and with annotations verifies after being encoded and parsed back, keeps its
/// annotations, and carries one MAC even when signed again (a resend).
#[test]
fn a_signed_message_verifies_after_the_wire_and_keeps_its_annotations() {
    use crate::protocol::frame::{self, FLAGS_CORR_ID};
    let ((mut client_out, _), (_, mut daemon_in)) = handshake("s3cret", "s3cret").unwrap();
    let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"call"[..]);
    call.corr_id = [7; 16];
    call.annotations
        .push((*b"DDLN", Bytes::from_static(&[0, 0, 0, 0, 0, 0, 3, 232])));
    assert_eq!(
        call.flags & FLAGS_CORR_ID,
        0,
        "the flag is the encoder's to add"
    );
    client_out.sign(&mut call);
    let bytes = call.to_bytes();
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let header = frame::check(&buf, usize::MAX >> 1).unwrap();
    let received = Message::parse(&mut buf, &header).unwrap();
    assert_ne!(received.flags & FLAGS_CORR_ID, 0);
    assert_eq!(received.annotation(b"DDLN").map(|v| v.len()), Some(8));
    daemon_in.verify(&received).unwrap();

    // Signed again (the next message of the stream), the old MAC is replaced, not added to.
    client_out.sign(&mut call);
    let macs = call
        .annotations
        .iter()
        .filter(|(id, _)| *id == MAC_ANNOTATION)
        .count();
    assert_eq!(macs, 1);
    assert!(call.annotation(b"DDLN").is_some(), "other annotations stay");
    daemon_in.verify(&call).unwrap();
}

/// Debug output names the type and never shows the secret or the keys (they end up in logs).
#[test]
fn debug_output_names_the_type_and_hides_the_secret() {
    let secret = SharedSecret::new("hunter2-secret");
    assert_eq!(format!("{secret:?}"), "SharedSecret(…)");
    let mut first = connect(b"connect");
    let client = ClientHandshake::start(&secret, &mut first);
    let mut ok = offer();
    let daemon = ServerHandshake::start(&secret, &first, &mut ok).unwrap();
    let client_text = format!("{client:?}");
    let daemon_text = format!("{daemon:?}");
    let (mut out, input) = client.confirm(&first, &ok).unwrap();
    let mut proof = connect(b"connect");
    out.sign(&mut proof);
    let (signer_text, verifier_text) = (format!("{out:?}"), format!("{input:?}"));
    for (text, name) in [
        (&client_text, "ClientHandshake"),
        (&daemon_text, "ServerHandshake"),
        (&signer_text, "Signer"),
        (&verifier_text, "Verifier"),
    ] {
        assert!(text.starts_with(name), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("key"), "no key material: {text}");
    }
    assert!(signer_text.contains("sent: 1"), "{signer_text}");
    let _ = daemon.finish(&proof).unwrap();

    let key = HmacKey::new("hunter2");
    assert_eq!(format!("{key:?}"), "HmacKey(…)");
    let (signer, verifier) = hmac_session(&key, Protocol::Pyro4);
    for text in [format!("{signer:?}"), format!("{verifier:?}")] {
        assert!(text.contains("Pyro4Hmac"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn a_message_signed_with_a_payload_tail_verifies_as_the_joined_message_it_arrives_as() {
    let ((mut client_out, _), (_, mut daemon_in)) = handshake("s", "s").unwrap();
    let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"head"[..]);
    call.payload_tail = vec![Bytes::from(vec![1u8; 1000]), Bytes::from_static(b"rest")];
    client_out.sign(&mut call);
    let mut arrived = call.clone();
    arrived.join_payload();
    daemon_in.verify(&arrived).unwrap();
    // The tail is covered: a changed byte in it fails.
    let mut second = Message::new(MessageType::Invoke, 98, 0, 2, &b"head"[..]);
    second.payload_tail = vec![Bytes::from(vec![1u8; 1000])];
    client_out.sign(&mut second);
    second.payload_tail = vec![Bytes::from(vec![2u8; 1000])];
    second.join_payload();
    assert!(daemon_in.verify(&second).is_err());
}

#[test]
fn a_message_with_a_second_mac_annotation_is_refused() {
    let ((mut client_out, _), (_, mut daemon_in)) = handshake("s3cret", "s3cret").unwrap();
    let mut call = Message::new(MessageType::Invoke, 98, 0, 1, &b"call"[..]);
    client_out.sign(&mut call);
    // A correctly signed message with an extra HMAC annotation, which the MAC does not cover.
    call.annotations
        .push((MAC_ANNOTATION, Bytes::from_static(b"rides along unsigned")));
    let err = daemon_in.verify(&call).unwrap_err().to_string();
    assert!(err.contains("more than one HMAC"), "{err}");
}

#[test]
fn under_pyro4_an_exception_reply_is_signed_as_it_travels_without_its_correlation_id() {
    let ((_, mut client_in), (mut daemon_out, _)) = handshake("s3cret", "s3cret").unwrap();
    daemon_out.set_protocol(Protocol::Pyro4);
    client_in.set_protocol(Protocol::Pyro4);
    let flags = crate::protocol::frame::FLAGS_EXCEPTION;
    let mut reply = Message::new(MessageType::Result, 98, flags, 1, &b"error"[..]);
    reply.corr_id = [7; 16];
    daemon_out.sign(&mut reply);
    // What the client reads: Pyro4 sends an exception reply without its CORR annotation.
    let bytes = reply.to_bytes_in(Protocol::Pyro4);
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let header = Protocol::Pyro4.parse_header(&buf, usize::MAX).unwrap();
    let received = Message::parse(&mut buf, &header).unwrap();
    assert_eq!(
        received.corr_id, [0; 16],
        "the premise: no correlation id on the wire"
    );
    client_in.verify(&received).unwrap();
}

/// A RESULT Pyro4 4.82 wrote with `hmac_key=b"secret"` and annotations CORR, ZZZZ and AAAA
/// (in that order; `Message(MSG_RESULT, data, 1, 0, 1, annotations=…, hmac_key=b"secret")`).
const PYRO4_SIGNED_RESULT: &str = "5059524f00300005000000010000002d0001004500003592434f52520010\
    000102030405060708090a0b0c0d0e0f5a5a5a5a00046c6173744141414100056669727374484d414300148d76\
    e6368196d7f46a20fa6b9100c2fcf83c8e3f232073657270656e74207574662d3820707974686f6e332e320a27\
    48692077656c636f6d6520526173686d6927";

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn pyro4_s_hmac_is_checked_and_made_byte_for_byte_as_pyro4_makes_it() {
    use crate::protocol::frame::check_any;
    let bytes = unhex(PYRO4_SIGNED_RESULT);
    let header = check_any(&bytes, 1 << 20).unwrap();
    let received = Message::parse(&mut bytes::BytesMut::from(&bytes[..]), &header).unwrap();
    assert_eq!(
        received.corr_id,
        *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
    );
    let key = HmacKey::new("secret");
    assert_eq!(pyro4_check(Some(&key), Protocol::Pyro4, &received), Ok(()));
    let (_, mut verifier) = hmac_session(&key, Protocol::Pyro4);
    verifier.verify(&received).unwrap();
    assert_eq!(
        pyro4_check(Some(&HmacKey::new("other")), Protocol::Pyro4, &received),
        Err(HMAC_MISMATCH)
    );
    assert_eq!(
        pyro4_check(None, Protocol::Pyro4, &received),
        Err(HMAC_NOT_SYMMETRIC)
    );

    // Signed by rmi: the same bytes (CORR first, then the annotations in their order, the MAC
    // last, as Pyro4's dict keeps them).
    let mut msg = Message::new(
        MessageType::Result,
        received.serializer,
        0,
        1,
        received.payload.clone(),
    );
    msg.corr_id = received.corr_id;
    msg.annotations
        .push((*b"ZZZZ", Bytes::from_static(b"last")));
    msg.annotations
        .push((*b"AAAA", Bytes::from_static(b"first")));
    let (mut signer, _) = hmac_session(&key, Protocol::Pyro4);
    signer.sign(&mut msg);
    assert_eq!(msg.to_bytes_in(Protocol::Pyro4).to_vec(), bytes);

    // Each part counts: the payload, any annotation's value, the correlation id.
    let mut changed = received.clone();
    changed.payload = Bytes::from_static(b"# serpent utf-8 python3.2\n'Hi welcome Eve'");
    assert_eq!(
        pyro4_check(Some(&key), Protocol::Pyro4, &changed),
        Err(HMAC_MISMATCH)
    );
    let mut changed = received.clone();
    changed.annotations[0].1 = Bytes::from_static(b"lost");
    assert_eq!(
        pyro4_check(Some(&key), Protocol::Pyro4, &changed),
        Err(HMAC_MISMATCH)
    );
    let mut changed = received.clone();
    changed.corr_id[0] = 0xff;
    assert_eq!(
        pyro4_check(Some(&key), Protocol::Pyro4, &changed),
        Err(HMAC_MISMATCH)
    );
    // Two MACs: refused, whichever is right.
    let mut doubled = received.clone();
    doubled
        .annotations
        .push((MAC_ANNOTATION, Bytes::from_static(&[0; 20])));
    assert_eq!(
        pyro4_check(Some(&key), Protocol::Pyro4, &doubled),
        Err(HMAC_MISMATCH)
    );
}
