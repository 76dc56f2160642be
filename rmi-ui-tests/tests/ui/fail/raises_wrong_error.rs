//! A raised error must convert into a remote exception (`E: Into<RemoteError>`); a wrong one
//! is reported at its method's declared type, not at the attribute.

#[rmi::remote]
pub trait Calc {
    #[rmi(raises)]
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String>;
    #[rmi(raises)]
    async fn fine(&self) -> Result<u64, rmi::RemoteError>;
}

fn main() {}
