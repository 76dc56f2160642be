//! `#[rmi]` on a parameter (renaming a keyword argument, say) is refused by the macro, in its
//! own words, not left for rustc to call an unknown attribute.

#[rmi::remote]
pub trait Radio {
    /// Sets the volume.
    async fn set_volume(&self, #[rmi(name = "newLevel")] new_level: u32);
}

fn main() {}
