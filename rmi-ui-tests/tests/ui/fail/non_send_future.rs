//! A remote method's future must be `Send` (the daemon spawns calls); holding an `Rc` across
//! an `.await` is reported at the implementation, not inside generated code.

use std::rc::Rc;

#[rmi::remote]
pub trait Counter {
    /// Returns the count.
    async fn count(&self) -> u64;
}

async fn tick() {}

struct Local;

impl Counter for Local {
    async fn count(&self) -> u64 {
        let shared = Rc::new(1u64);
        tick().await;
        *shared
    }
}

fn main() {
    let _ = CounterServer::new(Local);
}
