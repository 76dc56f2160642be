//! The contract shared by the callback examples, after Pyro's `callback` example: the server
//! calls back an object that the client serves from its own daemon.

// Each example uses part of this file: the server never serves a listener, the client never
// serves the notifier.
#![allow(dead_code)]

/// The client's callback object (Pyro's `CallbackHandler`).
#[rmi::remote]
pub(crate) trait Listener {
    /// Callback number `number` from the server; returns an acknowledgement, or refuses it.
    async fn notify(&self, number: u32, message: String) -> Result<String, String>;
}

/// The server's object (Pyro's `CallbackServer`): it takes the client's listener as an argument.
#[rmi::remote]
pub(crate) trait Notifier {
    /// Calls `listener` back `times` times and returns what it answered. The first callback
    /// that fails ends the call, and its error is this call's error.
    #[rmi(name = "doCallback")]
    async fn do_callback(&self, listener: ListenerProxy, times: u32)
        -> Result<Vec<String>, String>;
}

/// The server-side implementation.
pub(crate) struct CallbackServer;

impl Notifier for CallbackServer {
    async fn do_callback(
        &self,
        listener: ListenerProxy,
        times: u32,
    ) -> Result<Vec<String>, String> {
        // The listener proxy arrived as a URI; it dials the client's daemon on its first call.
        let mut acks = Vec::new();
        for number in 1..=times {
            println!(
                "server: doing callback {number} to {}",
                listener.proxy().uri()
            );
            match listener
                .notify(number, format!("callback {number} of {times}"))
                .await
            {
                Ok(Ok(ack)) => acks.push(ack),
                // The listener ran and refused: an application error, reported to our caller.
                Ok(Err(refused)) => {
                    println!("server: callback {number} failed: {refused}");
                    return Err(format!("callback {number} failed: {refused}"));
                }
                // The listener could not be reached (or panicked): an rmi::Error.
                Err(e) => {
                    println!("server: callback {number} could not be delivered: {e}");
                    return Err(format!("callback {number} could not be delivered: {e}"));
                }
            }
        }
        println!("server: callbacks done");
        Ok(acks)
    }
}

/// The client-side callback object: it refuses callback number `refuse`, if set.
pub(crate) struct CallbackHandler {
    /// The callback number this handler refuses.
    pub refuse: Option<u32>,
}

impl Listener for CallbackHandler {
    async fn notify(&self, number: u32, message: String) -> Result<String, String> {
        println!("client: callback {number} received from the server: {message:?}");
        if self.refuse == Some(number) {
            println!("client: refusing callback {number}; the server's caller will hear about it");
            return Err(format!("the listener refuses callback {number}"));
        }
        Ok(format!("ack {number}"))
    }
}
