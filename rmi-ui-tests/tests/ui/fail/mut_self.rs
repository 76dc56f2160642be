//! A remote method takes `&self`, not `&mut self`: calls run concurrently.

#[rmi::remote]
pub trait Counter {
    /// Adds one.
    async fn increment(&mut self) -> u64;
}

fn main() {}
