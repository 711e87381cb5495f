//! Compressed segments kept between packs, so the next environment holding the same package
//! files copies them instead of compressing them again.
//!
//! A segment is stored under its key (see `plan::segment_key`), as
//! `<dir>/segments/<first two hex digits>/<key>.<tar.zst|tar.gz>`: the compressed bytes, then a trailer
//! of their sha256 and a magic string. It is written to a temporary file in the cache and
//! renamed into place: several packs may share the directory (Jobs on a shared volume), and two
//! that compress the same segment write the same bytes. Before a kept segment is used its
//! digest is checked, so a damaged file (a full disk, a crash before the data reached it) is
//! removed and compressed again, never shipped.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::cache_dir::CacheDir;

use sha2::Digest;
use tempfile::NamedTempFile;

use super::Compression;
use crate::hashing::HashingWriter;

/// Where kept segments live, and how long an unused one stays.
pub type SegmentCache = CacheDir;

impl CacheDir {
    fn segment_path(&self, key: &str, compression: Compression) -> PathBuf {
        self.sharded(
            "segments",
            key,
            &format!("{key}.{}", compression.extension()),
        )
    }

    /// The kept segment for `key`, checked and positioned at its start, with the length of
    /// its compressed bytes (the trailer follows them); `None` when there is none or it was
    /// damaged (then it is removed). Marks it used.
    pub(super) fn segment(&self, key: &str, compression: Compression) -> Option<(File, u64)> {
        let path = self.segment_path(key, compression);
        let mut file = File::open(&path).ok()?;
        match verify(&mut file) {
            Ok(len) => {
                // Best effort: a cache on a volume we may not change times on still works,
                // its segments just age as if unused.
                let _ = file.set_modified(SystemTime::now());
                Some((file, len))
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// A temporary file in the cache to write a segment into, for [`CacheDir::keep_segment`].
    pub(super) fn segment_temp(&self) -> io::Result<Pending> {
        let file = tempfile::Builder::new()
            .prefix(".segment-")
            .tempfile_in(self.dir())?;
        Ok(HashingWriter::new(file))
    }

    /// Stores `pending`, written whole, as the segment for `key`; returns it positioned at its
    /// start, with the length of its compressed bytes.
    pub(super) fn keep_segment(
        &self,
        key: &str,
        compression: Compression,
        mut pending: Pending,
    ) -> io::Result<(File, u64)> {
        let path = self.segment_path(key, compression);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let digest = pending.hasher.finalize();
        let file = pending.inner.as_file_mut();
        file.write_all(&digest)?;
        file.write_all(MAGIC)?;
        let mut file = pending.inner.persist(&path).map_err(|e| e.error)?;
        file.rewind()?;
        Ok((file, pending.len))
    }
}

/// Ends every kept segment, after the sha256 of the bytes before it.
const MAGIC: &[u8; 8] = b"cspkseg1";

/// A segment being written into the cache, hashed as it passes.
pub(super) type Pending = HashingWriter<NamedTempFile>;

/// Checks the trailer of a kept segment against its bytes and rewinds it; returns the length
/// of the compressed bytes.
fn verify(file: &mut File) -> io::Result<u64> {
    let invalid = |what| io::Error::new(io::ErrorKind::InvalidData, what);
    let size = file.metadata()?.len();
    let len = size
        .checked_sub((32 + MAGIC.len()) as u64)
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid("too short"))?;
    let mut hashed = HashingWriter::new(io::sink());
    let copied = io::copy(&mut (&mut *file).take(len), &mut hashed)?;
    let mut trailer = [0; 40];
    file.read_exact(&mut trailer)?;
    if copied != len || &trailer[32..] != MAGIC || trailer[..32] != hashed.hasher.finalize()[..] {
        return Err(invalid("damaged"));
    }
    file.rewind()?;
    Ok(len)
}
