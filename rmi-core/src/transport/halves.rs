//! The two halves of a connection's stream: a TCP or Unix stream split without a lock, any
//! other (TLS, an in-memory duplex) through `tokio::io::split`.
//!
//! `tokio::io::split` puts the stream behind a mutex that every poll of either half takes and
//! releases: two atomic operations per read, write or flush, about a dozen per call counting
//! both ends, though the halves are never used at once from two threads in a way that needs
//! it. A socket's own halves (`into_split`) share it by reference count alone.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::BoxIo;

/// The read half of a [`BoxIo`] (see [`split_io`](super::split_io)).
pub struct IoReadHalf(Read);

/// The write half of a [`BoxIo`]. Dropped, a socket's write half shuts down its direction
/// of the connection, as a `shutdown` would; the other streams' does nothing.
pub struct IoWriteHalf(Write);

enum Read {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
    Other(tokio::io::ReadHalf<BoxIo>),
}

enum Write {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
    Other(tokio::io::WriteHalf<BoxIo>),
}

impl std::fmt::Debug for IoReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Read::Tcp(_) => "IoReadHalf(tcp)",
            #[cfg(unix)]
            Read::Unix(_) => "IoReadHalf(unix)",
            Read::Other(_) => "IoReadHalf",
        })
    }
}

impl std::fmt::Debug for IoWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Write::Tcp(_) => "IoWriteHalf(tcp)",
            #[cfg(unix)]
            Write::Unix(_) => "IoWriteHalf(unix)",
            Write::Other(_) => "IoWriteHalf",
        })
    }
}

/// Splits `stream` into its halves: a TCP or Unix stream by its own `into_split`, any other
/// through `tokio::io::split`.
pub(super) fn halves(stream: BoxIo) -> (IoReadHalf, IoWriteHalf) {
    let inside: &dyn Any = &*stream;
    // (Asked first, by reference: a failed downcast of the box would lose the stream.)
    if inside.is::<tokio::net::TcpStream>() {
        let any: Box<dyn Any> = stream;
        let tcp = any.downcast::<tokio::net::TcpStream>().expect("just asked");
        let (rd, wr) = tcp.into_split();
        return (IoReadHalf(Read::Tcp(rd)), IoWriteHalf(Write::Tcp(wr)));
    }
    #[cfg(unix)]
    if inside.is::<tokio::net::UnixStream>() {
        let any: Box<dyn Any> = stream;
        let unix = any
            .downcast::<tokio::net::UnixStream>()
            .expect("just asked");
        let (rd, wr) = unix.into_split();
        return (IoReadHalf(Read::Unix(rd)), IoWriteHalf(Write::Unix(wr)));
    }
    let (rd, wr) = tokio::io::split(stream);
    (IoReadHalf(Read::Other(rd)), IoWriteHalf(Write::Other(wr)))
}

impl AsyncRead for IoReadHalf {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Read::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            #[cfg(unix)]
            Read::Unix(rd) => Pin::new(rd).poll_read(cx, buf),
            Read::Other(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for IoWriteHalf {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Write::Tcp(wr) => Pin::new(wr).poll_write(cx, buf),
            #[cfg(unix)]
            Write::Unix(wr) => Pin::new(wr).poll_write(cx, buf),
            Write::Other(wr) => Pin::new(wr).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Write::Tcp(wr) => Pin::new(wr).poll_flush(cx),
            #[cfg(unix)]
            Write::Unix(wr) => Pin::new(wr).poll_flush(cx),
            Write::Other(wr) => Pin::new(wr).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Write::Tcp(wr) => Pin::new(wr).poll_shutdown(cx),
            #[cfg(unix)]
            Write::Unix(wr) => Pin::new(wr).poll_shutdown(cx),
            Write::Other(wr) => Pin::new(wr).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Write::Tcp(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Write::Unix(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
            Write::Other(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Write::Tcp(wr) => wr.is_write_vectored(),
            #[cfg(unix)]
            Write::Unix(wr) => wr.is_write_vectored(),
            Write::Other(wr) => wr.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Splits `ours` and exercises both halves against `theirs`: bytes both ways, then a
    /// shutdown that the peer reads as the end of the stream. Returns how the halves print.
    async fn both_ways(ours: BoxIo, mut theirs: impl AsyncRead + AsyncWrite + Unpin) -> String {
        let (mut rd, mut wr) = halves(ours);
        let printed = format!("{rd:?} {wr:?}");
        wr.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        theirs.write_all(b"pong").await.unwrap();
        rd.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        wr.shutdown().await.unwrap();
        assert_eq!(theirs.read(&mut got).await.unwrap(), 0, "end of stream");
        printed
    }

    #[tokio::test]
    async fn a_tcp_stream_splits_into_its_own_halves() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let printed = both_ways(Box::new(ours.unwrap()), theirs.unwrap().0).await;
        assert_eq!(printed, "IoReadHalf(tcp) IoWriteHalf(tcp)");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_unix_stream_splits_into_its_own_halves() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let printed = both_ways(Box::new(ours), theirs).await;
        assert_eq!(printed, "IoReadHalf(unix) IoWriteHalf(unix)");
    }

    #[tokio::test]
    async fn any_other_stream_splits_through_tokio() {
        let (ours, theirs) = tokio::io::duplex(64);
        let printed = both_ways(Box::new(ours), theirs).await;
        assert_eq!(printed, "IoReadHalf IoWriteHalf");
    }
}
