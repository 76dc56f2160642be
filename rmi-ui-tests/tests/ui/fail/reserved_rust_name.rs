//! A method cannot take the name of one of the generated proxy's own methods.

#[rmi::remote]
pub trait Link {
    /// Would collide with `LinkProxy::connect`.
    async fn connect(&self, host: String) -> bool;
    /// Would shadow `Clone::clone` on the proxy.
    async fn clone(&self) -> u32;
    /// Would collide with `LinkBatch::send`, which sends the queued calls.
    async fn send(&self, bytes: Vec<u8>);
    /// Would collide with `LinkBlockingProxy::as_async`.
    async fn as_async(&self) -> bool;
}

fn main() {}
