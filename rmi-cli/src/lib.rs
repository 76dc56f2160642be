//! Command-line tools of [rmi](https://docs.rs/rmi): `rmi-ns`, the name server (like
//! `python -m Pyro4.naming`), and `rmi-nsc`, its control tool (like `pyro5-nsc`).
//!
//! `cargo install rmi-cli` installs both. They live in a package of their own so that library
//! users never compile clap or tracing-subscriber. This library holds what both share.

use std::error::Error;

/// An error for people: the message with its causes (`message: cause: cause`), then a hint
/// on its own line if given.
///
/// ```
/// let err = std::io::Error::other("connection refused");
/// let text = rmi_cli::report(&err, Some("is rmi-ns running?"));
/// assert_eq!(text, "connection refused\nhint: is rmi-ns running?");
/// ```
pub fn report(err: &(dyn Error + 'static), hint: Option<&str>) -> String {
    let text = rmi::error::Report(err).to_string();
    match hint {
        Some(hint) => format!("{text}\nhint: {hint}"),
        None => text,
    }
}
