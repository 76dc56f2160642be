//! A result cannot borrow with `'_`, written or left out (`Cow<str>`): it would tie what the
//! caller gets to the proxy, and a batch's slot to the batch.

use std::borrow::Cow;

#[rmi::remote]
pub trait Named {
    /// Its name.
    async fn name(&self) -> Cow<'_, str>;
    /// Its tags.
    async fn tags(&self) -> Vec<Cow<'_, str>>;
    /// `'static` is fine.
    async fn kind(&self) -> Cow<'static, str>;
    /// The lifetime left out is `'_` all the same.
    async fn title(&self) -> Option<Cow<str>>;
    /// And in a stream's items.
    async fn labels(&self) -> rmi::RemoteStream<Cow<str>>;
}

fn main() {}
