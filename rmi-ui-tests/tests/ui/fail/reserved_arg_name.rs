#[rmi::remote]
pub trait Echo {
    async fn echo(&self, __args: u32) -> u32;
}

fn main() {}
