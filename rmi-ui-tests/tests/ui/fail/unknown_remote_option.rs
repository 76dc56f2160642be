#[rmi::remote(bogus = 1)]
pub trait Greeter {
    async fn welcome_message(&mut self, name: String) -> String;
}

fn main() {}
