//! A trait using every supported feature builds without warnings, and the generated items
//! are documented.

#![deny(warnings)]
#![deny(missing_docs)]

use std::sync::Arc;

/// A calculator served over rmi.
#[rmi::remote]
pub trait Calculator {
    /// Takes no arguments.
    async fn zero(&self) -> u64;
    /// Takes several arguments.
    async fn add(&self, a: u64, b: u64, c: u64) -> u64;
    /// Returns an application error as `Result<U, E>`.
    #[rmi(name = "checkedDiv")]
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String>;
    /// Returns nothing.
    async fn reset(&self);
    /// Takes owned containers and tuples.
    async fn sum(&self, values: Vec<u64>, pair: (u8, Option<String>)) -> u64;
    /// Compiled out: neither the impl nor the generated items have it.
    #[cfg(any())]
    async fn disabled(&self, x: u64) -> u64;
    /// Has a default body, so implementations may leave it out.
    async fn version(&self) -> String {
        String::from("1.0")
    }
}

struct Impl;

impl Calculator for Impl {
    async fn zero(&self) -> u64 {
        0
    }

    async fn add(&self, a: u64, b: u64, c: u64) -> u64 {
        a + b + c
    }

    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String> {
        a.checked_div(b).ok_or_else(|| String::from("division by zero"))
    }

    async fn reset(&self) {}

    async fn sum(&self, values: Vec<u64>, pair: (u8, Option<String>)) -> u64 {
        values.iter().sum::<u64>() + u64::from(pair.0) + pair.1.map_or(0, |s| s.len() as u64)
    }
}

/// Calls every method of the proxy; never run, since there is no server.
async fn client(uri: String) -> Result<(), rmi::Error> {
    let calc = CalculatorProxy::connect(uri.as_str()).await?;
    let zero: u64 = calc.zero().await?;
    let total: u64 = calc.add(zero, 2, 3).await?;
    let quotient: Result<u64, String> = calc.checked_div(total, 0).await?;
    let () = calc.reset().await?;
    let sum: u64 = calc.sum(vec![1, 2], (3, Some(String::from("four")))).await?;
    let version: String = calc.version().await?;
    let _ = (quotient, sum, version);

    // The other ways to make a proxy, and back.
    let untyped: rmi::Proxy = calc.clone().into_proxy();
    let _same = CalculatorProxy::from_proxy(untyped.clone());
    let _also = CalculatorProxy::from(untyped);
    let _: &rmi::Proxy = calc.proxy();
    let _builder: rmi::ProxyBuilder = CalculatorProxy::builder(uri.as_str())?;
    Ok(())
}

fn main() {
    let server = CalculatorServer::new(Impl);
    let shared = CalculatorServer::from_arc(Arc::new(Impl));
    let _: &Impl = shared.get_ref();
    let _served: &dyn rmi::Dispatch = &server.clone();
    let _ = client;
}
