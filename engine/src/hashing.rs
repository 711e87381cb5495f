//! A writer that hashes (sha256) and counts what passes through it: archive digests, layer
//! digests and diff_ids, and the checks of kept cache entries.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Hashes and counts what passes through to `inner`.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    /// Bytes written so far.
    pub(crate) len: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The lowercase hex sha256 of what was written so far.
    pub(crate) fn hex(&self) -> String {
        format!("{:x}", self.hasher.clone().finalize())
    }
}

impl<W: Write> HashingWriter<W> {
    /// Flushes the output; returns the byte count and the hex sha256.
    pub(crate) fn finish(mut self) -> io::Result<(u64, String)> {
        self.inner.flush()?;
        Ok((self.len, self.hex()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
