//! A `#[cfg]` written after `#[remote]` applies to the generated items as to the trait: a
//! trait compiled out leaves nothing behind that would name it.

#![deny(warnings)]

/// Compiled out: neither it nor `GoneServer`, `GoneProxy`… exist.
#[rmi::remote]
#[cfg(any())]
pub trait Gone {
    /// Never compiled.
    async fn vanish(&self) -> u32;
}

/// Compiled in, with its generated items.
#[rmi::remote]
#[cfg(all())]
pub trait Here {
    /// Always compiled.
    async fn stay(&self) -> u32;
}

struct Impl;

impl Here for Impl {
    async fn stay(&self) -> u32 {
        1
    }
}

fn main() {
    let _served: &dyn rmi::Dispatch = &HereServer::new(Impl);
    let _: Result<HereProxy, rmi::Error> = HereProxy::from_uri("PYRO:obj@127.0.0.1:9");
}
