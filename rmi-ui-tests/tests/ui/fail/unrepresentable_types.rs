//! Types the generated code cannot give one meaning: `!` (a nightly feature in the generated
//! `Result<!, _>`), `Self` (the proxy, the server and a batch are each a different `Self`); and
//! `r#__args`, which is the reserved `__args`.

#[rmi::remote]
pub trait Odd: Sized {
    async fn forever(&self) -> !;
    async fn copy(&self) -> Self;
    async fn pair(&self, other: Vec<Self>) -> u32;
    async fn raw(&self, r#__args: u32) -> u32;
}

fn main() {}
