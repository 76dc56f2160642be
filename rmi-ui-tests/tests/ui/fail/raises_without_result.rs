#[rmi::remote]
pub trait Store {
    #[rmi(raises)]
    async fn put(&self, value: String) -> u32;
}

fn main() {}
