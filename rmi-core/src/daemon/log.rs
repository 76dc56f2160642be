//! Logging what peers can trigger: warnings are rate-limited, and text a peer chose is
//! truncated, so a client cannot flood the daemon's log.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// Longest peer-chosen text written to the log, in characters.
pub(super) const MAX_PEER_TEXT: usize = 200;
/// Warnings of one kind written per [`WINDOW`]; the rest are counted and reported once.
const PER_WINDOW: u64 = 10;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(10);

/// Text from a peer, displayed truncated to [`MAX_PEER_TEXT`] characters.
pub(super) struct PeerText<'a>(pub(super) &'a str);

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_PEER_TEXT) {
            None => f.write_str(self.0),
            Some((cut, _)) => write!(f, "{}… ({} more bytes)", &self.0[..cut], self.0.len() - cut),
        }
    }
}

/// A rate limit for one kind of warning: at most [`PER_WINDOW`] per [`WINDOW`], then one
/// line saying how many were left out.
#[derive(Debug)]
pub(super) struct RateLimit {
    window: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl RateLimit {
    /// Whether to log one more warning now. When a new window opens after some were left out,
    /// `report` is called first with their number.
    pub(super) fn allow(&self, report: impl FnOnce(u64)) -> bool {
        let mut window = self.window.lock();
        let now = Instant::now();
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
            let left_out = self.suppressed.swap(0, Ordering::Relaxed);
            if left_out > 0 {
                report(left_out);
            }
        }
        if window.1 < PER_WINDOW {
            window.1 += 1;
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Guesses at the shared secret, per client address. Each connection that gets the daemon's
/// half of the handshake (SPAKE2) is one online guess, which the client can check by itself
/// (the half carries the daemon's key confirmation) and close without a word. So a guess counts
/// from the moment the half is sent: at most [`AuthFailures::LIMIT`] failed and unproved ones per
/// address in a minute, however many connections it opens at once. Past that, a connection of
/// the address waits for one of its handshakes under way to end (within the handshake timeout),
/// and with the failures at the limit it is refused before any work is done, until the minute
/// is over. (A client behind the same address with the right secret is refused too, meanwhile:
/// the price of not letting a passphrase be guessed at thousands a second.)
///
/// While the table is full (an attacker failing from thousands of addresses), addresses not in
/// it share one tally; the sources that proved the secret within [`AuthFailures::KNOWN_GOOD`]
/// keep their own (at most [`AuthFailures::MAX_SOURCES`] of them, the oldest forgotten first:
/// only clients with the secret enter it), so the attacker's failures in the shared tally do
/// not lock out the clients already known good, reconnecting after a blip hours later.
#[derive(Debug, Default)]
pub(super) struct AuthFailures {
    by_source: Mutex<std::collections::HashMap<AuthSource, Tally>>,
    /// When each source last proved the secret.
    proved: Mutex<std::collections::HashMap<AuthSource, Instant>>,
    /// Told whenever a handshake under way ends: connections waiting for room look again.
    ended: tokio::sync::Notify,
    pub(super) warnings: RateLimit,
}

/// Where guesses come from, as counted: an IPv4 address, an IPv6 /64 (what one subscriber
/// gets), every peer with no IP address (Unix sockets, streams served by hand) together, or,
/// while the table is full, every address not in it together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AuthSource {
    Ip(std::net::IpAddr),
    Local,
    Overflow,
}

impl AuthSource {
    /// The source of a peer labelled `peer` (a socket address, or anything else).
    pub(super) fn of(peer: &str) -> Self {
        match peer.parse::<std::net::SocketAddr>() {
            Ok(address) => match address.ip().to_canonical() {
                std::net::IpAddr::V6(v6) => {
                    let net = u128::from(v6) & !((1u128 << 64) - 1);
                    AuthSource::Ip(std::net::Ipv6Addr::from(net).into())
                }
                v4 => AuthSource::Ip(v4),
            },
            Err(_) => AuthSource::Local,
        }
    }
}

/// One source's guesses: when its window opened, its failures in it, and its handshakes under
/// way (which count until they end, whatever the window).
#[derive(Debug, Clone, Copy)]
struct Tally {
    since: Instant,
    failed: u32,
    pending: u32,
}

/// What [`AuthFailures::try_guess`] says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// A guess is under way for this source: end it with [`AuthFailures::end`].
    Go(AuthSource),
    /// Its handshakes under way fill its room: wait for one to end.
    Wait,
    /// Its failures in the window reached the limit.
    Refused,
}

impl AuthFailures {
    /// Failed and unproved guesses a source may have in a window.
    pub(super) const LIMIT: u32 = 30;
    /// The window.
    pub(super) const WINDOW: Duration = Duration::from_secs(60);
    /// How long a source that proved the secret keeps a tally of its own while the table is
    /// full.
    pub(super) const KNOWN_GOOD: Duration = Duration::from_secs(24 * 3600);
    /// Sources tracked at most; past it, addresses not tracked are counted together.
    const MAX_SOURCES: usize = 4096;

