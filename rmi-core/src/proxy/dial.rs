//! Dialing: resolve a logical URI, connect (TLS if configured), handshake (detecting a Pyro4
//! daemon by its answer, and dialing it again in protocol 48), and redial with jittered
//! exponential backoff when the connection is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::connection::{Connection, FirstCall, Opened};
use super::Proxy;
use crate::error::Error;
use crate::protocol::codec::Serializer;
use crate::protocol::frame::Protocol;
use crate::transport;
use crate::uri::Uri;

/// First backoff between dials; doubled each time, jittered, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Proxy {
    /// Closes the connection now; the next call dials again.
    pub fn close(&self) {
        if let Some(conn) = self.shared.conn.write().take() {
            conn.shared.close("closed by the proxy".into());
        }
    }

    /// The live connection, dialing (and resolving a logical URI) if there is none. Concurrent
    /// callers wait for one dial; failed dials are retried with jittered exponential backoff.
    /// Every error is one of a call not sent.
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        Ok(self.connection_with(None).await?.0)
    }

    /// Like [`connection`](Self::connection); a dial sends `first` (if it still fits the
    /// connection dialed) right behind the CONNECT and returns its sequence number, for
    /// [`Connection::reply`]. An error that came after `first` was sent is returned as it is
    /// (the call may have run); every other as one of a call not sent.
    pub(super) async fn connection_with(
        &self,
        mut first: Option<Ahead>,
    ) -> Result<(Arc<Connection>, Option<u16>), Error> {
        if let Some(conn) = self.live() {
            return Ok((conn, None));
        }
        let waiting_since = tokio::time::Instant::now();
        let mut last_failure = self.shared.dial_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok((conn, None));
        }
        // A dial that ended while we waited failed for us too: do not dial all over again.
        if let Some((_, reason)) = last_failure.as_ref().filter(|(at, _)| *at >= waiting_since) {
            return Err(Error::ConnectionClosed(format!("connecting failed: {reason}")).not_sent());
        }
        let config = &self.shared.config;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let may_have_run = AtomicBool::new(false);
        let (conn, sent) = loop {
            // Only the first dial sends the call ahead; after a failure it goes the usual way.
            match self.dial(first.take(), &may_have_run).await {
                Ok(opened) => break opened,
                // Sent with the CONNECT, perhaps run: the call's own failure, not a dial's.
                Err(e) if may_have_run.load(Ordering::Acquire) => return Err(e),
                // Answers, not outages: another dial would get the same.
                Err(e) if e.is_not_executed() && !matches!(e, Error::NotSent(_)) => {
                    return Err(e.not_sent())
                }
                Err(e) if attempt >= config.reconnect_attempts => {
                    *last_failure = Some((
                        tokio::time::Instant::now(),
                        crate::error::Report(&e).to_string(),
                    ));
                    return Err(e.not_sent());
                }
                Err(e) => {
                    attempt += 1;
                    let wait = jitter(backoff);
                    tracing::debug!(error = %e, attempt, ?wait, uri = %config.uri, "dial failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let conn = Arc::new(conn);
        *self.shared.conn.write() = Some(conn.clone());
        Ok((conn, sent))
    }

    /// Resolves (if logical), dials and performs the handshake, within the connect timeout;
    /// sends `ahead` with the CONNECT if the dial reaches the daemon it was encoded for, in its
    /// protocol (setting `may_have_run` while it may have run).
    async fn dial(
        &self,
        mut ahead: Option<Ahead>,
        may_have_run: &AtomicBool,
    ) -> Result<(Connection, Option<u16>), Error> {
        let config = &self.shared.config;
        // The direct URI a logical one resolved to, to tell the resolver if dialing it failed.
        let resolved: parking_lot::Mutex<Option<Uri>> = parking_lot::Mutex::new(None);
        let fut = async {
            let direct =
                match (&config.uri, &config.resolver) {
                    (Uri::Pyro { .. }, _) => config.uri.clone(),
                    (_, Some(resolver)) => {
                        let direct = resolver.resolve(&config.uri).await?;
                        *resolved.lock() = Some(direct.clone());
                        direct
                    }
                    (uri, None) => return Err(Error::InvalidUri {
                        uri: uri.to_string(),
                        reason:
                            "a PYRONAME:/PYROMETA: uri needs a name-server resolver (connect through the `rmi` crate)"
                                .into(),
                    }),
                };
            let (Some(object), Some(location)) = (direct.object(), direct.location()) else {
                return Err(Error::InvalidUri {
                    uri: direct.to_string(),
                    reason: "resolver returned a logical uri".into(),
                });
            };
            let object = object.to_owned();
            // The configured protocol; else the one the daemon was found to speak; else Pyro5.
            let first = config
                .protocol
                .or(*self.shared.learned.lock())
                .unwrap_or_default();
            let mut protocol = first;
            loop {
                let stream = transport::dial(location, config.connect_timeout).await?;
                #[cfg(feature = "tls")]
                let stream = match &config.tls {
                    Some(tls) => transport::tls_connect(stream, location, tls.clone()).await?,
                    None => stream,
                };
                let first_call = ahead
                    .take()
                    .filter(|a| a.direct == direct && a.protocol == protocol)
                    .map(|a| FirstCall {
                        msg: a.msg,
                        may_have_run,
                    });
                let opened = Connection::open(
                    stream,
                    &object,
                    direct.clone(),
                    config,
                    protocol,
                    first_call,
                );
                match opened.await {
                    Ok(Opened::Ready(conn, sent)) => {
                        if config.protocol.is_none() {
                            *self.shared.learned.lock() = Some(protocol);
                        }
                        return Ok((conn, sent));
                    }
                    // Detected: the daemon answered in the other protocol. Once.
                    Ok(Opened::Speaks(other)) if config.protocol.is_none() && protocol == first => {
                        tracing::debug!(uri = %direct, %other, "the daemon speaks {other}; dialing again in it");
                        protocol = other;
                    }
                    Ok(Opened::Speaks(other)) => {
                        return Err(Error::ConnectFailed(format!(
                            "the daemon at {direct} speaks {other}, not {protocol}{}",
                            if config.protocol.is_some() {
                                " (set by ProxyBuilder::protocol)"
                            } else {
                                ""
                            }
                        )))
                    }
                    Err(e) => {
                        // A daemon found speaking Pyro4 that now drops a Pyro4 CONNECT unanswered
                        // may be a Pyro5 one in its place: the next dial starts from Pyro5 again.
                        if config.protocol.is_none()
                            && protocol != Protocol::Pyro5
                            && e.is_communication()
                        {
                            *self.shared.learned.lock() = None;
                        }
                        return Err(e);
                    }
                }
            }
        };
        let result = tokio::time::timeout(config.connect_timeout, fut)
            .await
            .map_err(|_| Error::Timeout(config.connect_timeout))
            .and_then(|r| r);
        if let (Err(e), Some(resolver)) = (&result, &config.resolver) {
            if let Some(direct) = resolved.lock().take().filter(|_| e.is_communication()) {
                resolver.dial_failed(&config.uri, &direct);
            }
        }
        result
    }

    /// The daemon and protocol a dial would reach, and the serializer to encode a call in
    /// ahead of it (see [`Ahead`]), when they are known before dialing: a `PYRO:` URI with
    /// [`ProxyBuilder::serializer`](super::ProxyBuilder::serializer) set. (A logical URI is
    /// resolved only by the dial.)
    pub(super) fn ahead_wire(&self) -> Option<(&Uri, Serializer, Protocol)> {
        let config = &self.shared.config;
        let serializer = config.early_serializer()?;
        let protocol = config
            .protocol
            .or(*self.shared.learned.lock())
            .unwrap_or_default();
        matches!(config.uri, Uri::Pyro { .. }).then_some((&config.uri, serializer, protocol))
    }

    pub(super) fn live(&self) -> Option<Arc<Connection>> {
        let guard = self.shared.conn.read();
        guard
            .as_ref()
            .filter(|c| {
                // With nothing in flight nobody reads: see whether the daemon closed it.
                c.shared.look();
                !c.shared.is_closed()
            })
            .cloned()
    }
}

/// A call's INVOKE encoded before dialing, for the daemon at `direct` speaking `protocol`: the
/// dial sends it right behind the CONNECT if that is whom it reaches, in that protocol.
pub(super) struct Ahead {
    pub(super) direct: Uri,
    pub(super) protocol: Protocol,
    pub(super) msg: crate::protocol::frame::Message,
}

/// `d` scaled by a random factor in [0.5, 1.5), so many proxies do not redial in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}
