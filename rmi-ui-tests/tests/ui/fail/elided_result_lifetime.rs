//! A result cannot borrow with `'_`: it would tie what the caller gets to the proxy, and a
//! batch's slot to the batch.

use std::borrow::Cow;

#[rmi::remote]
pub trait Named {
    /// Its name.
    async fn name(&self) -> Cow<'_, str>;
    /// Its tags.
    async fn tags(&self) -> Vec<Cow<'_, str>>;
    /// `'static` is fine.
    async fn kind(&self) -> Cow<'static, str>;
}

fn main() {}
