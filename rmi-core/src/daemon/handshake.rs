//! The CONNECT handshake on the daemon's side: the object must exist and the validator must
//! accept; with a shared secret, only after the client has proved it (see [`crate::auth`]).
//!
//! Without a secret this is Pyro's exchange: one CONNECT, one CONNECTOK or CONNECTFAIL. With
//! one, the first CONNECT gets an answer that depends neither on its object nor on the
//! secret's correctness (the daemon's SPAKE2 message and key confirmation, empty payload); the
//! second, signed CONNECT proves the client, and only then are the object looked up and the
//! validator run, their answer signed. A client that fails its proof gets no answer at all.
//!
//! The first CONNECT's header fixes the connection's protocol: a Pyro4 client (protocol 48)
//! is answered as a Pyro4 daemon answers, its metadata only when it asks (META_ON_CONNECT),
//! and a serializer Pyro4 would not accept refused with a CONNECTFAIL in marshal.
//!
//! An rmi proxy's CONNECT offers the serializers it would rather call in (annotation
//! [`SERIALIZER_ANNOTATION`]); the CONNECTOK names the one picked, so the proxy switches to it
//! (bincode) without an extra round trip. Pyro clients offer none and are answered as by Pyro.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::log::{AuthFailures, AuthSource, PeerText};
use super::{reply_to, Inner};
use crate::auth::{ServerHandshake, Session};
use crate::protocol::codec::{
    self, ConnectOkRef, ConnectRequest, HandshakeData, Metadata, Serializer,
};
use crate::protocol::frame::{Message, MessageType, Protocol, FLAGS_META_ON_CONNECT};
use crate::protocol::names::SERIALIZER_ANNOTATION;
use crate::transport::{FrameReader, FrameWriter};

/// A client's TLS certificate (DER).
pub type Certificate = rustls_pki_types::CertificateDer<'static>;

/// What a handshake validator sees of a connecting client.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandshakeInfo<'a> {
    /// The client's address, as [`CallContext::peer`](super::context::CallContext::peer) gives
    /// it (on a Unix socket `unix:PATH uid=U pid=P`: a validator may admit by uid).
    pub peer: &'a str,
    /// The object the client connects to. Empty when it names none: a Pyro4 client without
    /// METADATA, whose connection is then bound to the first object it calls, and the
    /// validator asked again, with that object, before the call runs (a refusal is that
    /// call's error, `SecurityError`, and the connection stays unbound). Such a connection is
    /// thus validated twice, with the same data: a validator that spends single-use tokens
    /// should spend them only when `object` is not empty (at CONNECT it can only check the
    /// data, as Pyro4's own `validateHandshake` does).
    pub object: &'a str,
    /// The client's handshake data (Pyro's `_pyroHandshake`; `"hello"` by default): any value
    /// from a Pyro client (read it with [`HandshakeData::as_str`] or
    /// [`HandshakeData::decode`]; a string compares with `==` to a `&str`), a string from an
    /// rmi proxy.
    pub data: &'a HandshakeData,
    /// The client's TLS certificate, verified against the daemon's client CA (mutual TLS).
    pub peer_certificate: Option<&'a Certificate>,
    /// The connection's number: the same in its calls'
    /// [`CallContext::connection`](super::context::CallContext::connection) and in
    /// [`ClientGone::connection`](super::ClientGone) when it ends, so what the validator
    /// learns of a client can be kept under it.
    pub connection: u64,
}

/// Who is shaking hands: the connection's number, the client's address and TLS certificate.
pub(super) struct Client<'a> {
    pub(super) connection: u64,
    pub(super) peer: &'a str,
    pub(super) certificate: Option<&'a Certificate>,
    /// When the handshake must be done: `handshake_timeout` after the connection was
    /// accepted, a TLS handshake included.
    pub(super) deadline: tokio::time::Instant,
}

/// Decides whether a client may connect (Pyro's `Daemon.validateHandshake`): `Ok` carries the
/// answer sent back in CONNECTOK (any value; a Pyro client reads it as `_pyroValidateHandshake`'s
/// argument), `Err` the reason sent in CONNECTFAIL.
///
/// A closure `Fn(&HandshakeInfo) -> Result<String, String>` is a validator answering a string;
/// wrap one that answers any value in [`answer_any`].
pub trait ValidateHandshake: Send + Sync + 'static {
    /// Accepts or refuses one connection.
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<HandshakeData, String>;
}

