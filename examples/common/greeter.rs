//! The contract shared by the greeting examples: Pyro's tutorial object.

// Each example uses part of this file: the client never touches the implementation.
#![allow(dead_code)]

/// The greeting object of Pyro's tutorial.
#[rmi::remote]
pub(crate) trait Greeter {
    /// Returns `"Hi welcome " + name`.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

/// The server-side implementation.
pub(crate) struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}
