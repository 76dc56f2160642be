//! The raw TCP floor: fixed-size request and reply frames (the sizes of rawmux's frames for the
//! same call), `TCP_NODELAY`, nothing else. The server `read_exact`s a request and writes the
//! reply, flushing whenever no whole request is buffered; pipelined clients keep `depth`
//! requests outstanding per socket, writing every free slot in one `write_all`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A request and reply frame pair.
#[derive(Clone)]
pub struct Frames {
    pub request: Arc<Vec<u8>>,
    pub reply: Arc<Vec<u8>>,
}

/// A server answering `frames.request`-sized requests with `frames.reply`; run on the
/// server runtime.
pub async fn start(frames: Frames) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("raw bind");
    let addr = listener.local_addr().expect("raw addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                stream.set_nodelay(true).expect("nodelay");
                let (rd, wr) = stream.into_split();
                let cap = (64 * 1024).min(frames.request.len().max(4096));
                let mut rd = BufReader::with_capacity(cap, rd);
                let mut wr = BufWriter::with_capacity(64 * 1024, wr);
                let mut request = vec![0u8; frames.request.len()];
                while rd.read_exact(&mut request).await.is_ok() {
                    if wr.write_all(&frames.reply).await.is_err() {
                        return;
                    }
                    if rd.buffer().len() < request.len() && wr.flush().await.is_err() {
                        return;
                    }
                }
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("raw connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A sequential client: one `write_all` of the request, one `read_exact` of the reply.
pub struct PingPong {
    stream: TcpStream,
    request: Arc<Vec<u8>>,
    reply: Vec<u8>,
}

impl PingPong {
    pub async fn connect(addr: SocketAddr, frames: &Frames) -> PingPong {
        PingPong {
            stream: connect(addr).await,
            request: frames.request.clone(),
            reply: vec![0u8; frames.reply.len()],
        }
    }

    pub async fn call(&mut self) {
        self.stream
            .write_all(&self.request)
            .await
            .expect("raw write");
        self.stream
            .read_exact(&mut self.reply)
            .await
            .expect("raw read");
    }
}

/// One pipelined socket until `deadline`: returns the replies received.
async fn pipelined_socket(
    addr: SocketAddr,
    depth: usize,
    frames: Frames,
    deadline: Instant,
) -> u64 {
    let (rd, mut wr) = connect(addr).await.into_split();
    let slots = Arc::new(Semaphore::new(depth));
    let writer = tokio::spawn({
        let slots = slots.clone();
        let request = frames.request.clone();
        async move {
            let mut batch = Vec::with_capacity(depth * request.len());
            while Instant::now() < deadline {
                slots.acquire().await.expect("slots").forget();
                let mut n = 1;
                while n < depth {
                    match slots.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                batch.clear();
                for _ in 0..n {
                    batch.extend_from_slice(&request);
                }
                wr.write_all(&batch).await.expect("raw pipelined write");
            }
            let _ = wr.shutdown().await;
        }
    });
    let reply_len = frames.reply.len();
    let reader = tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut reply = vec![0u8; reply_len];
        let mut count = 0u64;
        while rd.read_exact(&mut reply).await.is_ok() {
            count += 1;
            slots.add_permits(1);
        }
        count
    });
    writer.await.expect("raw writer");
    reader.await.expect("raw reader")
}

/// `connections` pipelined sockets with `depth` requests outstanding each, for `time`
/// (sockets opened inside the window); returns the calls completed.
pub async fn pipelined_run(
    addr: SocketAddr,
    frames: &Frames,
    connections: usize,
    depth: usize,
    time: Duration,
) -> u64 {
    let deadline = Instant::now() + time;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(pipelined_socket(addr, depth, frames.clone(), deadline)))
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("raw socket task");
    }
    calls
}
