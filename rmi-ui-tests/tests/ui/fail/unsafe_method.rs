#[rmi::remote]
pub trait Vault {
    async unsafe fn open(&self) -> u32;
}

fn main() {}
