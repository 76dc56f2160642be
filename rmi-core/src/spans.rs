//! The tracing spans around calls, opened only when something can see them.
//!
//! A disabled `tracing` span is not free when tracing's `log` feature is on (another crate
//! may turn it on; tarpc does) and no tracing subscriber has been set: tracing then offers
//! the span's creation, and every enter and exit of every poll, to the `log` crate. That
//! cost about 350 instructions per call, client and daemon together, with nothing listening.

/// Whether a span opened now could be seen: a tracing subscriber has been set (globally or
/// for some scope), or the `log` crate takes debug records (where tracing's `log` feature
/// sends spans when no subscriber is set).
#[inline]
pub(crate) fn wanted() -> bool {
    tracing::dispatcher::has_been_set() || log::max_level() >= log::LevelFilter::Debug
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
