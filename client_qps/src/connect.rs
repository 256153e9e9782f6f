//! One connection with the generated synchronous client, over the transport the server uses.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};
use wire::serve::{InferenceServiceSyncClient, TInferenceServiceSyncClient};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    Buffered,
    Framed,
}

pub type Client = Box<dyn TInferenceServiceSyncClient + Send>;

pub fn connect(addr: &str, framing: Framing, timeout: Duration) -> anyhow::Result<Client> {
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
    Ok(match framing {
        Framing::Buffered => Box::new(InferenceServiceSyncClient::new(
            TBinaryInputProtocol::new(TBufferedReadTransport::new(r), true),
            TBinaryOutputProtocol::new(TBufferedWriteTransport::new(w), true),
        )),
        Framing::Framed => Box::new(InferenceServiceSyncClient::new(
            TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
            TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
        )),
    })
}
