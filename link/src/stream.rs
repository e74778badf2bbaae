//! Framed messages over QUIC streams.

use quinn::{RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spillway_proto::wire::{FrameDecoder, FrameError, encode};

/// Why a framed stream failed.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum StreamError {
    /// {0}
    Frame(#[from] FrameError),
    /// the stream was reset or the connection closed: {0}
    Read(#[from] quinn::ReadError),
    /// cannot send: {0}
    Write(#[from] quinn::WriteError),
    /// the stream was closed: {0}
    Closed(#[from] quinn::ClosedStream),
}

/// Sends one frame.
pub async fn send<T: Serialize>(stream: &mut SendStream, msg: &T) -> Result<(), StreamError> {
    stream.write_all(&encode(msg)).await?;
    Ok(())
}

/// Reads frames from one stream.
#[derive(Debug)]
pub struct FrameReader {
    stream: RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(stream: RecvStream, limit: usize) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(limit),
            buf: vec![0; 64 << 10],
        }
    }

    /// The next message, or `None` when the peer finished the stream cleanly.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StreamError> {
        loop {
            if let Some(msg) = self.decoder.decode()? {
                return Ok(Some(msg));
            }
            // Never read past the frame's end: a huge announced length fails in `next` above
            // before it is buffered.
            let want = self.decoder.wanted()?.clamp(1, self.buf.len());
            match self.stream.read(&mut self.buf[..want]).await? {
                Some(n) => self.decoder.push(&self.buf[..n]),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// One request, one response, on a fresh bidirectional stream.
pub async fn request<Q: Serialize, R: DeserializeOwned>(
    conn: &quinn::Connection,
    req: &Q,
    limit: usize,
) -> Result<R, RequestError> {
    let (mut send_half, recv) = conn.open_bi().await.map_err(RequestError::Connection)?;
    send(&mut send_half, req).await?;
    send_half.finish().map_err(StreamError::from)?;
    FrameReader::new(recv, limit)
        .next()
        .await?
        .ok_or(RequestError::NoAnswer)
}

/// Why a request over a stream failed.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum RequestError {
    /// the connection is gone: {0}
    Connection(quinn::ConnectionError),
    /// {0}
    Stream(#[from] StreamError),
    /// the peer closed the stream without answering
    NoAnswer,
}