    /// Starts a guess from `source` at `now`, if its window has room for one.
    pub(super) fn try_guess(&self, source: AuthSource, now: Instant) -> Turn {
        let mut map = self.by_source.lock();
        let mut source = source;
        if map.len() >= Self::MAX_SOURCES && !map.contains_key(&source) {
            map.retain(|_, t| {
                t.pending > 0 || (t.failed > 0 && now.duration_since(t.since) < Self::WINDOW)
            });
            let known_good = self
                .proved
                .lock()
                .get(&source)
                .is_some_and(|at| now.duration_since(*at) < Self::KNOWN_GOOD);
            if map.len() >= Self::MAX_SOURCES && !known_good {
                source = AuthSource::Overflow;
            }
        }
        let tally = map.entry(source).or_insert(Tally {
            since: now,
            failed: 0,
            pending: 0,
        });
        if now.duration_since(tally.since) >= Self::WINDOW {
            tally.since = now;
            tally.failed = 0;
        }
        if tally.failed >= Self::LIMIT {
            Turn::Refused
        } else if tally.failed + tally.pending >= Self::LIMIT {
            Turn::Wait
        } else {
            tally.pending += 1;
            Turn::Go(source)
        }
    }

    /// Starts a guess from `source`, waiting while its handshakes under way fill its room;
    /// `None` when it is refused.
    pub(super) async fn guess(&self, source: AuthSource) -> Option<AuthSource> {
        loop {
            let ended = self.ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            match self.try_guess(source, Instant::now()) {
                Turn::Go(counted) => return Some(counted),
                Turn::Refused => return None,
                Turn::Wait => ended.await,
            }
        }
    }

    /// Notes that `source` (the client's own, not the tally it was counted in) proved the
    /// secret at `now`: for a window, it keeps a tally of its own while the table is full.
    pub(super) fn proved_by(&self, source: AuthSource, now: Instant) {
        if source == AuthSource::Overflow {
            return;
        }
        let mut proved = self.proved.lock();
        if proved.len() >= Self::MAX_SOURCES && !proved.contains_key(&source) {
            proved.retain(|_, at| now.duration_since(*at) < Self::KNOWN_GOOD);
            if proved.len() >= Self::MAX_SOURCES {
                let oldest = proved.iter().min_by_key(|(_, at)| **at).map(|(s, _)| *s);
                if let Some(oldest) = oldest {
                    proved.remove(&oldest);
                }
            }
        }
        proved.insert(source, now);
    }

