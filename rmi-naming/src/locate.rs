//! Finding the name server: explicit address, then localhost, then a UDP `GET_NSURI` broadcast.
//!
//! The default broadcast address is the loopback one (127.255.255.255): reaching a LAN is
//! something a user configures, never a default. Environment variables are read only by
//! [`NsLocator::from_env`].

use std::net::SocketAddr;
use std::time::Duration;

use rmi_core::{Error, Uri};
use tokio::net::UdpSocket;

use crate::NameServerProxy;

/// Default address the broadcast request goes to and the responder binds.
pub const DEFAULT_BROADCAST_ADDR: &str = "127.255.255.255";
/// Default UDP port of the responder (Pyro's `NS_BCPORT`).
pub const DEFAULT_BROADCAST_PORT: u16 = 9091;
/// The discovery request, as in Pyro.
pub const GET_NSURI: &[u8] = b"GET_NSURI";
/// Rounds of broadcast before giving up, each waiting [`BROADCAST_WAIT`] (Pyro's values).
const BROADCAST_ROUNDS: usize = 3;
/// How long each broadcast round waits for an answer.
const BROADCAST_WAIT: Duration = Duration::from_millis(700);

/// How to find a name server; the defaults follow Pyro.
#[derive(Debug, Clone)]
pub struct NsLocator {
    host: Option<String>,
    port: u16,
    broadcast: Option<(String, u16)>,
    connect_timeout: Duration,
    tls: Option<std::sync::Arc<rmi_core::rustls::ClientConfig>>,
    secret: Option<rmi_core::SharedSecret>,
}

impl Default for NsLocator {
    fn default() -> Self {
        NsLocator {
            host: None,
            port: rmi_core::uri::DEFAULT_NS_PORT,
            broadcast: Some((DEFAULT_BROADCAST_ADDR.into(), DEFAULT_BROADCAST_PORT)),
            connect_timeout: Duration::from_secs(5),
            tls: None,
            secret: None,
        }
    }
}

impl NsLocator {
    /// The defaults: no explicit host, port 9090, broadcast to 127.255.255.255:9091.
    pub fn new() -> Self {
        NsLocator::default()
    }

    /// The defaults overridden by `RMI_NS_HOST`, `RMI_NS_PORT`, `RMI_NS_BCADDR` and
    /// `RMI_NS_BCPORT` where set. Only binaries and callers who ask read the environment.
    pub fn from_env() -> Result<Self, Error> {
        let mut l = NsLocator::new();
        let port = |var: &str| -> Result<Option<u16>, Error> {
            match std::env::var(var) {
                Ok(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Resolve(format!("{var}={v:?} is not a port number"))),
                Err(_) => Ok(None),
            }
        };
        if let Ok(host) = std::env::var("RMI_NS_HOST") {
            l.host = Some(host);
        }
        if let Some(p) = port("RMI_NS_PORT")? {
            l.port = p;
        }
        if let Some((addr, bport)) = &mut l.broadcast {
            if let Ok(a) = std::env::var("RMI_NS_BCADDR") {
                *addr = a;
            }
            if let Some(p) = port("RMI_NS_BCPORT")? {
                *bport = p;
            }
        }
        Ok(l)
    }

