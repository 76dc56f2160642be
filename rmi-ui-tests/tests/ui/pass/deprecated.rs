//! A `#[deprecated]` method is still served and still callable, without a warning inside the
//! generated code: only a caller of the deprecated method hears about it
//! (`tests/ui/fail/deprecated_call.rs`).

#![deny(warnings)]

/// A contract deprecated as a whole: its server compiles without a warning of its own (its
/// users hear of it, and say they know).
#[deprecated(note = "use `Store`")]
#[rmi::remote]
pub trait OldStore {
    /// Reads.
    async fn get(&self, key: String) -> Option<String>;
}

struct OldImpl;

#[allow(deprecated)]
impl OldStore for OldImpl {
    async fn get(&self, key: String) -> Option<String> {
        Some(key)
    }
}

/// A store with an old and a new way to read.
#[rmi::remote]
pub trait Store {
    /// The old way.
    #[deprecated(note = "use `get`")]
    async fn fetch(&self, key: String) -> Option<String>;
    /// The old way to forget, without waiting.
    #[deprecated]
    #[rmi(oneway)]
    async fn drop_key(&self, key: String);
    /// The new way.
    async fn get(&self, key: String) -> Option<String>;
}

struct Impl;

impl Store for Impl {
    async fn fetch(&self, key: String) -> Option<String> {
        self.get(key).await
    }

    async fn drop_key(&self, _key: String) {}

    async fn get(&self, key: String) -> Option<String> {
        Some(key)
    }
}

/// Uses only what is not deprecated; never run, since there is no server.
async fn client(uri: String) -> Result<(), rmi::Error> {
    let store = StoreProxy::connect(uri.as_str()).await?;
    let _: Option<String> = store.get(String::from("k")).await?;
    let mut batch = store.batch();
    let _slot = batch.get(String::from("k"));
    let _ = batch.send().await?;
    Ok(())
}

/// The blocking proxy's new way.
fn blocking(store: &StoreBlockingProxy) -> Result<Option<String>, rmi::Error> {
    store.get(String::from("k"))
}

fn main() {
    let _served: &dyn rmi::Dispatch = &StoreServer::new(Impl);
    #[allow(deprecated)]
    let _old: &dyn rmi::Dispatch = &OldStoreServer::new(OldImpl);
    // A server is `Debug`, as the proxies are, whatever it serves.
    assert_eq!(format!("{:?}", StoreServer::new(Impl)), "StoreServer { .. }");
    let _ = client;
    let _ = blocking;
}