impl<F> ValidateHandshake for F
where
    F: Fn(&HandshakeInfo<'_>) -> Result<String, String> + Send + Sync + 'static,
{
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<HandshakeData, String> {
        self(info).map(HandshakeData::from)
    }
}

/// Asks `validator`; a panic in it is a refusal (logged, rate-limited: a client's handshake
/// data may make it panic at will), not the end of the connection's task (nor, at a Pyro4
/// client's first call, of its request loop).
pub(super) fn validate(
    warnings: &super::log::RateLimit,
    validator: &dyn ValidateHandshake,
    info: &HandshakeInfo<'_>,
) -> Result<HandshakeData, String> {
    let asked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| validator.validate(info)));
    asked.unwrap_or_else(|panic| {
        if warnings.allow(|n| tracing::error!(left_out = n, "more calls panicked")) {
            let text = super::call::panic_text(&*panic);
            tracing::error!(peer = %info.peer, panic = %super::log::PeerText(&text), "the handshake validator panicked");
        }
        Err("the daemon's handshake validator failed".into())
    })
}

/// A validator closure whose answer is any value ([`HandshakeData::new`] makes one from any
/// serde value), for [`DaemonBuilder::validator`](super::DaemonBuilder::validator).
pub fn answer_any<F>(validator: F) -> AnswerAny<F>
where
    F: Fn(&HandshakeInfo<'_>) -> Result<HandshakeData, String> + Send + Sync + 'static,
{
    AnswerAny(validator)
}

/// A validator closure answering any value; made by [`answer_any`].
#[derive(Debug, Clone)]
pub struct AnswerAny<F>(F);

impl<F> ValidateHandshake for AnswerAny<F>
where
    F: Fn(&HandshakeInfo<'_>) -> Result<HandshakeData, String> + Send + Sync + 'static,
{
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<HandshakeData, String> {
        (self.0)(info)
    }
}

pub use crate::protocol::MAX_HANDSHAKE_SIZE;

/// What an accepted CONNECT leaves the connection: the object it names and, when it names none
/// (a Pyro4 client without METADATA), the handshake data, for the validator to see again with
/// the object the connection's first call binds it to (see [`Late`](super::connection::Late)).
pub(super) type Accepted = (String, Option<HandshakeData>);

/// Runs the CONNECT handshake, within the daemon's `handshake_timeout` as a whole. Returns what
/// it accepted and, with a shared secret, the authenticated session; or the reply to send
/// (already signed where there is a session) before closing, if any.
pub(super) async fn handshake<R, W>(
    inner: &Inner,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    client: &Client<'_>,
) -> Result<(Accepted, Option<Session>), Option<Message>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Nothing is known of the client yet: its CONNECTs are held to a small bound, on the
    // header and once inflated, so a connection that has proved nothing cannot make the
    // daemon hold `max_message_size` for it until the handshake timeout.
    let full = reader.max_message_size();
    reader.set_max_message_size(full.min(MAX_HANDSHAKE_SIZE));
    let peer = client.peer;
    let exchange = exchange(inner, reader, writer, client);
    let outcome = match tokio::time::timeout_at(client.deadline, exchange).await {
        Ok(done) => done,
        Err(_) => {
            tracing::debug!(%peer, "no handshake within the handshake timeout; closing");
            Err(None)
        }
    };
    reader.set_max_message_size(full);
    outcome
}

async fn exchange<R, W>(
    inner: &Inner,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    client: &Client<'_>,
) -> Result<(Accepted, Option<Session>), Option<Message>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = client.peer;
    // As sent: Pyro4's HMAC covers a compressed CONNECT's bytes before they are inflated.
    let mut req = read_as_sent(reader, peer).await?;
    // The first header chose the protocol; every answer is written in it.
    let protocol = reader.protocol().unwrap_or_default();
    writer.set_protocol(protocol);
    if let Some(key) = &inner.config.hmac_key {
        return with_hmac_key(inner, key, req, protocol, reader, writer, client).await;
    }
    inflate(&mut req, reader, peer)?;
    let Some(secret) = &inner.config.secret else {
        // A Pyro4 client with an HMAC key is refused as a Pyro4 daemon without one refuses it.
        if let Err(reason) = crate::auth::pyro4_check(None, protocol, &req) {
            let ser = accepted_serializer(&req, protocol)?;
            tracing::debug!(%peer, reason, "refusing the connection");
            return Err(fail(&req, ser, reason.into()));
        }
        let (accepted, reply) = check(inner, &req, protocol, client)?;
        writer.write_frame(&reply).await.map_err(|_| None)?;
        return Ok((accepted, None));
    };

    // Before the client's proof: nothing here looks at the request's payload or the objects.
    let ser = accepted_serializer(&req, protocol)?;
    check_type(&req, protocol)?;
    if !crate::auth::ServerHandshake::asked_for(&req) {
        // No key exchange asked for (a Pyro client, a proxy without the secret, a health
        // probe): no guess at the secret, so none counted. (Counted, 30 of them in a minute
        // locked the address out, and the clients with the secret on that host with it.)
        tracing::debug!(%peer, "refusing a client without the shared secret");
        return Err(fail(&req, ser, crate::auth::SECRET_REQUIRED.into()));
    }
    // A guess counts from the offer on (the offer lets the client check its guess by itself),
    // so an address with its room full of handshakes under way waits for one to end.
    let failures = &inner.auth_failures;
    let Some(source) = failures.guess(AuthSource::of(peer)).await else {
        if failures.warnings.allow(|n| {
            tracing::warn!(
                refused = n,
                "more connections refused for failed authentications"
            )
        }) {
            tracing::warn!(%peer, "connection refused: too many failed authentications from this address");
        }
        return Err(fail(
            &req,
            ser,
            format!(
                "too many failed authentications from this address ({} within {:?}); try again later",
                AuthFailures::LIMIT,
                AuthFailures::WINDOW
            ),
        ));
    };
    // From here until the client has proved the secret, the connection counts as a failed
    // guess, however it ends (a wrong proof, a close, the handshake timeout dropping this).
    let guess = Guess {
        failures,
        source,
        peer,
        proved: false,
    };
    let mut offer = reply_to(&req, MessageType::ConnectOk, 0, Vec::new());
    let pending = ServerHandshake::start(secret, &req, &mut offer)
        .map_err(|reason| fail(&req, ser, reason))?;
    writer.write_frame(&offer).await.map_err(|_| None)?;

    // The client's proof: a second CONNECT signed with its session key.
    let proof = read(reader, peer).await?;
    let (mut signer, mut verifier) = pending.finish(&proof).map_err(|e| {
        tracing::debug!(%peer, error = %e, "closing the connection");
        None
    })?;
    guess.proved();
    // (The proof, a CONNECT, reads the same in either protocol; what follows may not.)
    signer.set_protocol(protocol);
    verifier.set_protocol(protocol);
    match check(inner, &proof, protocol, client) {
        Ok((accepted, mut reply)) => {
            signer.sign(&mut reply);
            writer.write_frame(&reply).await.map_err(|_| None)?;
            Ok((accepted, Some((signer, verifier))))
        }
        Err(Some(mut reply)) => {
            signer.sign(&mut reply);
            Err(Some(reply))
        }
        Err(None) => Err(None),
    }
}

