//! The shared-secret handshake under attack, through raw sockets speaking the protocol: object
//! id enumeration, a fake daemon, reflected and forged messages, and when the validator runs.

use std::sync::Arc;
use std::time::Duration;

use rmi::auth::{ClientHandshake, ServerHandshake};
use rmi::protocol::codec::ConnectRequest;
use rmi::protocol::frame::{self, Message, MessageType, HEADER_SIZE};
use rmi::protocol::names::{MAC_ANNOTATION, PAKE_ANNOTATION, PROOF_ANNOTATION};
use rmi::{Daemon, Error, SharedSecret, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{serve, uri_port};
use crate::support::LabProxy;

/// The correlation id the raw clients send, so the daemon's answers echo it.
const CORR_ID: [u8; 16] = *b"attacker corr id";

/// A first CONNECT to `object` with a SPAKE2 message made from `guess` (an attacker does not
/// know the secret), and the client half that made it.
pub(super) fn attacker_connect(object: &str, guess: &str) -> (Message, ClientHandshake) {
    let mut connect = plain_connect(object);
    let half = ClientHandshake::start(&SharedSecret::new(guess), &mut connect);
    (connect, half)
}

/// A CONNECT to `object`, bincode, with a correlation id, and no annotation.
pub(super) fn plain_connect(object: &str) -> Message {
    let ser = rmi::Serializer::Bincode;
    let request = ConnectRequest {
        handshake: "hello".into(),
        object: object.into(),
    };
    let mut connect = Message::new(
        MessageType::Connect,
        ser.id(),
        0,
        0,
        ser.encode(&request).unwrap(),
    );
    connect.corr_id = CORR_ID;
    connect.flags |= frame::FLAGS_CORR_ID;
    connect
}

/// Reads one whole message: its bytes as received, and the message. `None` at the end of the
/// stream.
pub(super) async fn read_message(s: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, Message)> {
    let mut raw = vec![0u8; HEADER_SIZE];
    s.read_exact(&mut raw).await.ok()?;
    let rest = u32::from_be_bytes(raw[12..16].try_into().unwrap()) as usize
        + u32::from_be_bytes(raw[16..20].try_into().unwrap()) as usize;
    raw.resize(HEADER_SIZE + rest, 0);
    s.read_exact(&mut raw[HEADER_SIZE..]).await.ok()?;
    let header = frame::check(&raw, usize::MAX).unwrap();
    let msg = Message::parse(&mut bytes::BytesMut::from(&raw[..]), &header).unwrap();
    Some((raw, msg))
}

/// A proxy with the shared secret connecting once to a (fake) daemon on `port`; its error.
async fn connect_with_the_secret(port: u16) -> Error {
    LabProxy::builder(Uri::tcp("lab", "127.0.0.1", port))
        .unwrap()
        .shared_secret(SharedSecret::new("correct horse battery staple"))
        .reconnect_attempts(0)
        .connect::<LabProxy>()
        .await
        .unwrap_err()
}

/// Everything the peer sends until it closes (at most 10 s).
async fn rest_of_stream(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the peer never closed the connection");
    rest
}

/// `raw` with the values of the SPAKE2 message and the key confirmation zeroed: what is left
/// of an answer once its random parts are masked.
fn masked(raw: &[u8], msg: &Message) -> Vec<u8> {
    let mut m = msg.clone();
    for (id, value) in m.annotations.iter_mut() {
        if *id == PAKE_ANNOTATION || *id == PROOF_ANNOTATION {
            *value = vec![0u8; value.len()].into();
        }
    }
    assert_eq!(
        &msg.to_bytes()[..],
        raw,
        "the answer re-encodes to its own bytes"
    );
    m.to_bytes().to_vec()
}

#[tokio::test]
async fn before_the_proof_known_and_unknown_object_ids_get_the_same_answer() {
    let secret = SharedSecret::new("hunter2");
    let (daemon, uri) = serve(Daemon::builder().shared_secret(secret.clone()), "127.0.0.1").await;
    let port = uri_port(&uri);

    // The first answer, for a registered and an unregistered id, from a client with a guess
    // and from one with the secret.
    let mut answers = Vec::new();
    for (object, guess) in [
        ("lab", "a guess"),
        ("no.such.object", "a guess"),
        ("lab", "hunter2"),
        ("no.such.object", "hunter2"),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (connect, half) = attacker_connect(object, guess);
        s.write_all(&connect.to_bytes()).await.unwrap();
        let (raw, offer) = read_message(&mut s).await.expect("an answer");
        assert_eq!(offer.msg_type, MessageType::ConnectOk, "{object}");
        assert!(offer.payload.is_empty(), "metadata before the proof");
        let ids: Vec<_> = offer.annotations.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [PAKE_ANNOTATION, PROOF_ANNOTATION]);
        answers.push(masked(&raw, &offer));
        // Only the one with the secret can check the daemon's confirmation.
        let confirmed = half.confirm(&connect, &offer);
        assert_eq!(confirmed.is_ok(), guess == "hunter2", "{object} {guess}");
    }
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer, &answers[0],
            "answer {i} differs beyond its random fields"
        );
    }

    // Without a SPAKE2 message: the same refusal for both ids.
    let mut refusals = Vec::new();
    for object in ["lab", "no.such.object"] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&plain_connect(object).to_bytes())
            .await
            .unwrap();
        let (raw, fail) = read_message(&mut s).await.expect("an answer");
        assert_eq!(fail.msg_type, MessageType::ConnectFail);
        let reason: String = rmi::Serializer::Bincode
            .decode(&fail.payload, &Default::default())
            .unwrap();
        assert_eq!(reason, "the daemon requires the shared secret");
        refusals.push(raw);
    }
    assert_eq!(refusals[0], refusals[1]);

    // After the proof the answers differ, signed: the object is looked up only then.
    let err = LabProxy::builder(Uri::tcp("no.such.object", "127.0.0.1", port))
        .unwrap()
        .shared_secret(secret.clone())
        .reconnect_attempts(0)
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownObject(_)), "{err}");
    let lab: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .shared_secret(secret)
        .connect()
        .await
        .unwrap();
    assert_eq!(lab.echo(1, 2, "in".into()).await.unwrap().2, "in");
    daemon.shutdown();
}

