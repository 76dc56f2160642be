//! A method cannot take the name of one of the generated proxy's own methods.

#[rmi::remote]
pub trait Link {
    /// Would collide with `LinkProxy::connect`.
    async fn connect(&self, host: String) -> bool;
    /// Would shadow `Clone::clone` on the proxy.
    async fn clone(&self) -> u32;
}

fn main() {}