/// The handshake with Pyro4's HMAC key: the CONNECT, as sent, must carry the key's MAC, and the
/// answers to a CONNECT that did are signed. A refusal of one that did not goes unsigned
/// (Pyro4's daemon signs it): a MAC over known words would let anyone who can connect guess the
/// key offline. A Pyro4 client with another key then says `hmac key config not symmetric`
/// where Pyro4 would say `message hmac mismatch`; the refusal's own words say which.
async fn with_hmac_key<R, W>(
    inner: &Inner,
    key: &crate::auth::HmacKey,
    mut req: Message,
    protocol: Protocol,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    client: &Client<'_>,
) -> Result<(Accepted, Option<Session>), Option<Message>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = client.peer;
    let (mut signer, verifier) = crate::auth::hmac_session(key, protocol);
    if let Err(reason) = crate::auth::pyro4_check(Some(key), protocol, &req) {
        let ser = accepted_serializer(&req, protocol)?;
        tracing::debug!(%peer, reason, "refusing the connection");
        return Err(fail(&req, ser, reason.into()));
    }
    inflate(&mut req, reader, peer)?;
    let req = &req;
    let signed = |reply: Option<Message>, signer: &mut crate::auth::Signer| {
        reply.map(|mut reply| {
            signer.sign(&mut reply);
            reply
        })
    };
    match check(inner, req, protocol, client) {
        Ok((accepted, mut reply)) => {
            signer.sign(&mut reply);
            writer.write_frame(&reply).await.map_err(|_| None)?;
            Ok((accepted, Some((signer, verifier))))
        }
        Err(reply) => Err(signed(reply, &mut signer)),
    }
}

