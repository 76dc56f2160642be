//! What a daemon binds to: an address, or a host name that its URIs keep, as Pyro's do.
//!
//! [`BindAddr`] takes what tokio's `ToSocketAddrs` takes. A host given by name
//! (`"localhost:9090"`, `("bank.example", 9090)`) is what the daemon's URIs carry, so a client
//! checks a TLS certificate against that name; an address given as one (`"127.0.0.1:0"`, a
//! `SocketAddr`) puts the bound address in them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// An address a daemon can bind: `"host:port"`, `(host, port)`, a socket address, or a slice
/// of them (the first that binds). See [`DaemonBuilder::bind`](super::DaemonBuilder::bind).
pub trait BindAddr: sealed::Sealed {
    /// Where to bind, and the host name the daemon's URIs keep, if one was given.
    #[doc(hidden)]
    fn target(&self) -> Target;
}

/// What [`BindAddr::target`] gives.
#[doc(hidden)]
#[derive(Debug)]
pub enum Target {
    /// Addresses, tried in order.
    Addrs(Vec<SocketAddr>),
    /// A host name and a port: resolved when bound, and kept for the URIs.
    Named(String, u16),
    /// Text that is neither (no port, say): handed to tokio, whose error says what is wrong.
    Text(String),
}

mod sealed {
    pub trait Sealed {}
}

/// `host` with `port`: an address if `host` is an IP address (IPv6 with or without brackets).
fn host_port(host: &str, port: u16) -> Target {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Target::Addrs(vec![SocketAddr::new(ip, port)]),
        Err(_) => Target::Named(host.to_owned(), port),
    }
}

impl sealed::Sealed for str {}
impl BindAddr for str {
    fn target(&self) -> Target {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return Target::Addrs(vec![addr]);
        }
        match self.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => match port.parse() {
                Ok(port) => host_port(host, port),
                Err(_) => Target::Text(self.to_owned()),
            },
            _ => Target::Text(self.to_owned()),
        }
    }
}

impl sealed::Sealed for String {}
impl BindAddr for String {
    fn target(&self) -> Target {
        self.as_str().target()
    }
}

impl sealed::Sealed for (&str, u16) {}
impl BindAddr for (&str, u16) {
    fn target(&self) -> Target {
        host_port(self.0, self.1)
    }
}

impl sealed::Sealed for (String, u16) {}
impl BindAddr for (String, u16) {
    fn target(&self) -> Target {
        host_port(&self.0, self.1)
    }
}

/// The address types, each bound as the address it is.
macro_rules! addresses {
    ($($t:ty => |$a:ident| $addr:expr;)*) => {$(
        impl sealed::Sealed for $t {}
        impl BindAddr for $t {
            fn target(&self) -> Target {
                let $a = self;
                Target::Addrs(vec![$addr])
            }
        }
    )*};
}

addresses! {
    SocketAddr => |a| *a;
    SocketAddrV4 => |a| SocketAddr::V4(*a);
    SocketAddrV6 => |a| SocketAddr::V6(*a);
    (IpAddr, u16) => |a| SocketAddr::new(a.0, a.1);
    (Ipv4Addr, u16) => |a| SocketAddr::new(IpAddr::V4(a.0), a.1);
    (Ipv6Addr, u16) => |a| SocketAddr::new(IpAddr::V6(a.0), a.1);
}

impl sealed::Sealed for [SocketAddr] {}
impl BindAddr for [SocketAddr] {
    fn target(&self) -> Target {
        Target::Addrs(self.to_vec())
    }
}

impl<T: BindAddr + ?Sized> sealed::Sealed for &T {}
impl<T: BindAddr + ?Sized> BindAddr for &T {
    fn target(&self) -> Target {
        (**self).target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(t: Target) -> Option<(String, u16)> {
        match t {
            Target::Named(host, port) => Some((host, port)),
            _ => None,
        }
    }

    #[test]
    fn a_host_given_by_name_is_kept_and_an_address_is_not() {
        assert_eq!(named("localhost:0".target()), Some(("localhost".into(), 0)));
        assert_eq!(
            named(("bank.example", 9090).target()),
            Some(("bank.example".into(), 9090))
        );
        assert_eq!(
            named(String::from("LocalHost:9").target()),
            Some(("LocalHost".into(), 9))
        );
        for address in ["127.0.0.1:0", "[::1]:9090", "0.0.0.0:1"] {
            assert!(
                matches!(address.target(), Target::Addrs(a) if a.len() == 1),
                "{address}"
            );
        }
        assert!(matches!(("::1", 5).target(), Target::Addrs(_)));
        assert!(matches!(("[::1]", 5).target(), Target::Addrs(_)));
        assert!(matches!(("127.0.0.1", 5).target(), Target::Addrs(_)));
        // Neither: tokio's error will say so.
        for text in ["localhost", "localhost:port", ":9090", "::1"] {
            assert!(matches!(text.target(), Target::Text(_)), "{text}");
        }
    }
}
