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

/// Failed proofs of the shared secret, per client address. Each connection that got the
/// daemon's half of the handshake (SPAKE2) and did not prove the secret after it is one online
/// guess at the secret, which the client can check by itself and close without a word: past
/// [`AuthFailures::LIMIT`] in a minute, the address is refused before any work is done, until
/// the minute is over. (A client behind the same address with the right secret is refused too,
/// meanwhile: the price of not letting a passphrase be guessed at thousands a second.)
#[derive(Debug, Default)]
pub(super) struct AuthFailures {
    /// Per address: when its window opened, and its failures in it.
    by_address: Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
    pub(super) warnings: RateLimit,
}

impl AuthFailures {
    /// Failures an address may have in a window before it is refused.
    pub(super) const LIMIT: u32 = 30;
    /// The window.
    pub(super) const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses tracked at most (past it, those whose window is over go, then all).
    const MAX_ADDRESSES: usize = 4096;

    /// Whether `address` is refused at `now` (its window's failures at the limit).
    pub(super) fn refused(&self, address: std::net::IpAddr, now: Instant) -> bool {
        self.by_address
            .lock()
            .get(&address)
            .is_some_and(|(since, n)| {
                now.duration_since(*since) < Self::WINDOW && *n >= Self::LIMIT
            })
    }

    /// One more failure of `address` at `now`; returns its failures in the window.
    pub(super) fn failed(&self, address: std::net::IpAddr, now: Instant) -> u32 {
        let mut map = self.by_address.lock();
        if map.len() >= Self::MAX_ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, (since, _)| now.duration_since(*since) < Self::WINDOW);
            if map.len() >= Self::MAX_ADDRESSES {
                map.clear();
            }
        }
        let (since, n) = map.entry(address).or_insert((now, 0));
        if now.duration_since(*since) >= Self::WINDOW {
            *since = now;
            *n = 0;
        }
        *n = n.saturating_add(1);
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address is refused once it failed `LIMIT` times within a window, others are not,
    /// and the refusal ends with the window.
    #[test]
    fn auth_failures_refuse_an_address_for_the_rest_of_its_window() {
        let failures = AuthFailures::default();
        let (a, b) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let start = Instant::now();
        for n in 1..=AuthFailures::LIMIT {
            assert!(!failures.refused(a, start), "refused after {}", n - 1);
            assert_eq!(failures.failed(a, start), n);
        }
        assert!(failures.refused(a, start));
        assert!(failures.refused(a, start + AuthFailures::WINDOW / 2));
        assert!(!failures.refused(b, start));
        let later = start + AuthFailures::WINDOW;
        assert!(!failures.refused(a, later));
        assert_eq!(failures.failed(a, later), 1, "a new window");
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
