//! A oneway method cannot return a value: its caller never gets a reply.

#[rmi::remote]
pub trait Logger {
    #[rmi(oneway)]
    async fn log(&self, line: String) -> u64;
}

fn main() {}
