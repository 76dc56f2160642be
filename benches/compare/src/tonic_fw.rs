//! tonic 0.14 with prost: HTTP/2 over TCP (`TCP_NODELAY` on both ends); one `Channel` is one
//! connection, its clones multiplex calls over it.

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

pub mod pb {
    tonic::include_proto!("bench");
}

use pb::bench_server::{Bench, BenchServer};
use pb::{Blob, BlobLenReply, GreetReply, GreetRequest};

pub type Client = pb::bench_client::BenchClient<Channel>;

struct Srv;

#[tonic::async_trait]
impl Bench for Srv {
    async fn greet(&self, req: Request<GreetRequest>) -> Result<Response<GreetReply>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(GreetReply {
            message: format!("Hi welcome {name}"),
        }))
    }
    async fn blob_len(&self, req: Request<Blob>) -> Result<Response<BlobLenReply>, Status> {
        Ok(Response::new(BlobLenReply {
            len: req.into_inner().data.len() as u64,
        }))
    }
}

/// tonic's default decoding limit (4 MiB) is below the 10 MB argument.
const MAX_MESSAGE: usize = 64 << 20;

/// Listens on a fresh loopback port; run on the server runtime.
pub async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tonic bind");
    let addr = listener.local_addr().expect("tonic addr");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = BenchServer::new(Srv)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("tonic endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("tonic connect");
    Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}
