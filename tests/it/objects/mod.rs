//! Object storage: declaring stores (`declare.rs`), the handle's operations and what a reader
//! promises (`store.rs`, `corruption.rs`), and large objects: streaming, memory, replacement
//! and outages mid-read (`large.rs`).

mod corruption;
mod declare;
mod large;
mod store;

use std::pin::Pin;
use std::task::{Context, Poll};

use faststream_core::error::ObjectError;
use faststream_core::Error;

/// The kind of an `Error::Object`, for matching in assertions.
pub fn object_error(error: &Error) -> Option<&ObjectError> {
    match error {
        Error::Object { source, .. } => Some(source),
        _ => None,
    }
}

/// `len` deterministic pseudo-random bytes, produced as they are read (never all in memory).
pub struct PseudoRandom {
    state: u64,
    block: [u8; 8],
    /// How much of `block` was handed out.
    offset: usize,
    left: u64,
}

impl PseudoRandom {
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            state: seed | 1,
            block: [0; 8],
            offset: 8,
            left: len,
        }
    }

    /// The same bytes, in memory: for comparisons of small objects.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut generator = Self::new(seed, len as u64);
        let mut data = vec![0; len];
        let written = generator.fill(&mut data);
        assert_eq!(written, len);
        data
    }

    /// Fills as much of `out` as is left; returns how much.
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut written = 0;
        while written < out.len() && self.left > 0 {
            if self.offset == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.block = self.state.to_le_bytes();
                self.offset = 0;
            }
            let n = (8 - self.offset)
                .min(out.len() - written)
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            out[written..written + n].copy_from_slice(&self.block[self.offset..self.offset + n]);
            self.offset += n;
            self.left -= n as u64;
            written += n;
        }
        written
    }
}

impl tokio::io::AsyncRead for PseudoRandom {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let written = self.fill(buf.initialize_unfilled());
        buf.advance(written);
        Poll::Ready(Ok(()))
    }
}
