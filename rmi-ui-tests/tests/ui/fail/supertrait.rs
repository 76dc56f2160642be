//! A supertrait's methods would be neither served nor proxied: refused, not ignored.

#[rmi::remote]
pub trait Device {
    async fn id(&self) -> String;
}

#[rmi::remote]
pub trait Camera: Device + Send {
    async fn snap(&self) -> Vec<u8>;
}

fn main() {}
