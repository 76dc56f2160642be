//! The CONNECT handshake on the daemon's side: the object must exist, the validator must
//! accept, and with a shared secret the client's nonce must be there (see [`crate::auth`]).

use super::{reply_to, Inner};
use crate::protocol::codec::{ConnectOk, ConnectRequest, Serializer};
use crate::protocol::frame::{Message, MessageType};

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

/// Checks a CONNECT; returns the object id, the CONNECTOK and the authenticated session, or the
/// reply to send before closing.
pub(super) fn handshake(
    inner: &Inner,
    req: &Message,
    peer: &str,
    peer_certificate: Option<&Certificate>,
) -> Result<(String, Message, Option<crate::auth::Session>), Option<Message>> {
    // An unknown serializer or a message that is not CONNECT: Pyro closes (after a CONNECTFAIL
    // for the latter, when it can say it in a serializer the client knows).
    let ser = Serializer::from_id(req.serializer).ok_or(None)?;
    let fail = |reason: String| {
        let payload = ser.encode(&reason).unwrap_or_default();
        Some(reply_to(req, MessageType::ConnectFail, 0, payload))
    };
    if req.msg_type != MessageType::Connect {
        return Err(fail(format!(
            "invalid msg type {} received (expected: 1)",
            req.msg_type as u8
        )));
    }
    let connect: ConnectRequest = ser
        .decode(&req.payload, &inner.config.limits)
        .map_err(|e| fail(format!("invalid data: {e}")))?;
    let Some(object) = inner.object(&connect.object) else {
        return Err(fail(format!("unknown object {:?}", connect.object)));
    };
    let answer = match &inner.config.validator {
        Some(validator) => {
            let info = HandshakeInfo {
                peer,
                object: &connect.object,
                data: &connect.handshake,
                peer_certificate,
            };
            validator.validate(&info).map_err(fail)?
        }
        None => connect.handshake,
    };
    let ok = ConnectOk {
        handshake: answer,
        meta: object.meta.clone(),
    };
    let payload = ser.encode(&ok).map_err(|e| fail(e.to_string()))?;
    let mut reply = reply_to(req, MessageType::ConnectOk, 0, payload);
    let session = match &inner.config.secret {
        None => None,
        Some(secret) => Some(crate::auth::accept(secret, req, &mut reply).map_err(fail)?),
    };
    Ok((connect.object, reply, session))
}
