//! Discovery over UDP, as Pyro does it: a `GET_NSURI` datagram answered with the name server's
//! URI. Both halves live here: the client's `lookup` and the server's [`BroadcastResponder`].
//!
//! The default broadcast address is the loopback one (127.255.255.255): reaching a LAN is
//! something a user configures, never a default.

use std::net::SocketAddr;
use std::time::Duration;

use rmi_core::{Error, Location, Uri};
use tokio::net::UdpSocket;

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

/// Sends `GET_NSURI` to `addr:port` a few times; returns the first URI that comes back.
pub(crate) async fn lookup(addr: &str, port: u16) -> Result<Option<Uri>, Error> {
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

/// `uri` with its unspecified host (`0.0.0.0`, `::`) replaced by the address of the interface
/// the kernel would use to reach `peer` (found by connecting a UDP socket, which sends
/// nothing); `None` when the host is a real one, or no route is found.
fn facing(uri: &Uri, peer: SocketAddr) -> Option<Uri> {
    let Uri::Pyro {
        object,
        location: Location::Tcp { host, port },
    } = uri
    else {
        return None;
    };
    if !host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return None;
    }
    let any: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(peer).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    Some(Uri::tcp(object.clone(), ip.to_string(), *port))
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

    /// Answers requests until the task is aborted. A name server bound to every interface
    /// (`0.0.0.0` or `::`) answers, as Pyro's does, with the address of the interface that faces
    /// the requester, which it can dial; other URIs go out as they are.
    pub async fn run(self) {
        let fixed = self.uri.to_string();
        let mut buf = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((n, from)) if &buf[..n] == GET_NSURI => {
                    tracing::debug!(%from, "GET_NSURI");
                    let reply =
                        facing(&self.uri, from).map_or_else(|| fixed.clone(), |u| u.to_string());
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
