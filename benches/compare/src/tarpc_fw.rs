//! tarpc 0.38 over its serde transport with tokio-serde's bincode format (length-delimited
//! frames over TCP, `TCP_NODELAY`); the server spawns a task per request, as tarpc's
//! examples do.

use std::net::SocketAddr;

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tarpc::{client, context};
use tokio::net::{TcpListener, TcpStream};

#[tarpc::service]
pub trait Bench {
    /// Returns `"Hi welcome " + name`.
    async fn greet(name: String) -> String;
    /// Returns the length of `data`.
    async fn blob_len(data: Vec<u8>) -> u64;
}

#[derive(Clone)]
struct Srv;

impl Bench for Srv {
    async fn greet(self, _: context::Context, name: String) -> String {
        format!("Hi welcome {name}")
    }
    async fn blob_len(self, _: context::Context, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
}

/// tarpc's default frame limit (tokio-util's 8 MiB) is below the 10 MB argument.
const MAX_FRAME: usize = 64 << 20;

fn framed(stream: TcpStream) -> Framed<TcpStream, LengthDelimitedCodec> {
    stream.set_nodelay(true).expect("nodelay");
    Framed::new(
        stream,
        LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec(),
    )
}

/// Listens on a fresh loopback port; run on the server runtime.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("tarpc bind");
    let addr = listener.local_addr().expect("tarpc addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(Srv.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    }),
            );
        }
    });
    addr
}

pub async fn connect(addr: SocketAddr) -> BenchClient {
    let stream = TcpStream::connect(addr).await.expect("tarpc connect");
    let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
    BenchClient::new(client::Config::default(), transport).spawn()
}
