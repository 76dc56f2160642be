//! Two methods cannot share a wire name, whether both are renamed or one takes the other's
//! Rust name.

#[rmi::remote]
pub trait Files {
    /// Reads a file.
    #[rmi(name = "get")]
    async fn read(&self, path: String) -> Vec<u8>;
    /// Fetches a file.
    #[rmi(name = "get")]
    async fn fetch(&self, path: String) -> Vec<u8>;
    /// Lists a directory.
    async fn list(&self, path: String) -> Vec<String>;
    /// Lists a directory recursively, but on the wire it is called like the one above.
    #[rmi(name = "list")]
    async fn walk(&self, path: String) -> Vec<String>;
}

fn main() {}
