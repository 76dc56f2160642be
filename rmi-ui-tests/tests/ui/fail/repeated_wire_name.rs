#[rmi::remote]
pub trait Greeter {
    #[rmi(name = "welcomeMessage")]
    #[rmi(name = "welcome")]
    async fn welcome_message(&self, name: String) -> String;
}

fn main() {}
