//! A oneway call is never retried (no reply tells whether it ran): `idempotent` would do
//! nothing on it.

#[rmi::remote]
pub trait Logger {
    #[rmi(oneway, idempotent)]
    async fn log(&self, line: String);
}

fn main() {}
