//! Methods that `#[cfg]` keeps apart may share a wire name, and a Rust name: one method
//! written for two platforms.

#![deny(warnings)]

/// Paths, the local way.
#[rmi::remote]
pub trait Paths {
    /// The home directory, the Unix way.
    #[cfg(unix)]
    async fn home(&self) -> String;
    /// The home directory, elsewhere.
    #[cfg(not(unix))]
    async fn home(&self) -> String;
    /// The separator, under another Rust name on Unix.
    #[cfg(unix)]
    #[rmi(name = "sep")]
    async fn separator(&self) -> char;
    /// The separator, elsewhere.
    #[cfg(not(unix))]
    async fn sep(&self) -> char;
}

struct Impl;

impl Paths for Impl {
    #[cfg(unix)]
    async fn home(&self) -> String {
        String::from("/home")
    }

    #[cfg(not(unix))]
    async fn home(&self) -> String {
        String::from("C:\\Users")
    }

    #[cfg(unix)]
    async fn separator(&self) -> char {
        '/'
    }

    #[cfg(not(unix))]
    async fn sep(&self) -> char {
        '\\'
    }
}

fn main() {
    let _served: &dyn rmi::Dispatch = &PathsServer::new(Impl);
    let methods = <PathsServer<Impl> as rmi::Dispatch>::describe().methods;
    assert_eq!(methods, ["home", "sep"]);
}
