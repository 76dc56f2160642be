//! Remote methods named as by-value trait methods are (`into`, `try_into`, a `tracing`-like
//! `instrument` of a trait in scope): the blocking proxy calls the async proxy's method by its
//! type, so method lookup cannot pick the trait's instead.

#![deny(warnings)]

/// A trait with a by-value method, in scope where the proxies are generated.
pub trait Instrument: Sized {
    /// Takes `self` by value, as `tracing::Instrument::instrument` does.
    fn instrument(self, _id: u32) -> Self {
        self
    }
}

impl<T> Instrument for T {}

/// Methods whose names by-value trait methods share.
#[rmi::remote]
pub trait Conv {
    /// As `Into::into`.
    async fn into(&self) -> u32;
    /// As `TryInto::try_into`.
    async fn try_into(&self, n: i64) -> Result<u32, String>;
    /// As `Instrument::instrument` above.
    async fn instrument(&self, id: u32) -> String;
}

fn main() {
    fn _uses(p: &ConvBlockingProxy) -> Result<u32, rmi::Error> {
        p.into()
    }
}
