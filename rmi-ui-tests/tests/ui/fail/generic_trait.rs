//! A remote trait cannot have type parameters.

#[rmi::remote]
pub trait Store<V> {
    /// Stores a value.
    async fn put(&self, value: V);
}

fn main() {}
