//! One connection with the generated synchronous client, over the transport the server uses,
//! and what its socket saw: enough to tell a call the server never began answering (the
//! connection closed first) from one that failed part way.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serve_thrift::detect::{DetectionServiceSyncClient, TDetectionServiceSyncClient};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    Buffered,
    Framed,
}

/// detect.thrift's client: `infer_batch` and `infer_detect`.
pub type Client = Box<dyn TDetectionServiceSyncClient + Send>;

pub struct Connection {
    pub client: Client,
    pub wire: Arc<Wire>,
}

/// What one connection's socket has seen. The thrift crate folds every socket error into a few
/// kinds of its own, so this is read below it.
#[derive(Debug, Default)]
pub struct Wire {
    received: AtomicU64,
    closed: AtomicBool,
}

impl Wire {
    /// Bytes read from the server so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The server ended the connection: end of stream, a reset, or a broken pipe.
    pub fn closed_by_peer(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn saw(&self, e: &io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) {
            self.closed.store(true, Ordering::Relaxed);
        }
    }
}

/// A socket half that reports to its `Wire`.
struct Watched<T> {
    inner: T,
    wire: Arc<Wire>,
}

impl<T: Read> Read for Watched<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.wire.closed.store(true, Ordering::Relaxed);
                Ok(0)
            }
            Ok(n) => {
                self.wire.received.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.wire.saw(&e);
                Err(e)
            }
        }
    }
}

impl<T: Write> Write for Watched<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.wire.saw(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| self.wire.saw(e))
    }
}

pub fn connect(addr: &str, framing: Framing, timeout: Duration) -> anyhow::Result<Connection> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let (r, w) = TTcpChannel::with_stream(stream).split()?;
    let wire = Arc::new(Wire::default());
    let r = Watched {
        inner: r,
        wire: wire.clone(),
    };
    let w = Watched {
        inner: w,
        wire: wire.clone(),
    };
    let client: Client = match framing {
        Framing::Buffered => Box::new(DetectionServiceSyncClient::new(
            TBinaryInputProtocol::new(TBufferedReadTransport::new(r), true),
            TBinaryOutputProtocol::new(TBufferedWriteTransport::new(w), true),
        )),
        Framing::Framed => Box::new(DetectionServiceSyncClient::new(
            TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
            TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
        )),
    };
    Ok(Connection { client, wire })
}
