//! A `Result` of a stream cannot be sent as a value: it takes `#[rmi(raises)]`.

use rmi::RemoteStream;

#[rmi::remote]
pub trait Files {
    /// The lines of a file, or why it cannot be read.
    async fn lines(&self, path: String) -> Result<RemoteStream<String>, String>;
}

fn main() {}