    /// Ends a guess [`try_guess`](Self::try_guess) started: `proved`, it is forgiven; else it
    /// is one more failure in the source's window (a new one if that is over). Returns the
    /// source's failures in its window.
    pub(super) fn end(&self, source: AuthSource, proved: bool, now: Instant) -> u32 {
        let (failed, was_full) = {
            let mut map = self.by_source.lock();
            let Some(tally) = map.get_mut(&source) else {
                return 0;
            };
            // Only a source whose room was full can have connections waiting for it.
            let was_full = tally.failed + tally.pending >= Self::LIMIT;
            tally.pending = tally.pending.saturating_sub(1);
            if !proved {
                if now.duration_since(tally.since) >= Self::WINDOW {
                    tally.since = now;
                    tally.failed = 0;
                }
                tally.failed = tally.failed.saturating_add(1);
            }
            let failed = tally.failed;
            // A source with nothing against it is not kept: clients that prove the secret
            // take no room in the table.
            if tally.pending == 0 && tally.failed == 0 {
                map.remove(&source);
            }
            (failed, was_full)
        };
        if was_full {
            self.ended.notify_waiters();
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source is refused once it failed `LIMIT` times within a window, others are not, and
    /// the refusal ends with the window.
    #[test]
    fn auth_failures_refuse_an_address_for_the_rest_of_its_window() {
        let failures = AuthFailures::default();
        let (a, b) = (AuthSource::of("127.0.0.1:1"), AuthSource::of("127.0.0.2:1"));
        let start = Instant::now();
        for n in 1..=AuthFailures::LIMIT {
            assert_eq!(failures.try_guess(a, start), Turn::Go(a), "after {}", n - 1);
            assert_eq!(failures.end(a, false, start), n);
        }
        assert_eq!(failures.try_guess(a, start), Turn::Refused);
        assert_eq!(
            failures.try_guess(a, start + AuthFailures::WINDOW / 2),
            Turn::Refused
        );
        assert_eq!(failures.try_guess(b, start), Turn::Go(b));
        let later = start + AuthFailures::WINDOW;
        assert_eq!(failures.try_guess(a, later), Turn::Go(a));
        assert_eq!(failures.end(a, false, later), 1, "a new window");
    }

    /// Handshakes under way count: an address with `LIMIT` of them open gets no more offers
    /// (it could check each by itself), until one ends; a proved one is forgiven.
    #[test]
    fn guesses_under_way_count_until_they_end() {
        let failures = AuthFailures::default();
        let a = AuthSource::of("127.0.0.1:1");
        let now = Instant::now();
        for _ in 0..AuthFailures::LIMIT {
            assert_eq!(failures.try_guess(a, now), Turn::Go(a));
        }
        assert_eq!(failures.try_guess(a, now), Turn::Wait);
        assert_eq!(failures.end(a, true, now), 0, "proved: forgiven");
        assert_eq!(failures.try_guess(a, now), Turn::Go(a));
        for _ in 0..AuthFailures::LIMIT {
            failures.end(a, false, now);
        }
        assert_eq!(failures.try_guess(a, now), Turn::Refused);
    }

    /// A full table never lets go of a refused address: addresses past it share one tally.
    #[test]
    fn a_full_table_keeps_its_refusals() {
        let failures = AuthFailures::default();
        let a = AuthSource::of("127.0.0.2:1");
        let now = Instant::now();
        for _ in 0..AuthFailures::LIMIT {
            failures.try_guess(a, now);
            failures.end(a, false, now);
        }
        for i in 0..AuthFailures::MAX_SOURCES as u32 {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f01_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, now) {
                failures.end(counted, false, now);
            }
        }
        assert_eq!(failures.try_guess(a, now), Turn::Refused);
        // The overflow is one source: its 30 guesses are all the untracked addresses get.
        let mut overflowed = 0;
        for i in 0..100u32 {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f02_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, now) {
                assert_eq!(counted, AuthSource::Overflow);
                failures.end(counted, false, now);
                overflowed += 1;
            }
        }
        assert!(overflowed < AuthFailures::LIMIT, "{overflowed}");
    }

