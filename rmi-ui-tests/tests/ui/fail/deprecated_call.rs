//! `#[deprecated]` on a method carries over to the generated proxy, batch and blocking proxy:
//! their callers hear about it, and nothing else does.

#![deny(deprecated)]

#[rmi::remote]
pub trait Store {
    /// The old way.
    #[deprecated(note = "use `get`")]
    async fn fetch(&self, key: String) -> Option<String>;
    /// The new way.
    async fn get(&self, key: String) -> Option<String>;
}

async fn client(store: StoreProxy, blocking: StoreBlockingProxy) -> Result<(), rmi::Error> {
    let _ = store.fetch(String::from("k")).await?;
    let _ = store.batch().fetch(String::from("k"));
    let _ = blocking.fetch(String::from("k"))?;
    Ok(())
}

fn main() {
    let _ = client;
}
