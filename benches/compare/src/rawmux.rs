//! "rawmux": a minimal hand-written RPC multiplexer, the floor for a framework that
//! multiplexes calls over one connection the usual way. Per call: an id, a oneshot, an entry
//! in a map of pending calls and an mpsc send to the connection's writer task. The server
//! spawns a task per request. Frames over TCP (`TCP_NODELAY`):
//!
//! - request: `u32 len | u64 id | u8 method | payload` (`len` counts what follows it);
//! - reply: `u32 len | u64 id | payload`.
//!
//! Methods: 0 = greet (payload a name, reply `"Hi welcome " + name`), 1 = blob length
//! (reply the length as 8 little-endian bytes). Writers drain their queue before each flush,
//! so replies and requests are coalesced under load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub const GREET: u8 = 0;
pub const BLOB_LEN: u8 = 1;
const BUF: usize = 64 * 1024;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// A connection; clones share it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    next_id: AtomicU64,
    pending: Pending,
    tx: mpsc::UnboundedSender<(u64, u8, Bytes)>,
}

pub async fn connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.expect("rawmux connect");
    stream.set_nodelay(true).expect("nodelay");
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let pending: Pending = Arc::default();
    tokio::spawn(client_writer(wr, rx));
    tokio::spawn(client_reader(rd, pending.clone()));
    Client {
        inner: Arc::new(Inner {
            next_id: AtomicU64::new(0),
            pending,
            tx,
        }),
    }
}

impl Client {
    /// One call: returns the reply payload.
    pub async fn call(&self, method: u8, payload: Bytes) -> Vec<u8> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap().insert(id, tx);
        self.inner
            .tx
            .send((id, method, payload))
            .expect("rawmux writer gone");
        rx.await.expect("rawmux reply")
    }
}

async fn client_writer(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<(u64, u8, Bytes)>) {
    let mut w = BufWriter::with_capacity(BUF, wr);
    while let Some(mut msg) = rx.recv().await {
        loop {
            let (id, method, payload) = msg;
            let mut head = [0u8; 13];
            head[..4].copy_from_slice(&((9 + payload.len()) as u32).to_be_bytes());
            head[4..12].copy_from_slice(&id.to_be_bytes());
            head[12] = method;
            if w.write_all(&head).await.is_err() || w.write_all(&payload).await.is_err() {
                return;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn client_reader(rd: OwnedReadHalf, pending: Pending) {
    let mut r = BufReader::with_capacity(BUF, rd);
    loop {
        let Ok(len) = r.read_u32().await else { return };
        let Ok(id) = r.read_u64().await else { return };
        let mut payload = vec![0u8; len as usize - 8];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        if let Some(tx) = pending.lock().unwrap().remove(&id) {
            let _ = tx.send(payload);
        }
    }
}

/// Listens on a fresh loopback port; run on the server runtime.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("rawmux bind");
    let addr = listener.local_addr().expect("rawmux addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream));
        }
    });
    addr
}

fn handle(method: u8, payload: Vec<u8>) -> Vec<u8> {
    match method {
        GREET => format!("Hi welcome {}", String::from_utf8_lossy(&payload)).into_bytes(),
        _ => (payload.len() as u64).to_le_bytes().to_vec(),
    }
}

async fn serve_connection(stream: TcpStream) {
    stream.set_nodelay(true).expect("nodelay");
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<(u64, Vec<u8>)>();
    tokio::spawn(server_writer(wr, rx));
    let mut r = BufReader::with_capacity(BUF, rd);
    loop {
        let Ok(len) = r.read_u32().await else { return };
        let Ok(id) = r.read_u64().await else { return };
        let Ok(method) = r.read_u8().await else {
            return;
        };
        let mut payload = vec![0u8; len as usize - 9];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send((id, handle(method, payload)));
        });
    }
}

async fn server_writer(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<(u64, Vec<u8>)>) {
    let mut w = BufWriter::with_capacity(BUF, wr);
    while let Some(mut msg) = rx.recv().await {
        loop {
            let (id, reply) = msg;
            let mut head = [0u8; 12];
            head[..4].copy_from_slice(&((8 + reply.len()) as u32).to_be_bytes());
            head[4..].copy_from_slice(&id.to_be_bytes());
            if w.write_all(&head).await.is_err() || w.write_all(&reply).await.is_err() {
                return;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
