//! A remote method must be `async fn`.

#[rmi::remote]
pub trait Clock {
    /// The current time.
    fn now(&self) -> u64;
}

fn main() {}
