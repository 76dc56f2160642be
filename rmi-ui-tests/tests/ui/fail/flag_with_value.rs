//! `oneway`, `idempotent` and `raises` are flags: a value is refused by name.

#[rmi::remote]
pub trait Log {
    /// Appends a line.
    #[rmi(oneway = true)]
    async fn append(&self, line: String);
    /// Reads the log.
    #[rmi(idempotent(true))]
    async fn read(&self) -> Vec<String>;
}

fn main() {}