/// A connection about to get the daemon's half of the SPAKE2 exchange: unless it [`proved`]
/// (`Guess::proved`) the secret, its end counts as a failed authentication of its source.
struct Guess<'a> {
    failures: &'a AuthFailures,
    source: AuthSource,
    peer: &'a str,
    proved: bool,
}

impl Guess<'_> {
    fn proved(mut self) {
        self.proved = true;
    }
}

impl Drop for Guess<'_> {
    fn drop(&mut self) {
        let now = tokio::time::Instant::now();
        let n = self.failures.end(self.source, self.proved, now);
        if self.proved {
            self.failures.proved_by(AuthSource::of(self.peer), now);
            return;
        }
        let peer = self.peer;
        if self
            .failures
            .warnings
            .allow(|left_out| tracing::warn!(left_out, "more failed authentications"))
        {
            tracing::warn!(%peer, failures = n, "the client did not prove the shared secret");
        }
    }
}

/// Reads one handshake message, inflated; `Err(None)` (close) at the end of the stream or on a
/// bad frame.
async fn read<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    peer: &str,
) -> Result<Message, Option<Message>> {
    let mut req = read_as_sent(reader, peer).await?;
    inflate(&mut req, reader, peer)?;
    Ok(req)
}

/// Inflates a compressed handshake message; `Err(None)` (close) when it does not inflate
/// within the reader's bound.
fn inflate<R: AsyncRead + Unpin>(
    req: &mut Message,
    reader: &FrameReader<R>,
    peer: &str,
) -> Result<(), Option<Message>> {
    req.decompress(reader.max_message_size()).map_err(|e| {
        tracing::debug!(%peer, error = %e, "bad handshake message; closing");
        None
    })
}

/// Reads one handshake message as it was sent; `Err(None)` (close) at the end of the stream or
/// on a bad frame.
async fn read_as_sent<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    peer: &str,
) -> Result<Message, Option<Message>> {
    match reader.read_frame().await {
        Ok(Some(req)) => Ok(req),
        Ok(None) => {
            tracing::debug!(%peer, "closed during the handshake");
            Err(None)
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad handshake message; closing");
            Err(None)
        }
    }
}

/// A CONNECTFAIL with `reason`, in the client's serializer.
fn fail(req: &Message, ser: Serializer, reason: String) -> Option<Message> {
    let payload = ser.encode(&reason).unwrap_or_default();
    Some(reply_to(req, MessageType::ConnectFail, 0, payload))
}

/// A CONNECTFAIL before a serializer is agreed on: Pyro4 says it in marshal (every Pyro4
/// client reads it); Pyro5 says it in the client's serializer if rmi knows it, else closes.
fn fail_early(req: &Message, protocol: Protocol, reason: String) -> Option<Message> {
    match (protocol, protocol.serializer(req.serializer)) {
        (Protocol::Pyro4, _) => {
            let (id, payload) = codec::encode_marshal_str(&reason);
            let mut reply = reply_to(req, MessageType::ConnectFail, 0, payload);
            reply.serializer = id;
            Some(reply)
        }
        (Protocol::Pyro5, Some(ser)) => fail(req, ser, reason),
        (Protocol::Pyro5, None) => None,
    }
}

/// The client's serializer, if the daemon accepts it in the connection's protocol (Pyro4's
/// pickle, dill and cloudpickle never are: refused with a CONNECTFAIL, as Pyro4 does).
fn accepted_serializer(req: &Message, protocol: Protocol) -> Result<Serializer, Option<Message>> {
    protocol.serializer(req.serializer).ok_or_else(|| {
        let reason = format!(
            "message used serializer that is not accepted: {}",
            req.serializer
        );
        fail_early(req, protocol, reason)
    })
}