/// What a fake daemon answers to the client's first CONNECT.
#[derive(Debug, Clone, Copy)]
enum FakeDaemon {
    /// Runs the daemon's half of the handshake with a guess of the secret.
    Guessing,
    /// Sends the client's SPAKE2 message back as its own, side byte unchanged.
    Echo,
    /// The same with the side byte relabelled as the daemon's.
    EchoRelabelled,
    /// Any 33 bytes and any confirmation.
    Garbage,
}

#[tokio::test]
async fn a_fake_daemon_gets_nothing_it_could_test_a_guess_against() {
    for fake in [
        FakeDaemon::Guessing,
        FakeDaemon::Echo,
        FakeDaemon::EchoRelabelled,
        FakeDaemon::Garbage,
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let impostor = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let (_, connect) = read_message(&mut s).await.expect("a CONNECT");
            // The client's first message: its request and a SPAKE2 message, no MAC.
            let ids: Vec<_> = connect.annotations.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, [PAKE_ANNOTATION], "{fake:?}");
            let client_msg = connect.annotation(&PAKE_ANNOTATION).unwrap().clone();
            assert_eq!(client_msg.len(), 33);
            let mut offer = Message::new(MessageType::ConnectOk, connect.serializer, 0, 0, vec![]);
            match fake {
                FakeDaemon::Guessing => {
                    ServerHandshake::start(&SharedSecret::new("hunter2"), &connect, &mut offer)
                        .unwrap();
                }
                FakeDaemon::Echo | FakeDaemon::EchoRelabelled | FakeDaemon::Garbage => {
                    let mut echoed = client_msg.to_vec();
                    match fake {
                        FakeDaemon::EchoRelabelled => echoed[0] = b'B',
                        FakeDaemon::Garbage => echoed = vec![b'B'; 33],
                        _ => {}
                    }
                    offer.annotations.push((PAKE_ANNOTATION, echoed.into()));
                    offer
                        .annotations
                        .push((PROOF_ANNOTATION, vec![0u8; 32].into()));
                }
            }
            s.write_all(&offer.to_bytes()).await.unwrap();
            // After a confirmation that does not check out, the client sends nothing: no
            // signed message, nothing derived from the secret.
            rest_of_stream(&mut s).await
        });
        let err = connect_with_the_secret(port).await;
        assert!(
            matches!(&err, Error::ConnectFailed(m) if m.contains("could not prove the shared secret")),
            "{fake:?}: {err}"
        );
        let after = impostor.await.unwrap();
        assert!(
            after.is_empty(),
            "{fake:?}: the client sent {} bytes after an unproven confirmation",
            after.len()
        );
    }
}

