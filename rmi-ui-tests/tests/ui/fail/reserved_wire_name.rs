//! Wire names the runtime uses itself, and names starting with `_` (but Python's special
//! methods that Pyro exposes, such as `__len__`), are reserved.

#[rmi::remote]
pub trait Object {
    /// Would shadow Pyro's attribute access.
    #[rmi(name = "__getattr__")]
    async fn get_attr(&self, name: String) -> String;
    /// A leading underscore from the Rust name is reserved too.
    async fn _private(&self);
    /// Python's special methods are not, but its private ones are (Pyro never exposes them).
    #[rmi(name = "__repr__")]
    async fn repr(&self) -> String;
    /// Would shadow Pyro's batch call.
    #[rmi(name = "<batch>")]
    async fn batch(&self);
}

fn main() {}
