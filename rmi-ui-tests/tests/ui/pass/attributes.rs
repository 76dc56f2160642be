//! What a user writes on a method reaches the generated copies as it should: a default body's
//! inner attributes (`#![allow]`, a `//!` line) stay in the body, an `#[expect]` met by the
//! trait's method allows the lint on the copies, a `#[cfg_attr]` of lint levels is carried, and
//! `Cow<'_, str>` and `Cow<'static, str>` arguments are owned enough (as `Cow<str>` is).

#![deny(warnings)]

use std::borrow::Cow;

/// Hooks with default bodies.
#[rmi::remote]
pub trait Hooks {
    /// Called on each event; most objects ignore it.
    async fn on_event(&self, event: String) {
        #![allow(unused_variables)]
        //! Does nothing by default.
    }

    /// Python's keyword argument, under its Python name.
    #[rmi(name = "setVolume")]
    #[expect(non_snake_case)]
    async fn set_volume(&self, newLevel: u32) -> u32;

    /// The same, allowed under a condition that holds.
    #[cfg_attr(not(any()), expect(non_snake_case))]
    async fn set_balance(&self, newBalance: i32) -> i32;

    /// Borrowed-looking but owned arguments.
    async fn greet(&self, name: Cow<'_, str>, greeting: Cow<'static, str>) -> String;
}

struct Quiet;

impl Hooks for Quiet {
    #[expect(non_snake_case)]
    async fn set_volume(&self, newLevel: u32) -> u32 {
        newLevel
    }

    #[expect(non_snake_case)]
    async fn set_balance(&self, newBalance: i32) -> i32 {
        newBalance
    }

    async fn greet(&self, name: Cow<'_, str>, greeting: Cow<'static, str>) -> String {
        format!("{greeting} {name}")
    }
}

fn main() {
    let _ = HooksServer::new(Quiet);
}
