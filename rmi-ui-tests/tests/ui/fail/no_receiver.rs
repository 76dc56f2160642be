//! A remote method needs a `&self` receiver.

#[rmi::remote]
pub trait Factory {
    /// An associated function has no object to call it on.
    async fn version() -> String;
}

fn main() {}
