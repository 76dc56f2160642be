//! Finding the name server: explicit address, then localhost, then a UDP `GET_NSURI` broadcast.
//!
//! The default broadcast address is the loopback one (127.255.255.255): reaching a LAN is
//! something a user configures, never a default. Environment variables are read only by
//! [`NsLocator::from_env`].

use std::time::Duration;

use rmi_core::{Error, Uri};

use crate::broadcast::{self, DEFAULT_BROADCAST_ADDR, DEFAULT_BROADCAST_PORT};
use crate::NameServerProxy;

/// Pyro's names for the `RMI_NS_*` variables [`NsLocator::from_env`] reads: each is read
/// where its `RMI_NS_*` one is unset (Pyro's `NS_BCHOST` is not `RMI_NS_BCADDR`: it is where
/// Pyro's responder binds, not where a client broadcasts; Pyro's `BROADCAST_ADDRS` is, and is
/// read too: the first address of its list, `<broadcast>` meaning 255.255.255.255).
pub const PYRO_ENV: &[(&str, &str)] = &[
    ("RMI_NS_HOST", "PYRO_NS_HOST"),
    ("RMI_NS_PORT", "PYRO_NS_PORT"),
    ("RMI_NS_BCPORT", "PYRO_NS_BCPORT"),
];

/// How to find a name server; the defaults follow Pyro.
#[derive(Debug, Clone)]
pub struct NsLocator {
    host: Option<String>,
    port: u16,
    broadcast: Option<(String, u16)>,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rmi_core::rustls::ClientConfig>>,
    secret: Option<rmi_core::SharedSecret>,
    hmac_key: Option<rmi_core::HmacKey>,
}

impl Default for NsLocator {
    fn default() -> Self {
        NsLocator {
            host: None,
            port: rmi_core::uri::DEFAULT_NS_PORT,
            broadcast: Some((DEFAULT_BROADCAST_ADDR.into(), DEFAULT_BROADCAST_PORT)),
            connect_timeout: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls: None,
            secret: None,
            hmac_key: None,
        }
    }
}

impl NsLocator {
    /// The defaults: no explicit host, port 9090, broadcast to 127.255.255.255:9091.
    pub fn new() -> Self {
        NsLocator::default()
    }

