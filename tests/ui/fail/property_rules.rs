//! A property's getter takes no argument; a setter takes one, returns nothing, and is named
//! after its property; neither is oneway or a stream, and no method is both.

#[rmi::remote]
pub trait Thermostat {
    #[rmi(property)]
    async fn target(&self, unit: String) -> f64;
    #[rmi(setter)]
    async fn set_mode(&self, mode: String, now: bool);
    #[rmi(setter)]
    async fn set_level(&self, level: u32) -> u32;
    #[rmi(setter)]
    async fn adjust(&self, by: f64);
    #[rmi(property, oneway)]
    async fn ping(&self);
    #[rmi(property)]
    async fn readings(&self) -> rmi::RemoteStream<f64>;
    #[rmi(property, setter)]
    async fn set_both(&self, x: u8);
}

fn main() {}
