//! Length-prefixed postcard frames: a 4-byte big-endian length, then that many bytes of
//! postcard. The decoder is fed whatever bytes arrived and hands out whole messages; a length
//! over the limit is refused before anything is buffered, so a peer cannot make us allocate.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame on a control stream.
pub const MAX_CONTROL_FRAME: usize = 1 << 20;

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum FrameError {
    /// frame of {size} bytes exceeds the limit of {limit} bytes
    TooLarge { size: usize, limit: usize },
    /// malformed frame: {0}
    Malformed(String),
    /// the stream ended in the middle of a frame ({0} bytes left over)
    Truncated(usize),
}

/// Serializes `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    // Writing postcard into a Vec cannot fail for our message types (no maps with non-string
    // keys, no unsized sequences).
    let body = postcard::to_stdvec(msg).unwrap_or_default();
    out[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reassembles frames from a byte stream.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limit: usize,
}

impl FrameDecoder {
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(size) = self.pending_len()? else {
            return Ok(None);
        };
        if self.buf.len() < 4 + size {
            return Ok(None);
        }
        let msg = postcard::from_bytes(&self.buf[4..4 + size])
            .map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + size);
        msg.map(Some)
    }

    /// How many bytes the next frame still needs, for readers that pull exact amounts.
    pub fn wanted(&self) -> Result<usize, FrameError> {
        match self.pending_len()? {
            None => Ok(4 - self.buf.len()),
            Some(size) => Ok((4 + size).saturating_sub(self.buf.len())),
        }
    }

    /// Call at the end of the stream: leftover bytes mean the peer stopped mid-frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }

    fn pending_len(&self) -> Result<Option<usize>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let size =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if size > self.limit {
            return Err(FrameError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new(16);
        d.push(&1000u32.to_be_bytes());
        assert_eq!(
            d.decode::<String>(),
            Err(FrameError::TooLarge {
                size: 1000,
                limit: 16
            })
        );
    }

    #[test]
    fn garbage_body_is_a_malformed_frame_not_a_panic() {
        let mut d = FrameDecoder::new(64);
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.decode::<String>(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn stream_ending_mid_frame_is_reported_as_truncated() {
        let mut d = FrameDecoder::new(64);
        let frame = encode(&"hello".to_string());
        d.push(&frame[..5]);
        assert_eq!(d.decode::<String>(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(5)));
    }

    proptest! {
        #[test]
        fn frames_survive_any_split_of_the_byte_stream(
            msgs in proptest::collection::vec(".{0,40}", 1..8),
            cuts in proptest::collection::vec(1usize..7, 1..40),
        ) {
            let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < bytes.len() {
                let n = cuts[i % cuts.len()].min(bytes.len() - at);
                d.push(&bytes[at..at + n]);
                at += n;
                i += 1;
                while let Some(m) = d.decode::<String>().unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(d.finish().is_ok());
        }
    }
}
