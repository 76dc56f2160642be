//! Instance modes, after Pyro's `instancemode` example, with a small bank: one account shared by
//! everyone (single), one per client connection (session), a fresh one for every call
//! (percall), and `one_at_a_time()`, which runs an instance's calls one after another.
//!
//! Every account has an instance number, printed when it is made and when it is dropped, so
//! the lifetimes show.
//!
//! Run with `cargo run --example instance_modes`; it listens on 127.0.0.1 and exits 0.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use rmi::{Daemon, Registration};

/// A bank account.
#[rmi::remote]
pub trait Account {
    /// Adds `amount`; returns the new balance.
    async fn deposit(&self, amount: u64) -> u64;
    /// Adds `amount` like a slow teller: reads the balance, waits, writes it back. Calls that
    /// overlap lose each other's deposits.
    async fn slow_deposit(&self, amount: u64) -> u64;
    /// The balance.
    async fn balance(&self) -> u64;
    /// Which instance answered.
    async fn instance(&self) -> u32;
}

/// Instances made so far (the next one gets this number plus one).
static MADE: AtomicU32 = AtomicU32::new(0);
/// Instances dropped so far.
static DROPPED: AtomicU32 = AtomicU32::new(0);

struct BankAccount {
    id: u32,
    balance: AtomicU64,
}

impl BankAccount {
    fn new() -> Self {
        let id = MADE.fetch_add(1, Ordering::SeqCst) + 1;
        println!("    [server] account instance #{id} made");
        BankAccount {
            id,
            balance: AtomicU64::new(0),
        }
    }
}

impl Drop for BankAccount {
    fn drop(&mut self) {
        println!(
            "    [server] account instance #{} dropped (balance {})",
            self.id,
            self.balance.load(Ordering::SeqCst)
        );
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

impl Account for BankAccount {
    async fn deposit(&self, amount: u64) -> u64 {
        self.balance.fetch_add(amount, Ordering::SeqCst) + amount
    }

    async fn slow_deposit(&self, amount: u64) -> u64 {
        let read = self.balance.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.balance.store(read + amount, Ordering::SeqCst);
        read + amount
    }

    async fn balance(&self) -> u64 {
        self.balance.load(Ordering::SeqCst)
    }

    async fn instance(&self) -> u32 {
        self.id
    }
}

/// Waits until `n` instances in all have been dropped (drops happen on the server's tasks).
async fn dropped(n: u32) {
    for _ in 0..500 {
        if DROPPED.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = Daemon::bind("127.0.0.1:0").await?;
    let server = tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });

    println!("single: one instance, made now, shared by every client");
    let uri = daemon.register(AccountServer::new(BankAccount::new()))?;
    let (alice, bob) = (
        AccountProxy::connect(&uri).await?,
        AccountProxy::connect(&uri).await?,
    );
    println!(
        "  alice deposits 10 -> balance {} (instance #{})",
        alice.deposit(10).await?,
        alice.instance().await?
    );
    println!(
        "  bob deposits 5    -> balance {} (instance #{})",
        bob.deposit(5).await?,
        bob.instance().await?
    );

    println!("\nsession: one instance per client connection, made on its first call");
    let uri = daemon.register_session(|| AccountServer::new(BankAccount::new()))?;
    let (alice, bob) = (
        AccountProxy::connect(&uri).await?,
        AccountProxy::connect(&uri).await?,
    );
    println!("  (connected twice; no instance yet)");
    println!(
        "  alice deposits 10 -> balance {} (instance #{})",
        alice.deposit(10).await?,
        alice.instance().await?
    );
    println!(
        "  bob deposits 5    -> balance {} (instance #{})",
        bob.deposit(5).await?,
        bob.instance().await?
    );
    let alice_again = alice.clone();
    println!(
        "  a clone of alice's proxy shares her connection -> balance {} (instance #{})",
        alice_again.deposit(1).await?,
        alice_again.instance().await?
    );
    println!("  alice disconnects:");
    alice.proxy().close();
    dropped(1).await;
    println!(
        "  bob's account lives on -> balance {}",
        bob.balance().await?
    );
    drop((alice, alice_again));

    println!("\npercall: a fresh instance for every call");
    let uri = daemon.register_percall(|| AccountServer::new(BankAccount::new()))?;
    let carol = AccountProxy::connect(&uri).await?;
    for _ in 0..2 {
        println!(
            "  carol deposits 10 -> balance {}",
            carol.deposit(10).await?
        );
    }
    dropped(3).await;

    println!("\none_at_a_time: 10 overlapping slow deposits of 10 into one account");
    let racy = daemon.register(AccountServer::new(BankAccount::new()))?;
    let serial = daemon.register_entry(
        Registration::instance(AccountServer::new(BankAccount::new())).one_at_a_time(),
    )?;
    for (label, uri) in [("concurrent calls", racy), ("one_at_a_time()", serial)] {
        let account = AccountProxy::connect(&uri).await?;
        join_all((0..10).map(|_| account.slow_deposit(10)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "  {label:<16} -> balance {} (100 expected)",
            account.balance().await?
        );
    }

    println!("\nshutting down: bob's session ends with his connection, the shared instances with the daemon");
    daemon.shutdown();
    server.await.expect("daemon task")?;
    drop(daemon);
    drop((bob, carol));
    Ok(())
}
