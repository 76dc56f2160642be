//! The arguments travel as one tuple, and serde's tuples end at 16: the 17th is refused by
//! name, not by pages of trait errors from inside the generated code.

#[rmi::remote]
pub trait Configure {
    /// Mirrors a Python function with many keyword arguments.
    async fn configure(
        &self,
        a0: u8, a1: u8, a2: u8, a3: u8, a4: u8, a5: u8, a6: u8, a7: u8,
        a8: u8, a9: u8, a10: u8, a11: u8, a12: u8, a13: u8, a14: u8, a15: u8,
        a16: u8,
    ) -> bool;
}

fn main() {}
