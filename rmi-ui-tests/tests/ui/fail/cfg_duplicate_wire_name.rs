//! Methods with `#[cfg]` may share a wire name only where they are never compiled in
//! together; where they are, the build fails at the second.

#[rmi::remote]
pub trait Files {
    /// Reads a file.
    #[cfg(all())]
    async fn read(&self, path: String) -> Vec<u8>;
    /// Compiled in wherever `read` is, under the same wire name.
    #[cfg(not(any()))]
    #[rmi(name = "read")]
    async fn fetch(&self, path: String) -> Vec<u8>;
}

fn main() {}
