//! What a proxy found inside a value dials with: the TLS settings and shared secret of the
//! side that received the value, which a proxy's serialized state does not carry.
//!
//! A proxy sets them while it decodes a reply (its own settings, for proxies to the same
//! daemon); a daemon while a method runs (its `callback_secret` and `callback_tls`), so a
//! callback proxy in the method's arguments can reach a client daemon that requires them. The
//! innermost setting wins: a method that calls another proxy decodes that reply with that
//! proxy's settings.

use std::sync::Arc;

use crate::auth::{HmacKey, SharedSecret};
use crate::uri::Location;

/// Which received proxies the settings apply to.
#[derive(Clone, Default)]
pub(crate) enum Scope {
    /// Every one (a daemon's explicit callback settings).
    #[default]
    Anywhere,
    /// Those to the daemon a proxy talks to, whose objects it returns (a proxy's own settings;
    /// another daemon may not require them, or not the same ones): at the location its URI
    /// names, or where it last connected (a logical URI names none: it is where the name
    /// resolved to).
    At {
        named: Option<Location>,
        connected: Arc<parking_lot::Mutex<Option<Location>>>,
    },
}

impl Scope {
    /// The scope of a proxy to `uri`'s location.
    pub(crate) fn at(named: Option<Location>) -> Self {
        Scope::At {
            named,
            connected: Arc::default(),
        }
    }
}

/// The settings a received proxy dials with, beyond its URI and handshake.
#[derive(Clone, Default)]
pub(crate) struct DialSecurity {
    /// Which received proxies they apply to.
    pub(crate) scope: Scope,
    /// Proved to the daemon the proxy dials.
    pub(crate) secret: Option<SharedSecret>,
    /// Pyro4's HMAC key, signing every message.
    pub(crate) hmac_key: Option<HmacKey>,
    /// TLS client settings for the dial.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// The decoding limits of the side that received the proxy, which every proxy it receives
    /// dials with, wherever it points (not a secret): a client that lowered
    /// `max_message_size` against a daemon it does not trust keeps it on the proxies that
    /// daemon hands out (helper-168 #4: they had the 64 MiB default).
    pub(crate) limits: Option<crate::protocol::codec::DecodeLimits>,
}

impl DialSecurity {
    /// Whether a received proxy to `location` dials with these settings.
    pub(crate) fn applies_to(&self, location: Option<&Location>) -> bool {
        match &self.scope {
            Scope::Anywhere => true,
            Scope::At { named, connected } => location.is_some_and(|location| {
                named
                    .as_ref()
                    .is_some_and(|named| same_place(named, location))
                    || connected
                        .lock()
                        .as_ref()
                        .is_some_and(|connected| same_place(connected, location))
            }),
        }
    }

    /// A proxy with these settings connected to `location`: proxies to it, received from
    /// it, take them.
    pub(crate) fn connected_to(&self, location: Option<&Location>) {
        if let Scope::At { named, connected } = &self.scope {
            if named.as_ref() != location {
                connected.lock().clone_from(&location.cloned());
            }
        }
    }

    /// `None` when there is nothing to pass on (no secret, no key, no TLS, the default
    /// limits): nothing need be set then.
    pub(crate) fn some(self) -> Option<Self> {
        #[cfg(feature = "tls")]
        let tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        let limits = self
            .limits
            .is_some_and(|l| l != crate::protocol::codec::DecodeLimits::default());
        (self.secret.is_some() || self.hmac_key.is_some() || tls || limits).then_some(self)
    }
}

/// Whether `a` and `b` are where one daemon listens: the same location (host names compared
/// as DNS does, without case), or one port on `localhost` and on a loopback address it
/// dials. A client that reached a daemon as `localhost` receives proxies whose URIs carry the
/// address the daemon bound, `127.0.0.1`.
fn same_place(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Tcp { host: ha, port: pa }, Location::Tcp { host: hb, port: pb }) => {
            pa == pb
                && (ha.eq_ignore_ascii_case(hb) || loopback_alias(ha, hb) || loopback_alias(hb, ha))
        }
        _ => a == b,
    }
}

/// Whether `name` is `localhost` and `address` one of the loopbacks a dial to it tries.
fn loopback_alias(name: &str, address: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") && matches!(address, "127.0.0.1" | "::1")
}

// The receiving side's settings, while it decodes or runs a method.
scoped_tls::scoped_thread_local!(static RECEIVER: DialSecurity);

/// Runs `f` (synchronous: a decode, or one poll of a method's future) with the proxies it
/// decodes dialing with `security`.
pub(crate) fn receiving<R>(security: &DialSecurity, f: impl FnOnce() -> R) -> R {
    RECEIVER.set(security, f)
}

/// Calls `f` with the receiving side's settings, if any are set on this thread.
pub(crate) fn with_receiver<R>(f: impl FnOnce(Option<&DialSecurity>) -> R) -> R {
    if RECEIVER.is_set() {
        RECEIVER.with(|security| f(Some(security)))
    } else {
        f(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Location {
        Location::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn localhost_is_the_loopback_it_dials_at_the_same_port_only() {
        assert!(same_place(&tcp("localhost", 9), &tcp("127.0.0.1", 9)));
        assert!(same_place(&tcp("127.0.0.1", 9), &tcp("LocalHost", 9)));
        assert!(same_place(&tcp("localhost", 9), &tcp("::1", 9)));
        assert!(same_place(&tcp("bank.example", 9), &tcp("Bank.Example", 9)));
        assert!(same_place(&tcp("LocalHost", 9), &tcp("localhost", 9)));
        assert!(!same_place(&tcp("localhost", 9), &tcp("127.0.0.1", 10)));
        assert!(!same_place(&tcp("localhost", 9), &tcp("127.0.0.2", 9)));
        assert!(!same_place(&tcp("127.0.0.1", 9), &tcp("::1", 9)));
        assert!(!same_place(&tcp("bank.example", 9), &tcp("127.0.0.1", 9)));
        assert!(!same_place(
            &tcp("localhost", 9),
            &Location::Unix("localhost".into())
        ));
    }
}