#[tokio::test]
async fn reflected_key_exchange_messages_fail() {
    let secret = SharedSecret::new("hunter2");
    let (daemon, uri) = serve(Daemon::builder().shared_secret(secret.clone()), "127.0.0.1").await;
    let port = uri_port(&uri);
    let open = || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap()
    };

    // The daemon's SPAKE2 message from one connection...
    let mut first = open().await;
    let (connect, _) = attacker_connect("lab", "a guess");
    first.write_all(&connect.to_bytes()).await.unwrap();
    let (_, first_offer) = read_message(&mut first).await.unwrap();
    let daemon_msg = first_offer.annotation(&PAKE_ANNOTATION).unwrap().clone();

    // ... sent back as a client's on another: refused by its side byte.
    let mut second = open().await;
    let mut reflected = plain_connect("lab");
    reflected
        .annotations
        .push((PAKE_ANNOTATION, daemon_msg.clone()));
    second.write_all(&reflected.to_bytes()).await.unwrap();
    let (_, fail) = read_message(&mut second).await.unwrap();
    assert_eq!(fail.msg_type, MessageType::ConnectFail);
    let reason: String = rmi::Serializer::Bincode
        .decode(&fail.payload, &Default::default())
        .unwrap();
    assert!(reason.contains("invalid key exchange message"), "{reason}");
    assert!(rest_of_stream(&mut second).await.is_empty());

    // Relabelled as the client's side, it gets an offer like any message (the daemon cannot
    // tell), but the daemon's own confirmation reflected as the client's proof is refused.
    let mut third = open().await;
    let mut relabelled = daemon_msg.to_vec();
    relabelled[0] = b'A';
    let mut reflected = plain_connect("lab");
    reflected
        .annotations
        .push((PAKE_ANNOTATION, relabelled.into()));
    third.write_all(&reflected.to_bytes()).await.unwrap();
    let (_, offer) = read_message(&mut third).await.unwrap();
    assert_eq!(offer.msg_type, MessageType::ConnectOk);
    let mut proof = plain_connect("lab");
    proof.annotations.push((
        MAC_ANNOTATION,
        offer.annotation(&PROOF_ANNOTATION).unwrap().clone(),
    ));
    third.write_all(&proof.to_bytes()).await.unwrap();
    assert!(
        rest_of_stream(&mut third).await.is_empty(),
        "a reflected confirmation was taken as a proof"
    );

    // The first connection's confirmation, on the first connection, as the client's proof.
    let mut proof = plain_connect("lab");
    proof.annotations.push((
        MAC_ANNOTATION,
        first_offer.annotation(&PROOF_ANNOTATION).unwrap().clone(),
    ));
    first.write_all(&proof.to_bytes()).await.unwrap();
    assert!(rest_of_stream(&mut first).await.is_empty());

    let lab: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .shared_secret(secret)
        .connect()
        .await
        .unwrap();
    assert_eq!(lab.calls().await.unwrap(), 0);
    daemon.shutdown();
}

