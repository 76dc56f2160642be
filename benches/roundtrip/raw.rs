//! The raw TCP floor: a server answering fixed-size frames and clients that keep the same
//! number of frames in flight as rmi does, moving the same bytes and doing nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{Frames, IN_FLIGHT};

/// A raw server on a fresh port: per connection, read fixed-size requests and answer each with
/// a fixed-size reply, flushing whenever no whole request is buffered (so pipelined requests get
/// coalesced replies, like rmi's writer does).
pub(crate) async fn raw_server(
    request_len: usize,
    reply: Arc<Vec<u8>>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw");
    let addr = listener.local_addr().expect("raw addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                stream.set_nodelay(true).expect("nodelay");
                let (rd, wr) = stream.into_split();
                let mut rd = BufReader::with_capacity(64 * 1024, rd);
                let mut wr = BufWriter::with_capacity(64 * 1024, wr);
                let mut request = vec![0u8; request_len];
                while rd.read_exact(&mut request).await.is_ok() {
                    if wr.write_all(&reply).await.is_err() {
                        return;
                    }
                    if rd.buffer().len() < request_len && wr.flush().await.is_err() {
                        return;
                    }
                }
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
            });
        }
    });
    (addr, task)
}

pub(crate) async fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect raw");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A sequential raw client: one `write_all` of the request frame, one `read_exact` of the reply.
pub(crate) struct RawPingPong {
    stream: TcpStream,
    request: Arc<Vec<u8>>,
    reply: Vec<u8>,
    server: JoinHandle<()>,
}

impl RawPingPong {
    pub(crate) async fn start(request: Arc<Vec<u8>>, reply: Arc<Vec<u8>>) -> RawPingPong {
        let (addr, server) = raw_server(request.len(), reply.clone()).await;
        let stream = raw_connect(addr).await;
        RawPingPong {
            stream,
            request,
            reply: vec![0u8; reply.len()],
            server,
        }
    }

    /// One exchange; returns how long it took.
    pub(crate) async fn call(&mut self) -> Duration {
        let t = Instant::now();
        self.stream
            .write_all(&self.request)
            .await
            .expect("raw write");
        self.stream
            .read_exact(&mut self.reply)
            .await
            .expect("raw read");
        t.elapsed()
    }
}

impl Drop for RawPingPong {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One pipelined raw socket: a writer task keeps `depth` requests outstanding (writing every
/// free slot in one `write_all`) until `deadline`, then half-closes; a reader counts replies
/// until the server closes. Returns the replies received.
pub(crate) async fn raw_pipelined_socket(
    addr: SocketAddr,
    depth: usize,
    request: Arc<Vec<u8>>,
    reply_len: usize,
    deadline: Instant,
) -> u64 {
    let (rd, mut wr) = raw_connect(addr).await.into_split();
    let slots = Arc::new(Semaphore::new(depth));
    let writer = tokio::spawn({
        let slots = slots.clone();
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

/// One pipelined raw run of `time` over `connections` sockets with `IN_FLIGHT` frames
/// outstanding in total; returns calls/s.
pub(crate) async fn raw_throughput_run(
    addr: SocketAddr,
    frames: &Frames,
    connections: usize,
    time: Duration,
) -> f64 {
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let request = frames.request.clone();
            let reply_len = frames.reply.len();
            tokio::spawn(raw_pipelined_socket(
                addr,
                IN_FLIGHT / connections,
                request,
                reply_len,
                deadline,
            ))
        })
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("raw socket task");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}