    /// An attacker fills the table from 4,096 addresses and then fails 30 times more from
    /// others (the shared tally of addresses not in the table): a client that proved the secret
    /// within the window still gets a tally of its own and goes on; one never seen shares the
    /// overflow's refusal. (Before, every client not in the table was refused: an attacker
    /// with a /52 of IPv6 kept every honest client out, re-armed each minute.)
    #[test]
    fn a_client_known_good_is_not_locked_out_by_a_full_table() {
        let failures = AuthFailures::default();
        let now = Instant::now();
        let honest = AuthSource::of("127.0.0.1:1");
        assert_eq!(failures.try_guess(honest, now), Turn::Go(honest));
        failures.end(honest, true, now);
        failures.proved_by(honest, now);
        for i in 0..AuthFailures::MAX_SOURCES as u32 {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f01_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, now) {
                failures.end(counted, false, now);
            }
        }
        for i in 0..AuthFailures::LIMIT {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f02_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, now) {
                assert_eq!(counted, AuthSource::Overflow);
                failures.end(counted, false, now);
            }
        }
        let stranger = AuthSource::of("127.3.0.1:1");
        assert_eq!(failures.try_guess(stranger, now), Turn::Refused);
        assert_eq!(failures.try_guess(honest, now), Turn::Go(honest));
        failures.end(honest, true, now);
        // Hours later (its connection kept open since, then cut by a blip), with the attacker
        // keeping the table full: still its own tally (a first version kept it a minute).
        let later = now + Duration::from_secs(3 * 3600);
        for i in 0..AuthFailures::MAX_SOURCES as u32 {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f04_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, later) {
                failures.end(counted, false, later);
            }
        }
        for i in 0..AuthFailures::LIMIT {
            let other = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f05_0000 + i).into());
            if let Turn::Go(counted) = failures.try_guess(other, later) {
                failures.end(counted, false, later);
            }
        }
        assert_eq!(failures.try_guess(stranger, later), Turn::Refused);
        assert_eq!(failures.try_guess(honest, later), Turn::Go(honest));
    }

    /// Clients that prove the secret leave nothing in the table: 5,000 of them from as many
    /// addresses, then one that fails is counted on its own, not with the overflow.
    #[test]
    fn proved_guesses_take_no_room() {
        let failures = AuthFailures::default();
        let now = Instant::now();
        for i in 0..5_000u32 {
            let honest = AuthSource::Ip(std::net::Ipv4Addr::from(0x7f01_0000 + i).into());
            assert_eq!(failures.try_guess(honest, now), Turn::Go(honest));
            failures.end(honest, true, now);
        }
        assert_eq!(failures.by_source.lock().len(), 0);
        let a = AuthSource::of("127.0.0.2:1");
        assert_eq!(failures.try_guess(a, now), Turn::Go(a));
        assert_eq!(failures.end(a, false, now), 1);
    }

    /// IPv6 addresses count per /64; peers with no IP address count together.
    #[test]
    fn sources_are_v4_addresses_v6_networks_or_local() {
        assert_eq!(
            AuthSource::of("[2001:db8::1]:5"),
            AuthSource::of("[2001:db8::ffff:1]:7")
        );
        assert_ne!(
            AuthSource::of("[2001:db8::1]:5"),
            AuthSource::of("[2001:db8:0:1::1]:5")
        );
        assert_eq!(
            AuthSource::of("[::ffff:127.0.0.1]:5"),
            AuthSource::of("127.0.0.1:9")
        );
        assert_eq!(AuthSource::of("unix:/tmp/x"), AuthSource::Local);
        assert_eq!(AuthSource::of("pipe"), AuthSource::Local);
    }

    #[test]
    fn peer_text_is_cut_at_a_char_boundary_and_says_how_much_is_missing() {
        let long = "é".repeat(300);
        let shown = PeerText(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(MAX_PEER_TEXT)));
        assert!(shown.ends_with("(200 more bytes)"), "{shown}");
        assert_eq!(PeerText("short").to_string(), "short");
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_past_the_limit_are_counted_and_reported_once() {
        let limit = RateLimit::default();
        let allowed = (0..100)
            .filter(|_| limit.allow(|_| panic!("nothing left out yet")))
            .count();
        assert_eq!(allowed as u64, PER_WINDOW);
        tokio::time::advance(WINDOW).await;
        let mut reported = None;
        assert!(limit.allow(|n| reported = Some(n)));
        assert_eq!(reported, Some(100 - PER_WINDOW));
        // A window in which nothing was left out reports nothing.
        tokio::time::advance(WINDOW).await;
        assert!(limit.allow(|n| panic!("{n} reported, none left out")));
    }
}
