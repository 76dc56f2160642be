//! A remote method takes `&self`, not `self`.

#[rmi::remote]
pub trait Session {
    /// Ends the session.
    async fn close(self);
}

fn main() {}
