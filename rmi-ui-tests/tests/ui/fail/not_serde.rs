//! A type without serde's traits in a signature is named where it is written.

pub struct Point {
    pub x: i32,
}

#[rmi::remote]
pub trait Geo {
    async fn origin(&self) -> Point;
    async fn move_to(&self, to: Vec<Point>) -> bool;
}

fn main() {}
