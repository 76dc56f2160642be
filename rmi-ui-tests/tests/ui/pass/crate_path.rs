//! `#[rmi::remote(crate = path)]` points the generated code at the runtime through `path`.

#![deny(warnings)]

/// Says hello.
#[rmi::remote(crate = ::rmi)]
pub trait Greeter {
    /// Greets `name`.
    async fn greet(&self, name: String) -> String;
}

mod renamed {
    //! The runtime under another path, as a crate that re-exports rmi would have it.
    pub use ::rmi as runtime;
}

/// Same contract, with the runtime reached through a re-export given as a string.
#[rmi::remote(crate = "crate::renamed::runtime")]
pub trait Echo {
    /// Echoes `text`.
    async fn echo(&self, text: String) -> String;
}

struct Impl;

impl Greeter for Impl {
    async fn greet(&self, name: String) -> String {
        format!("hello {name}")
    }
}

impl Echo for Impl {
    async fn echo(&self, text: String) -> String {
        text
    }
}

fn main() {
    let _: &dyn rmi::Dispatch = &GreeterServer::new(Impl);
    let _: &dyn rmi::Dispatch = &EchoServer::new(Impl);
    let _ = GreeterProxy::greet;
    let _ = EchoProxy::echo;
}
