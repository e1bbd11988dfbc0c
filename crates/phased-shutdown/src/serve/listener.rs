//! Where connections come from: a TCP listener or a Unix domain socket, behind one small accept
//! abstraction, so that everything the server does at a stop (the backlog taken before the
//! socket closes, the lingering close, the cut at the bound) is the same for both.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listening socket.
#[derive(Debug)]
pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection.
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over one of the others, once its handshake is done.
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
}

/// Who is at the other end: a TCP peer's address, or a Unix socket's client (which has none
/// worth naming: clients of a path socket are unnamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("a Unix socket client"),
        }
    }
}

impl Listener {
    pub(super) async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Stream::Tcp(s), Peer::Tcp(a))),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }

    /// Takes whatever completed its handshake before the socket closes (closing would reset
    /// it) and hands each to `accept`; returns how many. Asked of the kernel directly (a
    /// non-blocking accept until it would block): tokio's readiness for the socket can lag
    /// behind connections that arrived since the reactor last looked, and those would be reset.
    pub(super) fn take_backlog(self, mut accept: impl FnMut(Stream, Peer)) -> u64 {
        let mut taken = 0;
        let mut take = |stream: io::Result<Stream>, peer: Peer| match stream {
            Ok(stream) => {
                accept(stream, peer);
                taken += 1;
            }
            Err(e) => tracing::warn!(error = %e, "cannot serve a connection taken from the backlog"),
        };
        match self {
            Listener::Tcp(listener) => match listener.into_std() {
                Ok(listener) => {
                    while let Ok((stream, peer)) = listener.accept() {
                        let stream = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
                        take(stream.map(Stream::Tcp), Peer::Tcp(peer));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot take the listen backlog"),
            },
            Listener::Unix(listener) => match listener.into_std() {
                Ok(listener) => {
                    while let Ok((stream, _)) = listener.accept() {
                        let stream = stream.set_nonblocking(true).and_then(|()| UnixStream::from_std(stream));
                        take(stream.map(Stream::Unix), Peer::Unix);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot take the listen backlog"),
            },
        }
        taken
    }
}

impl Stream {
    /// Sends small answers at once (TCP); nothing to do on a Unix socket.
    pub(super) fn set_nodelay(&self) {
        if let Stream::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// The first bytes that arrived, left in the socket for hyper (or the TLS handshake) to
    /// read.
    pub(super) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.peek(buf).await,
            // The first bytes are peeked before the handshake, on the socket itself.
            #[cfg(feature = "rustls")]
            Stream::Tls(_) => Err(io::Error::other("no peeking once TLS is up")),
            Stream::Unix(s) => loop {
                s.readable().await?;
                let fd = s.as_raw_fd();
                let peeked = s.try_io(Interest::READABLE, || {
                    // SAFETY: `fd` is this stream's open socket; `buf` is valid and writable for
                    // its length. MSG_PEEK leaves the bytes for hyper (what tokio's
                    // `TcpStream::peek` does).
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                });
                match peeked {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "rustls")]
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
