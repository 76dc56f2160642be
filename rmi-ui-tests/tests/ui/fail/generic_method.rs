//! A remote method cannot have type parameters.

#[rmi::remote]
pub trait Store {
    /// Stores a value of any type.
    async fn put<V: Send + 'static>(&self, value: V);
}

fn main() {}
