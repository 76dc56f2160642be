//! The tracing spans around calls, opened only when something could see them.
//!
//! A disabled `tracing` span is not free when tracing's `log` feature is on (another crate
//! may turn it on; tarpc does) and no tracing subscriber takes debug spans: tracing then
//! offers the span's creation, and every enter and exit of every poll, to the `log` crate.
//! With nothing listening, that cost about 680 instructions per call, client and daemon
//! together (`compare --profile rmi 8x8`, BENCHMARKS.md's eleventh round).

use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};

/// Whether a debug span opened now could be seen: some tracing subscriber takes debug spans
/// (the process-wide maximum level every subscriber, global or scoped, raises; the first
/// check `tracing::debug_span!` makes itself), or the `log` crate takes debug records (where
/// tracing's `log` feature sends spans: `Span::log` makes the same check).
#[inline]
pub(crate) fn wanted() -> bool {
    (STATIC_MAX_LEVEL >= LevelFilter::DEBUG && LevelFilter::current() >= LevelFilter::DEBUG)
        || (log::STATIC_MAX_LEVEL >= log::LevelFilter::Debug
            && log::max_level() >= log::LevelFilter::Debug)
}

/// `tracing::debug_span!` when [`wanted`], else `Span::none()`.
macro_rules! debug_span {
    ($($arg:tt)*) => {
        if $crate::spans::wanted() {
            ::tracing::debug_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use debug_span;
