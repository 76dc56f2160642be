//! The CONNECT handshake on the daemon's side: the object must exist and the validator must
//! accept; with a shared secret, only after the client has proved it (see [`crate::auth`]).
//!
//! Without a secret this is Pyro's exchange: one CONNECT, one CONNECTOK or CONNECTFAIL. With
//! one, the first CONNECT gets an answer that depends neither on its object nor on the
//! secret's correctness (the daemon's SPAKE2 message and key confirmation, empty payload); the
//! second, signed CONNECT proves the client, and only then are the object looked up and the
//! validator run, their answer signed. A client that fails its proof gets no answer at all.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{reply_to, Inner};
use crate::auth::{ServerHandshake, Session};
use crate::protocol::codec::{ConnectOk, ConnectRequest, Serializer};
use crate::protocol::frame::{Message, MessageType};
use crate::transport::{FrameReader, FrameWriter};

/// A client's TLS certificate (DER).
pub type Certificate = rustls_pki_types::CertificateDer<'static>;

/// What a handshake validator sees of a connecting client.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandshakeInfo<'a> {
    /// The client's address.
    pub peer: &'a str,
    /// The object the client connects to.
    pub object: &'a str,
    /// The client's handshake data (Pyro's `_pyroHandshake`; `"hello"` by default).
    pub data: &'a str,
    /// The client's TLS certificate, verified against the daemon's client CA (mutual TLS).
    pub peer_certificate: Option<&'a Certificate>,
}

/// Decides whether a client may connect (Pyro's `Daemon.validateHandshake`): `Ok` carries the
/// answer sent back in CONNECTOK, `Err` the reason sent in CONNECTFAIL.
pub trait ValidateHandshake: Send + Sync + 'static {
    /// Accepts or refuses one connection.
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<String, String>;
}

impl<F> ValidateHandshake for F
where
    F: Fn(&HandshakeInfo<'_>) -> Result<String, String> + Send + Sync + 'static,
{
    fn validate(&self, info: &HandshakeInfo<'_>) -> Result<String, String> {
        self(info)
    }
}

/// Runs the CONNECT handshake, within the daemon's `handshake_timeout` as a whole. Returns the
/// connected object's id and, with a shared secret, the authenticated session; or the reply
/// to send (already signed where there is a session) before closing, if any.
pub(super) async fn handshake<R, W>(
    inner: &Inner,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    peer: &str,
    peer_certificate: Option<&Certificate>,
) -> Result<(String, Option<Session>), Option<Message>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = exchange(inner, reader, writer, peer, peer_certificate);
    match tokio::time::timeout(inner.config.handshake_timeout, exchange).await {
        Ok(done) => done,
        Err(_) => {
            tracing::debug!(%peer, "no handshake within the handshake timeout; closing");
            Err(None)
        }
    }
}

async fn exchange<R, W>(
    inner: &Inner,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    peer: &str,
    peer_certificate: Option<&Certificate>,
) -> Result<(String, Option<Session>), Option<Message>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let req = read(reader, peer).await?;
    let Some(secret) = &inner.config.secret else {
        let (id, reply) = check(inner, &req, peer, peer_certificate)?;
        writer.write_frame(&reply).await.map_err(|_| None)?;
        return Ok((id, None));
    };

    // Before the client's proof: nothing here looks at the request's payload or the objects.
    let ser = Serializer::from_id(req.serializer).ok_or(None)?;
    check_type(&req, ser)?;
    let mut offer = reply_to(&req, MessageType::ConnectOk, 0, Vec::new());
    let pending = ServerHandshake::start(secret, &req, &mut offer)
        .map_err(|reason| fail(&req, ser, reason))?;
    writer.write_frame(&offer).await.map_err(|_| None)?;

    // The client's proof: a second CONNECT signed with its session key.
    let proof = read(reader, peer).await?;
    let (mut signer, verifier) = pending.finish(&proof).map_err(|e| {
        tracing::debug!(%peer, error = %e, "closing the connection");
        None
    })?;
    match check(inner, &proof, peer, peer_certificate) {
        Ok((id, mut reply)) => {
            signer.sign(&mut reply);
            writer.write_frame(&reply).await.map_err(|_| None)?;
            Ok((id, Some((signer, verifier))))
        }
        Err(Some(mut reply)) => {
            signer.sign(&mut reply);
            Err(Some(reply))
        }
        Err(None) => Err(None),
    }
}

/// Reads one handshake message; `Err(None)` (close) at the end of the stream or on a bad frame.
async fn read<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    peer: &str,
) -> Result<Message, Option<Message>> {
    match reader.read_frame().await {
        Ok(Some(mut req)) => match req.decompress(reader.max_message_size()) {
            Ok(()) => Ok(req),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "bad handshake message; closing");
                Err(None)
            }
        },
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

/// Refuses a message that is not a CONNECT (Pyro answers CONNECTFAIL, then closes).
fn check_type(req: &Message, ser: Serializer) -> Result<(), Option<Message>> {
    if req.msg_type == MessageType::Connect {
        return Ok(());
    }
    Err(fail(
        req,
        ser,
        format!(
            "invalid msg type {} received (expected: 1)",
            req.msg_type as u8
        ),
    ))
}

/// Checks a CONNECT (the signed one, with a shared secret): the object must exist and the
/// validator accept. Returns the object id and the CONNECTOK, or the reply to send before
/// closing.
fn check(
    inner: &Inner,
    req: &Message,
    peer: &str,
    peer_certificate: Option<&Certificate>,
) -> Result<(String, Message), Option<Message>> {
    // An unknown serializer or a message that is not CONNECT: Pyro closes (after a CONNECTFAIL
    // for the latter, when it can say it in a serializer the client knows).
    let ser = Serializer::from_id(req.serializer).ok_or(None)?;
    check_type(req, ser)?;
    let connect: ConnectRequest = ser
        .decode(&req.payload, &inner.config.limits)
        .map_err(|e| fail(req, ser, format!("invalid data: {e}")))?;
    let Some(object) = inner.object(&connect.object) else {
        return Err(fail(
            req,
            ser,
            format!("unknown object {:?}", connect.object),
        ));
    };
    let answer = match &inner.config.validator {
        Some(validator) => {
            let info = HandshakeInfo {
                peer,
                object: &connect.object,
                data: &connect.handshake,
                peer_certificate,
            };
            validator
                .validate(&info)
                .map_err(|reason| fail(req, ser, reason))?
        }
        None => connect.handshake,
    };
    let ok = ConnectOk {
        handshake: answer,
        meta: object.meta.clone(),
    };
    let payload = ser.encode(&ok).map_err(|e| fail(req, ser, e.to_string()))?;
    Ok((
        connect.object,
        reply_to(req, MessageType::ConnectOk, 0, payload),
    ))
}
