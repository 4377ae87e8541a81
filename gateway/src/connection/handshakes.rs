//! Bounds how many accepted connections may be in their HTTP handshake at once.
//!
//! Why: a connection costs about 20 KiB (hyper's read buffer and connection task) from accept until its
//! WebSocket reads for the first time, and 5 KiB after. When thousands of clients connect at once (a reconnect
//! storm after a deploy, or the 10,000-connection benchmark), the gateway can fall behind, and those 20 KiB
//! pile up; the allocator keeps the pages once they are freed. So the listener stops accepting while
//! `max` connections are mid-handshake (the kernel's accept backlog holds the rest, which costs us nothing),
//! and a connection counts as done with its handshake at its first read after its first write: for a
//! WebSocket that is the socket's first read after the 101 response, when hyper's buffer is gone; for plain
//! HTTP the read of the next request. A client that sends nothing stops counting after [`HANDSHAKE_TIMEOUT`],
//! so silent clients cannot stop the gateway from accepting.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// After this long a connection no longer counts as handshaking, whatever it did.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP listener that accepts only while fewer than `max` accepted connections are mid-handshake.
pub(crate) struct HandshakeLimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl HandshakeLimitedListener {
    /// `max` = 0 means no bound.
    pub(crate) fn new(inner: TcpListener, max: usize) -> Self {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Another handshake timeout than [`HANDSHAKE_TIMEOUT`].
    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Listener for HandshakeLimitedListener {
    type Io = Handshaking;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits.
        let slot = Arc::clone(&self.slots).acquire_owned().await.ok();
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        (Handshaking::new(stream, slot, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, holding its handshake slot until its handshake is over.
pub(crate) struct Handshaking {
    stream: TcpStream,
    slot: Option<Slot>,
}

struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    wrote: bool,
    timeout: Pin<Box<Sleep>>,
}

impl Handshaking {
    fn new(stream: TcpStream, permit: Option<OwnedSemaphorePermit>, timeout: Duration) -> Self {
        Self {
            stream,
            slot: Some(Slot {
                _permit: permit,
                wrote: false,
                timeout: Box::pin(tokio::time::sleep(timeout)),
            }),
        }
    }

    /// The underlying socket (for socket options).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The response has started: the next read ends the handshake.
    fn note_write(&mut self) {
        if let Some(slot) = &mut self.slot {
            slot.wrote = true;
        }
    }

    /// True while the connection still holds a handshake slot.
    #[cfg(test)]
    pub(crate) fn is_handshaking(&self) -> bool {
        self.slot.is_some()
    }
}

impl AsyncRead for Handshaking {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(slot) = &mut self.slot {
            // Polling the timeout here registers this task to be woken when it fires, so a silent client
            // still gives its slot back.
            if slot.wrote || slot.timeout.as_mut().poll(cx).is_ready() {
                self.slot = None;
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Handshaking {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.note_write();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.note_write();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener(max: usize) -> (HandshakeLimitedListener, SocketAddr) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        (HandshakeLimitedListener::new(tcp, max), addr)
    }

    #[tokio::test]
    async fn accepting_pauses_while_the_bound_is_mid_handshake_and_resumes_after_read_after_write()
    {
        let (mut listener, addr) = listener(1).await;
        let mut first_client = TcpStream::connect(addr).await.unwrap();
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let (mut first, _) = listener.accept().await;
        assert!(first.is_handshaking());
        // The second connection waits in the kernel's backlog while the first is mid-handshake.
        let waiting = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(waiting.is_err(), "accepted beyond the bound");
        // A read before any write (the request) keeps the slot...
        first_client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 3];
        first.read_exact(&mut buf).await.unwrap();
        assert!(first.is_handshaking());
        // ...the response and the next read end the handshake.
        first.write_all(b"101").await.unwrap();
        first_client.write_all(b"x").await.unwrap();
        first.read_exact(&mut buf[..1]).await.unwrap();
        assert!(!first.is_handshaking());
        let second = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(second.is_ok(), "the freed slot lets the next connection in");
    }

    #[tokio::test]
    async fn a_silent_client_gives_its_slot_back_after_the_timeout() {
        let (listener, addr) = listener(1).await;
        let mut listener = listener.with_timeout(Duration::from_millis(200));
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.accept().await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let _ = conn.read(&mut buf).await;
            conn
        });
        let _next_client = TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(
            early.is_err(),
            "the silent client still holds its slot before the timeout"
        );
        let next = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(
            next.is_ok(),
            "a silent client must not hold its slot forever"
        );
        reader.abort();
    }
}
