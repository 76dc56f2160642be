//! Dialing: resolve a logical URI, connect (TLS if configured), handshake (detecting a Pyro4
//! daemon by its answer, and dialing it again in protocol 48), and redial with jittered
//! exponential backoff when the connection is gone.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::connection::{Connection, Opened};
use super::Proxy;
use crate::error::Error;
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
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let waiting_since = tokio::time::Instant::now();
        let mut last_failure = self.shared.dial_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        // A dial that ended while we waited failed for us too: do not dial all over again.
        if let Some((_, reason)) = last_failure.as_ref().filter(|(at, _)| *at >= waiting_since) {
            return Err(Error::ConnectionClosed(format!("connecting failed: {reason}")).not_sent());
        }
        let config = &self.shared.config;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let conn = loop {
            match self.dial().await {
                Ok(conn) => break conn,
                // Answers, not outages: another dial would get the same.
                Err(e) if e.is_not_executed() && !matches!(e, Error::NotSent(_)) => return Err(e),
                Err(e) if attempt >= config.reconnect_attempts => {
                    *last_failure = Some((
                        tokio::time::Instant::now(),
                        crate::error::Report(&e).to_string(),
                    ));
                    return Err(e);
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
        Ok(conn)
    }

    /// Resolves (if logical), dials and performs the handshake, within the connect timeout.
    async fn dial(&self) -> Result<Connection, Error> {
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
                match Connection::open(stream, &object, direct.clone(), config, protocol).await {
                    Ok(Opened::Ready(conn)) => {
                        if config.protocol.is_none() {
                            *self.shared.learned.lock() = Some(protocol);
                        }
                        return Ok(conn);
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

/// `d` scaled by a random factor in [0.5, 1.5), so many proxies do not redial in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}
