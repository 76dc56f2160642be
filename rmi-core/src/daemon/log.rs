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

#[cfg(test)]
mod tests {
    use super::*;

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
