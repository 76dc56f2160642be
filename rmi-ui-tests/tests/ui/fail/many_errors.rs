//! Every broken rule is reported in one compile, not just the first.

#[rmi::remote]
pub trait Everything<T> {
    /// Associated items other than methods.
    type Output;
    /// Not async.
    fn sync(&self) -> u32;
    /// Mutable receiver.
    async fn mutate(&mut self);
    /// No receiver.
    async fn associated();
    /// Borrowed argument.
    async fn borrow(&self, name: &str);
    /// `impl Trait` argument.
    async fn opaque(&self, name: impl Into<String>);
    /// Borrowed return type.
    async fn lend(&self) -> &str;
    /// Pattern argument (with a body, so that rustc itself accepts the pattern).
    async fn pattern(&self, (a, b): (u32, u32)) -> u32 {
        a + b
    }
    /// Generic method.
    async fn generic<V>(&self, value: V);
    /// Reserved Rust name.
    async fn builder(&self);
    /// Unknown option.
    #[rmi(bogus)]
    async fn option(&self);
    /// Empty wire name.
    #[rmi(name = "")]
    async fn empty(&self);
    /// Reserved wire name.
    #[rmi(name = "__setattr__")]
    async fn set_attr(&self);
    /// First of a duplicate pair.
    #[rmi(name = "same")]
    async fn first(&self);
    /// Second of a duplicate pair.
    #[rmi(name = "same")]
    async fn second(&self);
}

fn main() {}
