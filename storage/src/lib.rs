//! Artifact storage: lockfiles, logs, archives and OCI blobs, behind one trait with two backends,
//! a local directory (the embedded default) and S3 (any S3-compatible server).
//!
//! Writes are all-or-nothing (a reader never sees half an object) and stream in bounded memory;
//! every write reports the object's size and sha256, so callers can address content by digest.

#[cfg(feature = "cli")]
pub mod args;
mod key;
mod local;
pub mod retry;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

pub use key::{Key, validate_key};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// What went wrong with storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under the key.
    #[error("no object {0:?} in storage")]
    NotFound(String),
    /// A key that could escape the artifact space or is not well formed.
    #[error("invalid storage key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A byte range outside the object.
    #[error("range {start}-{end:?} is outside {key:?} ({size} bytes)")]
    InvalidRange {
        /// The key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// Last byte asked for, inclusive.
        end: Option<u64>,
        /// The object's size.
        size: u64,
    },
    /// Local file system trouble.
    #[error("{op} {key:?}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The storage service failed or could not be reached.
    #[error("storage {op} {key:?} failed: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The service's explanation.
        message: String,
    },
}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// An object's identity and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the content, when the backend knows it (always after a write).
    pub sha256: Option<String>,
}

/// An inclusive byte range, as HTTP `Range: bytes=start-end` gives it; `end: None` reads to the
/// end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: Option<u64>,
}

impl ByteRange {
    /// The `[start, end]` this range covers in an object of `size` bytes, clamping `end`;
    /// `None` when `start` is past the end.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if self.start >= size {
            return None;
        }
        let end = self.end.map_or(size - 1, |e| e.min(size - 1));
        (end >= self.start).then_some((self.start, end))
    }
}

/// A streaming read of an object (or a range of it).
pub struct ObjectRead {
    /// Bytes this read yields.
    pub len: u64,
    /// The whole object's size.
    pub total: u64,
    /// The content.
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead")
            .field("len", &self.len)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// Artifact storage.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores the file at `path` under `key`, replacing any object there. Reads the file once,
    /// in bounded memory.
    async fn put_file(&self, key: &Key, path: &Path) -> Result<ObjectInfo>;

    /// Stores `data` under `key`.
    async fn put_bytes(&self, key: &Key, data: Bytes) -> Result<ObjectInfo>;

    /// Reads the object, or the part `range` selects.
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ObjectRead>;

    /// The object's size (and digest when known); `None` when absent.
    async fn head(&self, key: &Key) -> Result<Option<ObjectInfo>>;

    /// Removes the object; removing an absent object is not an error.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Objects whose key starts with `prefix` (a key or a key followed by `/`), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// A URL anyone holding it may GET the object from until `expires`; `None` when the backend
    /// cannot hand out URLs (the caller streams the object instead).
    async fn presign_get(&self, key: &Key, expires: Duration) -> Result<Option<String>>;

    /// Removes every object under `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&Key::new(&o.key)?).await?;
        }
        Ok(objects.len())
    }

    /// Reads a whole (small) object into memory.
    async fn get_bytes(&self, key: &Key) -> Result<Bytes> {
        use tokio::io::AsyncReadExt;
        let mut read = self.get(key, None).await?;
        let mut buf = Vec::with_capacity(read.len as usize);
        read.body
            .read_to_end(&mut buf)
            .await
            .map_err(|source| StorageError::Io {
                op: "reading",
                key: key.to_string(),
                source,
            })?;
        Ok(buf.into())
    }
}

/// Opens the local file a `put_file` uploads, naming the key in the error.
pub(crate) async fn open_source(key: &Key, path: &Path) -> Result<tokio::fs::File> {
    tokio::fs::File::open(path)
        .await
        .map_err(|source| StorageError::Io {
            op: "opening source file for",
            key: key.to_string(),
            source,
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_and_clamp() {
        let r = |start, end| ByteRange { start, end };
        assert_eq!(r(0, None).resolve(10), Some((0, 9)));
        assert_eq!(r(5, Some(100)).resolve(10), Some((5, 9)));
        assert_eq!(r(10, None).resolve(10), None);
        assert_eq!(r(3, Some(2)).resolve(10), None);
        assert_eq!(r(0, None).resolve(0), None);
    }
}
