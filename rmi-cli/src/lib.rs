//! Command-line tools of [rmi](https://docs.rs/rmi): `rmi-ns`, the name server (like
//! `python -m Pyro4.naming`), and `rmi-nsc`, its control tool (like `pyro5-nsc`).
//!
//! `cargo install rmi-cli` installs both. They live in a package of their own so that library
//! users never compile clap or tracing-subscriber. This library holds what both share.

use std::error::Error;
use std::fmt::Write;

/// An error for people: its message, then each cause on its own line, then `hint` if given.
///
/// ```
/// let err = std::io::Error::other("connection refused");
/// let text = rmi_cli::report(&err, Some("is rmi-ns running?"));
/// assert_eq!(text, "connection refused\nhint: is rmi-ns running?");
/// ```
pub fn report(err: &(dyn Error + 'static), hint: Option<&str>) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, "\n  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = hint {
        let _ = write!(text, "\nhint: {hint}");
    }
    text
}