/// Refuses a message that is not a CONNECT (Pyro answers CONNECTFAIL, then closes).
fn check_type(req: &Message, protocol: Protocol) -> Result<(), Option<Message>> {
    if req.msg_type == MessageType::Connect {
        return Ok(());
    }
    let reason = format!(
        "invalid msg type {} received (expected: 1)",
        req.msg_type as u8
    );
    Err(fail_early(req, protocol, reason))
}

/// Checks a CONNECT (the signed one, with a shared secret): the object must exist and the
/// validator accept. Returns what it accepted and the CONNECTOK, or the reply to send before
/// closing.
fn check(
    inner: &Inner,
    req: &Message,
    protocol: Protocol,
    client: &Client<'_>,
) -> Result<(Accepted, Message), Option<Message>> {
    // A message that is not CONNECT: Pyro answers CONNECTFAIL when it can say it in a
    // serializer the client knows, then closes. An unknown serializer: Pyro5 closes, Pyro4
    // refuses in marshal.
    check_type(req, protocol)?;
    let ser = accepted_serializer(req, protocol)?;
    let connect: ConnectRequest = ser
        .decode(&req.payload, &inner.config.limits)
        .map_err(|e| fail(req, ser, format!("invalid data: {e}")))?;
    // The metadata is of the object the client names. A Pyro4 client without METADATA names
    // none and asks for none: its connection is to the daemon, for any of its objects.
    let with_meta = protocol.meta_on_connect(req);
    let entry = if with_meta || !connect.object.is_empty() {
        let Some(object) = inner.object(&connect.object) else {
            // The id echoed is the client's own, cut short like any peer text in the log.
            let object = PeerText(&connect.object).to_string();
            return Err(fail(req, ser, format!("unknown object {object:?}")));
        };
        Some(object)
    } else {
        None
    };
    let no_meta = Metadata::default();
    // Encoded from the registration's own (a copy is an allocation per method name).
    let meta = entry.as_ref().map_or(&no_meta, |entry| &entry.meta);
    // No object named: the validator sees this data again at the first call (with a validator).
    let late = (connect.object.is_empty() && inner.config.validator.is_some())
        .then(|| connect.handshake.clone());
    let answer = match &inner.config.validator {
        Some(validator) => {
            let info = HandshakeInfo {
                connection: client.connection,
                peer: client.peer,
                object: &connect.object,
                data: &connect.handshake,
                peer_certificate: client.certificate,
            };
            validate(&inner.panic_warnings, &**validator, &info)
                .map_err(|reason| fail(req, ser, reason))?
        }
        // Pyro's daemon answers "hello" whatever the client's data, when not told otherwise.
        None => HandshakeData::from("hello"),
    };
    // Pyro4 answers without metadata when not asked: the validator's answer alone.
    let encoded = if with_meta {
        ser.encode_in(
            protocol,
            &ConnectOkRef {
                handshake: &answer,
                meta,
            },
        )
    } else {
        ser.encode_in(protocol, &answer)
    };
    let payload = encoded.map_err(|e| fail(req, ser, e.to_string()))?;
    let flags = req.flags & FLAGS_META_ON_CONNECT;
    let mut reply = reply_to(req, MessageType::ConnectOk, flags, payload);
    if let Some(id) = pick_serializer(req, protocol) {
        reply
            .annotations
            .push((SERIALIZER_ANNOTATION, Bytes::copy_from_slice(&[id])));
    }
    Ok(((connect.object, late), reply))
}

/// The serializer the daemon picks for an rmi proxy's calls: the first of those its CONNECT
/// offers (annotation [`SERIALIZER_ANNOTATION`], one id a byte, best first) that the daemon
/// speaks in the connection's protocol. `None` when it offered none (a Pyro client) or none fits:
/// the CONNECTOK then says nothing and the proxy keeps its CONNECT's serializer.
fn pick_serializer(req: &Message, protocol: Protocol) -> Option<u8> {
    req.annotation(&SERIALIZER_ANNOTATION)?
        .iter()
        .copied()
        .find(|&id| protocol.serializer(id).is_some())
}
