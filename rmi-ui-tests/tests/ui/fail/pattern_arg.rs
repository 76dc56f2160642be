//! Remote method arguments are plain identifiers: they name the wire arguments.

#[rmi::remote]
pub trait Calculator {
    /// Adds a pair. (A default body, so that rustc itself accepts the pattern.)
    async fn add(&self, (a, b): (u32, u32)) -> u32 {
        a + b
    }
}

fn main() {}
