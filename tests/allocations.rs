//! Heap allocations per call, counted: issue 10 asks for at most six per call, both ends, and
//! rmi makes five (the four `String`s of the greeting's argument and result, one of them the
//! caller's, and the `Dispatch` trait object's boxed future). With calls in flight together,
//! the proxy's reader task also copies a small reply out of its read buffer when a read ends
//! with it (so that the next read reuses the buffer): at most one a read, so at most six a
//! call, and how many depends on how the replies come in. A change that adds an allocation
//! to every call fails here.
//!
//! dhat's allocator counts the whole process, so this binary holds one test, whose daemon and
//! proxy share one thread.

use std::time::Duration;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The tutorial's contract.
#[rmi::remote]
pub trait Greeter {
    /// Returns `"Hi welcome " + name`.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

/// Calls counted in each phase, after as many uncounted ones.
const CALLS: u64 = 2_000;
/// Calls in flight at once in the pipelined phase.
const IN_FLIGHT: u64 = 64;

/// Allocations so far.
fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// `CALLS` calls, one after the other.
async fn sequential_round(proxy: &GreeterProxy) {
    for _ in 0..CALLS {
        let reply = proxy.welcome_message("Rashmi".to_owned()).await.unwrap();
        assert_eq!(reply, "Hi welcome Rashmi");
    }
}

/// Tells the `IN_FLIGHT` callers to make their calls, and waits for them all.
async fn pipelined_round(go: &tokio::sync::broadcast::Sender<()>, finished: &mut Receiver) {
    go.send(()).unwrap();
    for _ in 0..IN_FLIGHT {
        let calls = tokio::time::timeout(Duration::from_secs(60), finished.recv())
            .await
            .expect("the calls hung")
            .unwrap();
        if let Err(e) = calls {
            panic!("a call was answered {e}");
        }
    }
}

/// Each caller's word that its calls are done, or the wrong answer or error one of them got.
type Receiver = tokio::sync::mpsc::Receiver<Result<(), String>>;

#[test]
fn a_call_makes_five_allocations_both_ends_alone_or_with_63_others() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
        let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
        tokio::spawn({
            let daemon = daemon.clone();
            async move { daemon.serve().await }
        });
        let proxy = GreeterProxy::connect(&uri).await.unwrap();

        // A round uncounted, then a round counted.
        sequential_round(&proxy).await;
        let before = blocks();
        sequential_round(&proxy).await;
        let sequential = (blocks() - before) as f64 / CALLS as f64;

        // 64 tasks, spawned once, each making its share of the calls when told to.
        let (go, _) = tokio::sync::broadcast::channel::<()>(1);
        let (done, mut finished) = tokio::sync::mpsc::channel(IN_FLIGHT as usize);
        for _ in 0..IN_FLIGHT {
            let (proxy, mut go, done) = (proxy.clone(), go.subscribe(), done.clone());
            tokio::spawn(async move {
                while go.recv().await.is_ok() {
                    let mut calls = Ok(());
                    for _ in 0..CALLS / IN_FLIGHT {
                        match proxy.welcome_message("Rashmi".to_owned()).await {
                            Ok(reply) if reply == "Hi welcome Rashmi" => {}
                            other => {
                                calls = Err(format!("{other:?}"));
                                break;
                            }
                        }
                    }
                    done.send(calls).await.unwrap();
                }
            });
        }
        let calls = CALLS / IN_FLIGHT * IN_FLIGHT;
        pipelined_round(&go, &mut finished).await;
        let before = blocks();
        pipelined_round(&go, &mut finished).await;
        let pipelined = (blocks() - before) as f64 / calls as f64;

        println!("allocations per call: {sequential:.2} alone, {pipelined:.2} with 63 others");
        // Five each, and a little for what grows now and then (buffers, tables); among
        // others, up to one more, the reply copied out when a read ends with it.
        assert!(
            sequential < 5.5,
            "a sequential call makes {sequential:.2} allocations (five expected)"
        );
        assert!(
            pipelined < 6.1,
            "a call among 64 in flight makes {pipelined:.2} allocations (five to six expected)"
        );
        daemon.shutdown();
    });
}