    /// Connect to this host only (no localhost try, no broadcast).
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
    pub fn tls(mut self, config: std::sync::Arc<rmi_core::rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Authenticate to the name server with a shared secret.
    pub fn shared_secret(mut self, secret: rmi_core::SharedSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Deadline for each connection attempt (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Finds the name server and returns a connected proxy to it.
    pub async fn locate(&self) -> Result<NameServerProxy, Error> {
        if let Some(host) = &self.host {
            return self
                .connect(Uri::tcp(
                    crate::NAME_SERVER_OBJECT_ID,
                    host.clone(),
                    self.port,
                ))
                .await;
        }
        let local = Uri::tcp(crate::NAME_SERVER_OBJECT_ID, "127.0.0.1", self.port);
        let local_err = match self.connect(local).await {
            Ok(ns) => return Ok(ns),
            Err(e) => e,
        };
        if let Some((addr, port)) = &self.broadcast {
            if let Some(uri) = broadcast_lookup(addr, *port).await? {
                return self.connect(uri).await;
            }
        }
        Err(Error::Resolve(format!(
            "name server not found: nothing on 127.0.0.1:{} ({local_err}) and no answer to a GET_NSURI broadcast{}",
            self.port,
            self.broadcast.as_ref().map(|(a, p)| format!(" on {a}:{p}")).unwrap_or_else(|| " (disabled)".into())
        )))
    }

    async fn connect(&self, uri: Uri) -> Result<NameServerProxy, Error> {
        let mut builder = rmi_core::Proxy::builder(uri).connect_timeout(self.connect_timeout);
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(secret) = &self.secret {
            builder = builder.shared_secret(secret.clone());
        }
        let proxy = builder.connect().await?;
        Ok(NameServerProxy::from_proxy(proxy))
    }
}

/// Finds a name server with the default [`NsLocator`].
pub async fn locate_ns() -> Result<NameServerProxy, Error> {
    NsLocator::new().locate().await
}

/// Sends `GET_NSURI` to `addr:port` a few times; returns the first URI that comes back.
async fn broadcast_lookup(addr: &str, port: u16) -> Result<Option<Uri>, Error> {
    let target: SocketAddr = tokio::net::lookup_host((addr, port))
        .await
        .map_err(|e| Error::Resolve(format!("bad broadcast address {addr}:{port}: {e}")))?
        .next()
        .ok_or_else(|| Error::Resolve(format!("bad broadcast address {addr}:{port}")))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid");
    // A loopback target needs a loopback source, or the kernel has no route for the reply.
    let bind = if target.ip().is_loopback() {
        SocketAddr::new(loopback_of(&target), 0)
    } else {
        bind
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| Error::Resolve(format!("cannot open a udp socket: {e}")))?;
    socket
        .set_broadcast(true)
        .map_err(|e| Error::Resolve(format!("cannot enable broadcast: {e}")))?;
    let mut buf = [0u8; 1024];
    for _ in 0..BROADCAST_ROUNDS {
        if let Err(e) = socket.send_to(GET_NSURI, target).await {
            tracing::debug!(error = %e, %target, "GET_NSURI send failed");
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + BROADCAST_WAIT;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            match std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|s| s.parse::<Uri>().ok())
            {
                Some(uri) if uri.is_direct() => return Ok(Some(uri)),
                _ => tracing::debug!(%from, "ignoring a malformed GET_NSURI answer"),
            }
        }
    }
    Ok(None)
}

fn loopback_of(target: &SocketAddr) -> std::net::IpAddr {
    if target.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    }
}

/// Answers `GET_NSURI` datagrams with the name server's URI.
#[derive(Debug)]
pub struct BroadcastResponder {
    socket: UdpSocket,
    uri: Uri,
}

impl BroadcastResponder {
    /// Binds the address it serves (a socket bound to 127.0.0.1 never sees 127.255.255.255).
    pub async fn bind(addr: &str, port: u16, uri: Uri) -> Result<Self, Error> {
        let target: SocketAddr = tokio::net::lookup_host((addr, port))
            .await
            .map_err(|e| Error::Resolve(format!("bad broadcast address {addr}:{port}: {e}")))?
            .next()
            .ok_or_else(|| Error::Resolve(format!("bad broadcast address {addr}:{port}")))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(target),
            socket2::Type::DGRAM,
            None,
        )
        .and_then(|s| {
            s.set_reuse_address(true)?;
            s.set_broadcast(true)?;
            s.set_nonblocking(true)?;
            s.bind(&target.into())?;
            Ok(s)
        })
        .map_err(|e| {
            Error::Resolve(format!(
                "cannot bind the broadcast responder on {target}: {e}"
            ))
        })?;
        let socket =
            UdpSocket::from_std(socket.into()).map_err(|e| Error::Resolve(e.to_string()))?;
        Ok(BroadcastResponder { socket, uri })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Answers requests until the task is aborted.
    pub async fn run(self) {
        let reply = self.uri.to_string();
        let mut buf = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((n, from)) if &buf[..n] == GET_NSURI => {
                    tracing::debug!(%from, "GET_NSURI");
                    let _ = self.socket.send_to(reply.as_bytes(), from).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "broadcast responder receive error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