#[tokio::test]
async fn the_validator_runs_only_after_the_client_proved_the_secret() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let secret = SharedSecret::new("hunter2");
    let builder = Daemon::builder().shared_secret(secret.clone()).validator({
        let (calls, seen) = (calls.clone(), seen.clone());
        move |info: &rmi::daemon::HandshakeInfo<'_>| {
            calls.fetch_add(1, Ordering::SeqCst);
            seen.lock()
                .unwrap()
                .push((info.object.to_string(), info.data.to_string()));
            if info.data == "let me in" {
                Ok("welcome".to_string())
            } else {
                Err(format!("{:?} is not the password", info.data))
            }
        }
    });
    let (daemon, uri) = serve(builder, "127.0.0.1").await;
    let port = uri_port(&uri);
    let client = |secret: Option<&str>| {
        let mut b = LabProxy::builder(&uri)
            .unwrap()
            .handshake("let me in")
            .reconnect_attempts(0);
        if let Some(secret) = secret {
            b = b.shared_secret(SharedSecret::new(secret));
        }
        b
    };

    // No secret, a wrong secret, a raw client that skips or forges its proof: the validator
    // is never asked.
    let err = client(None).connect::<LabProxy>().await.unwrap_err();
    assert!(
        err.to_string().contains("requires the shared secret"),
        "{err}"
    );
    let err = client(Some("hunter3"))
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not prove"), "{err}");
    for forge in [false, true] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (connect, _) = attacker_connect("lab", "a guess");
        s.write_all(&connect.to_bytes()).await.unwrap();
        read_message(&mut s).await.unwrap();
        if forge {
            let mut proof = plain_connect("lab");
            proof.annotations.push((MAC_ANNOTATION, vec![0; 32].into()));
            s.write_all(&proof.to_bytes()).await.unwrap();
        } else {
            s.shutdown().await.unwrap();
        }
        assert!(rest_of_stream(&mut s).await.is_empty());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "validator ran before the proof"
    );

    // With the secret: the validator sees the signed request, and its refusal comes signed.
    let lab: LabProxy = client(Some("hunter2")).connect().await.unwrap();
    assert_eq!(lab.echo(0, 0, "ok".into()).await.unwrap().2, "ok");
    let err = client(Some("hunter2"))
        .handshake("open sesame")
        .connect::<LabProxy>()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ConnectFailed(m) if m.contains("is not the password")),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("lab".to_string(), "let me in".to_string()),
            ("lab".to_string(), "open sesame".to_string())
        ]
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_refusal_before_the_proof_is_reported_as_the_daemons_refusal() {
    // A daemon that refuses the CONNECT outright (a CONNECTFAIL with its reason, as Pyro's do
    // for a serializer they lack) is not answering the key exchange: the client reports the
    // daemon's reason, not a failed proof, and sends nothing more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refuser = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (_, connect) = read_message(&mut s).await.expect("a CONNECT");
        let reason = rmi::Serializer::Bincode
            .encode("we do not speak this here")
            .unwrap();
        let fail = Message::new(MessageType::ConnectFail, connect.serializer, 0, 0, reason);
        s.write_all(&fail.to_bytes()).await.unwrap();
        rest_of_stream(&mut s).await
    });
    let err = connect_with_the_secret(port).await;
    assert!(
        err.to_string().contains("we do not speak this here"),
        "the daemon's reason is the error: {err}"
    );
    assert!(
        refuser.await.unwrap().is_empty(),
        "nothing sent after the refusal"
    );
}

/// Guesses at the secret count from the daemon's offer on, not from the connection's end: an
/// address that opens 60 connections at once, each with its own guess, and keeps them open
/// (each offer lets it check its guess offline, without ever sending a proof) gets 30 offers;
/// the other 30 wait. Once the 30 end unproved, the waiting ones are refused, and so is the
/// address for the rest of the minute; another address with the right secret is served
/// meanwhile. (Before, a failure counted only when its connection ended: all 60 got an offer,
/// and up to `max_connections` guesses a minute could be checked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_held_open_at_once_count_against_the_limit() {
    let secret = SharedSecret::new("correct horse battery staple");
    let (daemon, uri) = serve(Daemon::builder().shared_secret(secret.clone()), "127.0.0.1").await;
    let port = uri_port(&uri);
    // The attacker's connections come from 127.0.0.2.
    let mut open = tokio::task::JoinSet::new();
    for i in 0..60 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let (connect, _half) = attacker_connect("lab", &format!("guess {i}"));
        s.write_all(&connect.to_bytes()).await.unwrap();
        open.spawn(async move {
            // (3 s: thirty SPAKE2 offers on a loaded machine, in a debug build, take time.)
            let answer = tokio::time::timeout(Duration::from_secs(3), read_message(&mut s)).await;
            (s, answer.map(|m| m.map(|(_, m)| m.msg_type)))
        });
    }
    let (mut offered, mut waiting) = (Vec::new(), Vec::new());
    while let Some(done) = open.join_next().await {
        match done.unwrap() {
            (s, Ok(Some(MessageType::ConnectOk))) => offered.push(s),
            (s, Err(_)) => waiting.push(s),
            (_, Ok(other)) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        offered.len(),
        30,
        "offers to one address with 60 handshakes open"
    );
    assert_eq!(waiting.len(), 30);

    // Another address is not held up by this one's.
    let honest: LabProxy = LabProxy::builder(&uri)
        .unwrap()
        .shared_secret(secret.clone())
        .connect()
        .await
        .expect("another address with the right secret");
    honest.calls().await.unwrap();

    // The 30 offered end unproved (closed by the daemon at the handshake timeout in real life;
    // here by the attacker): the waiting ones are refused by name.
    drop(offered);
    for mut s in waiting {
        let (_, msg) = tokio::time::timeout(Duration::from_secs(10), read_message(&mut s))
            .await
            .expect("a waiting handshake was answered once the others ended")
            .expect("an answer");
        assert_eq!(msg.msg_type, MessageType::ConnectFail);
        let reason = String::from_utf8_lossy(&msg.payload).into_owned();
        assert!(
            reason.contains("too many failed authentications"),
            "{reason}"
        );
    }
    daemon.shutdown();
}
