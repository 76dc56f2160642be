//! `#[rmi(...)]` on a method accepts only `name = "..."`.

#[rmi::remote]
pub trait Greeter {
    /// Greets someone.
    #[rmi(bogus)]
    async fn greet(&self, name: String) -> String;
}

fn main() {}
