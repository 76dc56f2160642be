//! Wire names the runtime uses itself, and names starting with `_`, are reserved.

#[rmi::remote]
pub trait Object {
    /// Would shadow Pyro's attribute access.
    #[rmi(name = "__getattr__")]
    async fn get_attr(&self, name: String) -> String;
    /// A leading underscore from the Rust name is reserved too.
    async fn _private(&self);
    /// Would shadow Pyro's batch call.
    #[rmi(name = "<batch>")]
    async fn batch(&self);
}

fn main() {}
