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

/// Sends `GET_NSURI` to `addr:port` a few times, for `within` at most in all (Pyro's three
/// rounds of 700 ms when that is longer); returns the first URI that comes back.
pub(crate) async fn lookup(addr: &str, port: u16, within: Duration) -> Result<Option<Uri>, Error> {
    let end = tokio::time::Instant::now().checked_add(within);
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
        let now = tokio::time::Instant::now();
        if end.is_some_and(|end| end <= now) {
            break;
        }
        let round = now + BROADCAST_WAIT;
        let deadline = end.map_or(round, |end| end.min(round));
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

/// What the responder answers `peer`: the name server's URI, with an unspecified host made the
/// address facing the peer; `None` when that URI names a loopback host and the peer is on
/// another host, which would dial itself (Pyro starts no responder for a name server on
/// localhost; `rmi-ns` says so at start).
fn answer(uri: &Uri, peer: SocketAddr) -> Option<String> {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if !peer.ip().is_loopback() {
        if let Uri::Pyro {
            location: Location::Tcp { host, .. },
            ..
        } = uri
        {
            let local = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_canonical().is_loopback(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            };
            if local {
                return None;
            }
        }
    }
    Some(facing(uri, peer).unwrap_or_else(|| uri.clone()).to_string())
}

/// `uri` with its unspecified host (`0.0.0.0`, `::`) replaced by the address of the interface
/// the kernel would use to reach `peer` (found by connecting a UDP socket, which sends
/// nothing; a loopback peer is answered with the loopback address); `None` when the host is a
/// real one, or no route is found. `peer` is canonical: an IPv4 requester of a dual-stack
/// responder is answered in IPv4, not as `[::ffff:a.b.c.d]`.
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
    if peer.ip().is_loopback() {
        return Some(Uri::tcp(
            object.clone(),
            loopback_of(&peer).to_string(),
            *port,
        ));
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
    ///
    /// The port is shared (`SO_REUSEADDR`, as Pyro's responder binds it): several name servers
    /// over one store (etcd) each answer a broadcast, and a client takes whichever answers
    /// first, which is how it finds another when one is down. Two name servers with different
    /// names given the same `--bcport` answer alike: keep unrelated ones on ports of their own.
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
    /// the requester, which it can dial; other URIs go out as they are, except that a name
    /// server on loopback does not answer requesters on other hosts.
    pub async fn run(self) {
        let mut buf = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((n, from)) if &buf[..n] == GET_NSURI => match answer(&self.uri, from) {
                    Some(reply) => {
                        tracing::debug!(%from, "GET_NSURI");
                        let _ = self.socket.send_to(reply.as_bytes(), from).await;
                    }
                    None => tracing::debug!(
                        %from,
                        "GET_NSURI from another host left unanswered: the name server is on loopback"
                    ),
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "broadcast responder receive error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::answer;
    use rmi_core::Uri;

    fn ns(host: &str) -> Uri {
        Uri::tcp("Pyro.NameServer", host, 9090)
    }

    /// A name server on loopback leaves requesters on other hosts unanswered, which would dial
    /// their own loopback; this host's requesters are answered (helper-148 #1). (The requesters'
    /// addresses are values only: nothing is sent.)
    #[test]
    fn a_name_server_on_loopback_answers_this_host_only() {
        let elsewhere = "192.0.2.7:40000".parse().unwrap();
        let mapped_elsewhere = "[::ffff:192.0.2.7]:40000".parse().unwrap();
        let here = "127.0.0.1:40000".parse().unwrap();
        let here_v6 = "[::1]:40000".parse().unwrap();
        for host in ["127.0.0.1", "127.0.0.5", "::1", "localhost", "LocalHost"] {
            assert_eq!(answer(&ns(host), elsewhere), None, "{host}");
            assert_eq!(answer(&ns(host), mapped_elsewhere), None, "{host}");
            assert_eq!(answer(&ns(host), here), Some(ns(host).to_string()));
            assert_eq!(answer(&ns(host), here_v6), Some(ns(host).to_string()));
        }
        // A name server on the network answers everyone with its URI as it is.
        for peer in [elsewhere, here] {
            assert_eq!(
                answer(&ns("192.168.1.5"), peer),
                Some(ns("192.168.1.5").to_string())
            );
            assert_eq!(
                answer(&ns("ns.example.test"), peer),
                Some(ns("ns.example.test").to_string())
            );
        }
    }

    /// An IPv4 requester of a dual-stack responder arrives as `[::ffff:a.b.c.d]`: a name server
    /// on every interface answers it in IPv4, which an IPv4-only client can dial and which its
    /// locator knows for this host (helper-148 #2).
    #[test]
    fn an_ipv4_requester_of_a_dual_stack_responder_is_answered_in_ipv4() {
        let mapped = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        for any in ["0.0.0.0", "::"] {
            assert_eq!(
                answer(&ns(any), mapped).as_deref(),
                Some("PYRO:Pyro.NameServer@127.0.0.1:9090"),
                "{any}"
            );
        }
        let v6 = "[::1]:40000".parse().unwrap();
        assert_eq!(
            answer(&ns("::"), v6).as_deref(),
            Some("PYRO:Pyro.NameServer@[::1]:9090")
        );
    }
}
