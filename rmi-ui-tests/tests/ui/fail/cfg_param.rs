//! `#[cfg]` on a parameter would change the method's wire signature by configuration.

#[rmi::remote]
pub trait Files {
    /// Reads a file.
    async fn read(&self, path: String, #[cfg(unix)] mode: u32) -> Vec<u8>;
}

fn main() {}
