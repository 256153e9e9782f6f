//! Reading calls off a connection and writing replies: TBufferedTransport (messages back to
//! back, found by walking their structure) or TFramedTransport (a 4-byte length before each).
//! Sizes are checked before memory is reserved; a peer that stalls is dropped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use wire::skim::{skim, Skim};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// TBufferedTransport, the docs' client: messages back to back.
    Buffered,
    /// TFramedTransport: a 4-byte big-endian length before each message.
    Framed,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_message: usize,
    /// A connection with no call in progress is closed after this long.
    pub idle: Duration,
    /// A call must arrive whole within this long of its first byte.
    pub read: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] wire::skim::SkimError),
    #[error("frame of {0} bytes is above the limit")]
    FrameTooLarge(usize),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("call not complete after {0:?}")]
    Slow(Duration),
}

const CHUNK: usize = 64 * 1024;

pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    framing: Framing,
    limits: Limits,
}

impl Connection {
    pub fn new(stream: TcpStream, framing: Framing, limits: Limits) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buf: Vec::with_capacity(CHUNK),
            framing,
            limits,
        }
    }

    /// The next whole call, or `None` when the peer closed cleanly or shutdown began while no
    /// call was in progress.
    pub async fn read_call(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let started = tokio::time::Instant::now();
        if *shutdown.borrow() && self.buf.is_empty() {
            return Ok(None);
        }
        loop {
            let need = match self.framing {
                Framing::Buffered => match skim(&self.buf, self.limits.max_message)? {
                    Skim::Complete(n) => return Ok(Some(self.buf.drain(..n).collect())),
                    Skim::Need(n) => n,
                },
                Framing::Framed => {
                    if self.buf.len() >= 4 {
                        let len = u32::from_be_bytes([
                            self.buf[0],
                            self.buf[1],
                            self.buf[2],
                            self.buf[3],
                        ]) as usize;
                        if len > self.limits.max_message {
                            return Err(ReadError::FrameTooLarge(len));
                        }
                        if self.buf.len() >= 4 + len {
                            let msg = self.buf[4..4 + len].to_vec();
                            self.buf.drain(..4 + len);
                            return Ok(Some(msg));
                        }
                        4 + len
                    } else {
                        4
                    }
                }
            };
            let idle = self.buf.is_empty();
            let limit = if idle {
                self.limits.idle
            } else {
                self.limits.read.saturating_sub(started.elapsed())
            };
            // Grow as bytes arrive, never by what the peer merely declares.
            let want = (need - self.buf.len()).clamp(1, CHUNK);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let read = tokio::select! {
                // Bytes that already arrived when shutdown begins are a call to answer: closing
                // over them would reset the connection instead of ending it cleanly.
                biased;
                r = tokio::time::timeout(limit, self.stream.read(&mut self.buf[old..])) => r,
                _ = shutdown.changed(), if idle => {
                    self.buf.truncate(old);
                    return Ok(None);
                }
            };
            match read {
                Ok(Ok(0)) => {
                    self.buf.truncate(old);
                    if idle {
                        return Ok(None);
                    }
                    return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(n)) => self.buf.truncate(old + n),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) if idle => return Err(ReadError::Idle(self.limits.idle)),
                Err(_) => return Err(ReadError::Slow(self.limits.read)),
            }
        }
    }

    pub async fn write_reply(&mut self, reply: &[u8]) -> std::io::Result<()> {
        if self.framing == Framing::Framed {
            self.stream
                .write_all(&(reply.len() as u32).to_be_bytes())
                .await?;
        }
        self.stream.write_all(reply).await
    }
}
