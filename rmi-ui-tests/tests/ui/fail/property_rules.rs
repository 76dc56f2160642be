//! A property's getter takes no argument; a setter takes one, returns nothing, and is named
//! after its property; neither is oneway or a stream, no method is both, no method shares a
//! property's name, and a property's name is not private.

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
    /// A method and a property cannot share a name: Python's proxy asks its attrs first.
    #[rmi(property)]
    async fn power(&self) -> u8;
    #[rmi(name = "power")]
    async fn power_method(&self) -> u8;
    #[rmi(setter)]
    async fn set_mode2(&self, m: u8);
    #[rmi(name = "mode2")]
    async fn mode_method(&self);
    /// Private to Python.
    #[rmi(setter)]
    async fn set__secret(&self, s: u8);
}

fn main() {}
