//! Properties: a getter, its setter (named after it, or by `name`), a getter alone, a setter
//! that raises, a `Vec<u8>` property, a property under `#[cfg]`.

use std::sync::Mutex;

#[rmi::remote]
pub trait Lamp {
    /// Whether it is on.
    #[rmi(property)]
    async fn on(&self) -> bool;
    /// Turns it on or off.
    #[rmi(setter)]
    async fn set_on(&self, on: bool);
    /// Its brightness, 0 to 100.
    #[rmi(property, name = "brightnessLevel")]
    async fn brightness(&self) -> u8;
    /// Sets it; over 100 is a `ValueError`.
    #[rmi(setter, name = "brightnessLevel", raises)]
    async fn dim(&self, level: u8) -> Result<(), rmi::RemoteError>;
    /// Read only.
    #[rmi(property)]
    async fn serial(&self) -> Vec<u8>;
    /// A method beside them.
    async fn toggle(&self) -> bool;
    /// A property for one platform only.
    #[cfg(unix)]
    #[rmi(property)]
    async fn socket(&self) -> String;
    /// Its setter.
    #[cfg(unix)]
    #[rmi(setter)]
    async fn set_socket(&self, path: String);
}

struct Bulb(Mutex<(bool, u8)>);

impl Lamp for Bulb {
    async fn on(&self) -> bool {
        self.0.lock().unwrap().0
    }
    async fn set_on(&self, on: bool) {
        self.0.lock().unwrap().0 = on;
    }
    async fn brightness(&self) -> u8 {
        self.0.lock().unwrap().1
    }
    async fn dim(&self, level: u8) -> Result<(), rmi::RemoteError> {
        if level > 100 {
            return Err(rmi::RemoteError::new(
                rmi::RemoteErrorKind::Other,
                "builtins.ValueError",
                "over 100",
            ));
        }
        self.0.lock().unwrap().1 = level;
        Ok(())
    }
    async fn serial(&self) -> Vec<u8> {
        b"L-1".to_vec()
    }
    async fn toggle(&self) -> bool {
        let mut state = self.0.lock().unwrap();
        state.0 = !state.0;
        state.0
    }
    #[cfg(unix)]
    async fn socket(&self) -> String {
        String::new()
    }
    #[cfg(unix)]
    async fn set_socket(&self, _path: String) {}
}

fn main() {
    let _server = LampServer::new(Bulb(Mutex::new((false, 50))));
    let _ = |p: LampProxy| async move {
        let _: Result<bool, rmi::Error> = p.on().await;
        let _: Result<(), rmi::Error> = p.set_on(true).await;
        let _: Result<(), rmi::Error> = p.dim(5).await;
        let _: Result<Vec<u8>, rmi::Error> = p.serial().await;
    };
    let _ = |p: LampBlockingProxy| -> Result<u8, rmi::Error> { p.brightness() };
}