    /// The defaults overridden by `RMI_NS_HOST`, `RMI_NS_PORT`, `RMI_NS_BCADDR` and
    /// `RMI_NS_BCPORT` where set (an empty one counts as unset, as the tools take it). Where
    /// one of those is unset, Pyro's own name for it is read instead ([`PYRO_ENV`]:
    /// `PYRO_NS_HOST`, `PYRO_NS_PORT`, `PYRO_NS_BCPORT`, as Pyro's `locate_ns()` reads its
    /// configuration). Only
    /// binaries and callers who ask read the environment.
    pub fn from_env() -> Result<Self, Error> {
        let mut l = NsLocator::new();
        let set = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        // The variable read for `var`: itself, or Pyro's name for it where it is unset.
        let read = |var: &'static str| -> Option<(&'static str, String)> {
            let pyro = PYRO_ENV
                .iter()
                .find(|(ours, _)| *ours == var)
                .map_or(var, |(_, pyro)| *pyro);
            set(var)
                .map(|v| (var, v))
                .or_else(|| set(pyro).map(|v| (pyro, v)))
        };
        let port = |var: &'static str| -> Result<Option<u16>, Error> {
            match read(var) {
                Some((var, v)) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Resolve(format!("{var}={v:?} is not a port number"))),
                None => Ok(None),
            }
        };
        if let Some((_, host)) = read("RMI_NS_HOST") {
            l.host = Some(host);
        }
        if let Some(p) = port("RMI_NS_PORT")? {
            l.port = p;
        }
        if let Some((addr, bport)) = &mut l.broadcast {
            // (Pyro's list, whose default is `<broadcast>, 0.0.0.0`: its first address.)
            let pyros = || {
                let first = set("PYRO_BROADCAST_ADDRS")?
                    .split(',')
                    .next()?
                    .trim()
                    .to_owned();
                match first.as_str() {
                    "" => None,
                    "<broadcast>" => Some("255.255.255.255".to_owned()),
                    _ => Some(first),
                }
            };
            if let Some(a) = set("RMI_NS_BCADDR").or_else(pyros) {
                *addr = a;
            }
            if let Some(p) = port("RMI_NS_BCPORT")? {
                *bport = p;
            }
        }
        Ok(l)
    }

    /// Connect to this host only (no localhost try, no broadcast). `./u:PATH` is the name
    /// server's Unix domain socket (`rmi-ns -u PATH`), as Pyro's `locate_ns` takes it, here and
    /// in `RMI_NS_HOST`/`PYRO_NS_HOST`; the port is not used then.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The name server's TCP port (default 9090).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Where to broadcast `GET_NSURI` (default 127.255.255.255:9091).
    pub fn broadcast(mut self, addr: impl Into<String>, port: u16) -> Self {
        self.broadcast = Some((addr.into(), port));
        self
    }

    /// Do not broadcast.
    pub fn no_broadcast(mut self) -> Self {
        self.broadcast = None;
        self
    }

    /// Talk to the name server over TLS with this client configuration.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<rmi_core::rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Authenticate to the name server with a shared secret.
    pub fn shared_secret(mut self, secret: rmi_core::SharedSecret) -> Self {
        self.secret = Some(secret);
        self.hmac_key = None;
        self
    }

    /// Sign every message to the name server with Pyro4's HMAC key, as Pyro4's
    /// `locateNS(hmac_key=…)` does, for a name server that has one (`python -m Pyro4.naming
    /// -k`, `rmi-ns --hmac-key`). Replaces a [`shared_secret`](Self::shared_secret).
    pub fn hmac_key(mut self, key: rmi_core::HmacKey) -> Self {
        self.hmac_key = Some(key);
        self.secret = None;
        self
    }

    /// Deadline for each try of an address, the connection and its handshake (default 5 s):
    /// a host that drops what is sent to it, or a name server that hangs, costs this much. The
    /// broadcast is one try too: its three rounds of 700 ms (Pyro's) end at this deadline when
    /// it is shorter.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline for each connection attempt.
    pub fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Finds the name server and returns a connected proxy to it.
    pub async fn locate(&self) -> Result<NameServerProxy, Error> {
        if let Some(host) = &self.host {
            let uri = match host.strip_prefix("./u:") {
                Some(path) => Uri::Pyro {
                    object: crate::NAME_SERVER_OBJECT_ID.into(),
                    location: rmi_core::Location::Unix(path.to_owned()),
                },
                None => Uri::tcp(crate::NAME_SERVER_OBJECT_ID, host.clone(), self.port),
            };
            return self.connect(uri).await;
        }
        // Under TLS, `localhost` first, the name a local certificate names (both loopbacks
        // are dialed; a certificate that does not name it ends that try at once); then the
        // address, which a certificate may name instead.
        let mut tried = Vec::new();
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            let local = Uri::tcp(crate::NAME_SERVER_OBJECT_ID, "localhost", self.port);
            match self.connect(local).await {
                Ok(ns) => return Ok(ns),
                // The TLS handshake went through and the name server here refused the
                // handshake (a wrong secret, say): 127.0.0.1 is the same one, and each refusal
                // of a secret counts against this host's address.
                Err(e @ Error::ConnectFailed(_)) => return Err(e),
                Err(e) => tried.push(("localhost", e)),
            }
        }
        let local = Uri::tcp(crate::NAME_SERVER_OBJECT_ID, "127.0.0.1", self.port);
        match self.connect(local).await {
            Ok(ns) => return Ok(ns),
            Err(e) => tried.push(("127.0.0.1", e)),
        }
        if let Some((addr, port)) = &self.broadcast {
            if let Some(uri) = broadcast::lookup(addr, *port, self.connect_timeout).await? {
                // The name server that refused the handshake on this host is not asked again:
                // each refusal of a secret counts against this host's address, and past the
                // daemon's limit every client here is refused for a while.
                if let Some(refused) = refused_here(&mut tried, &uri, self.port) {
                    return Err(refused);
                }
                return self.connect(uri).await;
            }
        }
        // A name server here answered and refused this client (a wrong secret, say): that is
        // what to say, not "not found". A caller that took it for "not up yet" and asked again
        // at each request would spend this host's guesses at the secret, and past the
        // daemon's limit every client here, rightly keyed ones too, is refused for a while.
        if let Some(at) = tried
            .iter()
            .position(|(_, e)| matches!(e, Error::ConnectFailed(_)))
        {
            return Err(tried.swap_remove(at).1);
        }
        let nothing = tried
            .iter()
            .map(|(host, e)| format!("{host}:{} ({})", self.port, rmi_core::error::Report(e)))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(Error::Resolve(format!(
            "name server not found: nothing on {nothing} and no answer to a GET_NSURI broadcast{}; is rmi-ns running?",
            self.broadcast.as_ref().map(|(a, p)| format!(" on {a}:{p}")).unwrap_or_else(|| " (disabled)".into())
        )))
    }

    async fn connect(&self, uri: Uri) -> Result<NameServerProxy, Error> {
        let unix = matches!(uri.location(), Some(rmi_core::Location::Unix(_)));
        let mut builder = rmi_core::Proxy::builder(uri).connect_timeout(self.connect_timeout);
        // (TLS runs over TCP only: a name server on a Unix socket is dialed plainly, as
        // `rmi-nsc -u` dials it, its file's permissions guarding it.)
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref().filter(|_| !unix) {
            builder = builder.tls(tls.clone());
        }
        if let Some(secret) = &self.secret {
            builder = builder.shared_secret(secret.clone());
        }
        if let Some(key) = &self.hmac_key {
            builder = builder.hmac_key(key.clone());
        }
        // The whole try, however many dial attempts the proxy makes within it.
        let proxy = tokio::time::timeout(self.connect_timeout, builder.connect())
            .await
            .map_err(|_| Error::Timeout(self.connect_timeout))??;
        Ok(NameServerProxy::from_proxy(proxy))
    }
}

/// Finds a name server with the default [`NsLocator`].
pub async fn locate_ns() -> Result<NameServerProxy, Error> {
    NsLocator::new().locate().await
}

/// The refusal of the handshake (`ConnectFailed`) a name server on this host gave, if the
/// broadcast's answer `found` is that same name server: a loopback address and `port`.
fn refused_here(tried: &mut Vec<(&str, Error)>, found: &Uri, port: u16) -> Option<Error> {
    let rmi_core::Location::Tcp {
        host,
        port: found_port,
    } = found.location()?
    else {
        return None;
    };
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || *found_port != port {
        return None;
    }
    let at = tried
        .iter()
        .position(|(_, e)| matches!(e, Error::ConnectFailed(_)))?;
    Some(tried.swap_remove(at).1)
}
