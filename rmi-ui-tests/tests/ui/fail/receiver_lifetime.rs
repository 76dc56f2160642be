//! The receiver is a plain `&self`: the daemon lends its object to each call, never for
//! `'static`.

#[rmi::remote]
pub trait Clock {
    /// Would need an object that lives forever.
    async fn now(&'static self) -> u64;
    /// `'_` is the same as no lifetime.
    async fn zone(&'_ self) -> String;
}

fn main() {}
