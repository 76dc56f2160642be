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

impl IoReadHalf {
    /// Whether bytes, the end of the stream or an error may have come since a read last found
    /// nothing, asked without reading and without registering for a wake-up: `Some(false)`
    /// when the runtime has seen nothing new on the socket since, `None` for the streams that
    /// cannot tell (TLS, in-memory).
    pub fn may_have_news(&self) -> Option<bool> {
        // An empty read: refused at once (`WouldBlock`) while the socket is not marked
        // readable, and otherwise a `recv` of no bytes, which takes nothing off the socket.
        let probe = match &self.0 {
            Read::Tcp(rd) => rd.try_read(&mut []),
            #[cfg(unix)]
            Read::Unix(rd) => rd.try_read(&mut []),
            Read::Other(_) => return None,
        };
        Some(!matches!(probe, Err(e) if e.kind() == io::ErrorKind::WouldBlock))
    }
}

impl IoReadHalf {
    /// Ready with the error when the connection has failed (the peer reset it), asked without
    /// taking a byte. Pending otherwise: while bytes wait to be read, after a clean end of
    /// stream (a half-closed peer still reads its replies), and always for the streams that
    /// cannot tell (TLS, Unix, in-memory). For a reader that is not reading now (its
    /// connection waits for room) but wants to know that its peer is gone.
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Read::Tcp(rd) = &mut self.0 else {
            return Poll::Pending;
        };
        let mut byte = [0u8; 1];
        match rd.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
            Poll::Ready(Err(e)) => Poll::Ready(e),
            // Bytes, or the end: nothing to say (and no wake-up asked for; the caller's other
            // waits wake it, and it asks again).
            Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
        }
    }
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
        wr.flush().await.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // A vectored write (the writer task's path when the half says it has one) sends its
        // slices in order, and says how much it wrote.
        let slices = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let mut sent = 0;
        while sent < 4 {
            let n = std::future::poll_fn(|cx| {
                let left: Vec<io::IoSlice<'_>> = [&b"abcd"[sent..]]
                    .into_iter()
                    .map(io::IoSlice::new)
                    .collect();
                let bufs = if sent == 0 { &slices[..] } else { &left[..] };
                Pin::new(&mut wr).poll_write_vectored(cx, bufs)
            })
            .await
            .unwrap();
            assert!(n > 0 && sent + n <= 4, "{n} after {sent}");
            sent += n;
        }
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
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
        let ours = ours.unwrap();
        let vectored = ours.is_write_vectored();
        let (_, wr) = halves(Box::new(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        ));
        assert_eq!(wr.is_write_vectored(), vectored, "as the socket's");
        let printed = both_ways(Box::new(ours), theirs.unwrap().0).await;
        assert_eq!(printed, "IoReadHalf(tcp) IoWriteHalf(tcp)");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_unix_stream_splits_into_its_own_halves() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let printed = both_ways(Box::new(ours), theirs).await;
        assert_eq!(printed, "IoReadHalf(unix) IoWriteHalf(unix)");
    }

    /// Polls `rd` once for bytes; `None` while none are there.
    fn read_now(rd: &mut IoReadHalf) -> Option<usize> {
        let mut buf = [0u8; 64];
        let mut read = ReadBuf::new(&mut buf);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(rd).poll_read(&mut cx, &mut read) {
            Poll::Ready(done) => Some(done.map(|()| read.filled().len()).unwrap()),
            Poll::Pending => None,
        }
    }

    /// Waits (up to 5 s) until `rd` says something may have come.
    async fn until_news(rd: &IoReadHalf) {
        let wait = async {
            while rd.may_have_news() != Some(true) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("no news within 5 s");
    }

    /// What `look` on the proxy relies on: a socket's read half says whether anything came
    /// since a read found nothing, and saying so takes nothing off the socket.
    async fn tells_what_came(ours: BoxIo, mut theirs: impl AsyncWrite + Unpin) {
        let (mut rd, _wr) = halves(ours);
        assert_eq!(read_now(&mut rd), None);
        assert_eq!(rd.may_have_news(), Some(false), "nothing came");

        theirs.write_all(b"reply").await.unwrap();
        until_news(&rd).await;
        assert_eq!(rd.may_have_news(), Some(true), "asking twice takes nothing");
        assert_eq!(read_now(&mut rd), Some(5), "the bytes are all still there");
        assert_eq!(read_now(&mut rd), None);
        assert_eq!(rd.may_have_news(), Some(false), "all read");

        drop(theirs);
        until_news(&rd).await;
        assert_eq!(read_now(&mut rd), Some(0), "the end of the stream");
    }

    #[tokio::test]
    async fn a_tcp_read_half_tells_whether_bytes_or_the_end_came_without_taking_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        tells_what_came(Box::new(ours.unwrap()), theirs.unwrap().0).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_unix_read_half_tells_whether_bytes_or_the_end_came_without_taking_them() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tells_what_came(Box::new(ours), theirs).await;
    }

    #[tokio::test]
    async fn other_streams_cannot_tell_whether_anything_came() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (rd, _wr) = halves(Box::new(ours));
        assert_eq!(rd.may_have_news(), None);
    }

    #[tokio::test]
    async fn any_other_stream_splits_through_tokio() {
        let (ours, theirs) = tokio::io::duplex(64);
        let (_, wr) = halves(Box::new(tokio::io::duplex(64).0));
        assert!(wr.is_write_vectored(), "as the stream's");
        let (_, wr) = halves(Box::new(Plain(tokio::io::duplex(64).0)));
        assert!(!wr.is_write_vectored(), "as the stream's");
        let printed = both_ways(Box::new(ours), theirs).await;
        assert_eq!(printed, "IoReadHalf IoWriteHalf");
        let (ours, theirs) = tokio::io::duplex(64);
        both_ways(Box::new(Plain(ours)), theirs).await;
    }

    /// A stream with no vectored writes of its own (`poll_write_vectored` writes the first
    /// slice), as a TLS stream may be.
    struct Plain(tokio::io::DuplexStream);

    impl AsyncRead for Plain {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Plain {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}
