//! Methods and parameters named as in Python (`setVolume(newLevel)`), under the trait's own
//! `#[allow(non_snake_case)]`: the generated proxy, batch and blocking proxy warn of nothing.

#![deny(warnings)]

/// A mixer with Python's names.
#[rmi::remote]
#[allow(non_snake_case)]
pub trait Mixer {
    /// Sets the volume.
    async fn setVolume(&self, newLevel: u32) -> u32;
    /// Tells the volume.
    async fn currentVolume(&self) -> u32;
}

fn main() {
    async fn _uses(p: &MixerProxy) -> Result<u32, rmi::Error> {
        let mut batch = p.batch();
        let _slot = batch.setVolume(3);
        p.setVolume(2).await
    }
    fn _blocks(p: &MixerBlockingProxy) -> Result<u32, rmi::Error> {
        p.currentVolume()
    }
}
