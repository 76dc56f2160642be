//! `#[rmi::remote(server_only)]` generates the contract and the server, and no client types
//! (for objects whose callers are Python's Pyro, or the runtime itself); a `#[rmi(raises)]`
//! method raises its error. Names a client type would have taken (`send`, `connect`) are free.

#![deny(warnings)]

/// A server-side contract.
#[rmi::remote(server_only)]
pub trait Store {
    /// Stores `value`; refuses empty ones with a remote `ValueError`.
    #[rmi(raises)]
    async fn put(&self, value: String) -> Result<u32, rmi::RemoteError>;
    /// Named as the batch's and the proxy's own methods are.
    async fn send(&self, to: String) -> bool;
    /// See `send`.
    async fn connect(&self, host: String) -> bool;
}

// No client type was generated, so this name is free.
#[allow(dead_code)]
struct StoreProxy;

struct Impl;

impl Store for Impl {
    async fn put(&self, value: String) -> Result<u32, rmi::RemoteError> {
        if value.is_empty() {
            return Err(rmi::RemoteError::new(
                rmi::RemoteErrorKind::Other,
                "builtins.ValueError",
                "empty value",
            ));
        }
        Ok(value.len() as u32)
    }

    async fn send(&self, to: String) -> bool {
        !to.is_empty()
    }

    async fn connect(&self, host: String) -> bool {
        !host.is_empty()
    }
}

fn main() {
    let _: &dyn rmi::Dispatch = &StoreServer::new(Impl);
}
