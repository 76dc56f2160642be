//! `#[cfg_attr]` that would add an attribute the macro must see is refused on a method: the
//! macro runs before it is decided. One adding anything else stays.

#[rmi::remote]
pub trait Store {
    #[cfg_attr(not(test), rmi(oneway))]
    async fn forget(&self, key: String);
    #[cfg_attr(unix, cfg(unix))]
    async fn only_unix(&self) -> u32;
    #[cfg_attr(all(), doc = "Reads.")]
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
