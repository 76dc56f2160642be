//! Remote method arguments must be owned.

#[rmi::remote]
pub trait Greeter {
    /// Greets someone.
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
