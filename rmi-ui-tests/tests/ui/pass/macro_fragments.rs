//! Types that arrive as `macro_rules!` `$t:ty` fragments are seen through: a `()` for a oneway
//! method, a `RemoteStream<T>`, a `Vec<u8>` and a `Result` with `raises` are recognised as if
//! written out.

#![deny(warnings)]

use rmi::RemoteStream;

macro_rules! service {
    ($unit:ty, $stream:ty, $bytes:ty, $result:ty) => {
        /// A service whose types come from the macro's caller.
        #[rmi::remote]
        pub trait Feed {
            /// Oneway: returns `()`.
            #[rmi(oneway)]
            async fn ping(&self) -> $unit;
            /// Streamed.
            async fn items(&self) -> $stream;
            /// Bytes both ways.
            async fn echo(&self, data: $bytes) -> $bytes;
            /// Raises its error.
            #[rmi(raises)]
            async fn check(&self) -> $result;
        }
    };
}

service!((), RemoteStream<u32>, Vec<u8>, Result<u32, rmi::RemoteError>);

struct Impl;

impl Feed for Impl {
    async fn ping(&self) {}

    async fn items(&self) -> RemoteStream<u32> {
        RemoteStream::new(futures_util::stream::iter([1, 2]))
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn check(&self) -> Result<u32, rmi::RemoteError> {
        Ok(1)
    }
}

/// The proxy's types are the plain ones; never run, since there is no server.
async fn client(feed: FeedProxy) -> Result<(), rmi::Error> {
    let () = feed.ping().await?;
    let _: rmi::ItemStream<u32> = feed.items().await?;
    let _: Vec<u8> = feed.echo(vec![1]).await?;
    let _: u32 = feed.check().await?;
    Ok(())
}

fn main() {
    let _served: &dyn rmi::Dispatch = &FeedServer::new(Impl);
    let _ = client;
}
