//! Compressed layers kept between image builds, so the next image holding the same package
//! files copies a layer instead of compressing it again.
//!
//! `<dir>/layers/<first two hex digits>/<key>.json` names the layer a key gives (its digest,
//! diff_id and size); `<dir>/blobs/<digest hex>` holds the blob, once for every key that gives
//! it. Both are written to a temporary file and renamed, so builds can share the directory. A
//! blob is hashed while it is copied into the image and refused (removed, the layer written
//! again) unless it has the recorded digest and size.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use super::{WrittenLayer, digest_of, tmp_path};
use crate::cache_dir::CacheDir;
use crate::hashing::HashingWriter;

/// Where kept layers live, and how long an unused one stays.
pub type LayerCache = CacheDir;

#[derive(Serialize, Deserialize)]
struct Entry {
    digest: String,
    diff_id: String,
    size: u64,
}

impl CacheDir {
    fn entry_path(&self, key: &str) -> PathBuf {
        self.sharded("layers", key, &format!("{key}.json"))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir().join("blobs").join(digest.digest())
    }

    /// The kept layer for `key`, copied into the layout's `blobs` directory and checked; `None`
    /// when there is none or it was damaged (then it is removed). Marks it used.
    pub(super) fn layer(&self, key: &str, blobs: &Path) -> Option<WrittenLayer> {
        let entry_path = self.entry_path(key);
        let entry: Option<Entry> = serde_json::from_slice(&fs::read(&entry_path).ok()?).ok();
        let entry = match entry {
            Some(e) => e,
            None => {
                let _ = fs::remove_file(&entry_path);
                return None;
            }
        };
        let layer = (|| {
            Some(WrittenLayer {
                digest: Digest::try_from(entry.digest).ok()?,
                diff_id: Digest::try_from(entry.diff_id).ok()?,
                size: entry.size,
                reused: true,
            })
        })();
        let Some(layer) = layer else {
            let _ = fs::remove_file(&entry_path);
            return None;
        };
        let blob = self.blob_path(&layer.digest);
        let tmp = tmp_path(blobs);
        match copy_checked(&blob, &tmp, &layer) {
            Ok(true) => {}
            Ok(false) => {
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&blob);
                let _ = fs::remove_file(&entry_path);
                return None;
            }
            Err(_) => {
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&entry_path);
                return None;
            }
        }
        if fs::rename(&tmp, blobs.join(layer.digest.digest())).is_err() {
            let _ = fs::remove_file(&tmp);
            return None;
        }
        // Best effort: a cache whose times cannot be changed still works, its layers just age
        // as if unused.
        let now = SystemTime::now();
        for path in [&entry_path, &blob] {
            let _ = File::options()
                .append(true)
                .open(path)
                .and_then(|f| f.set_modified(now));
        }
        Some(layer)
    }

    /// Keeps `layer`, written to the layout's `blobs` directory, as the one `key` gives.
    /// Best effort: a failure only means the next build compresses it again.
    pub(super) fn keep_layer(&self, key: &str, layer: &WrittenLayer, blobs: &Path) {
        let _ = self.try_keep_layer(key, layer, blobs);
    }

    fn try_keep_layer(&self, key: &str, layer: &WrittenLayer, blobs: &Path) -> io::Result<()> {
        let blob = self.blob_path(&layer.digest);
        fs::create_dir_all(self.dir().join("blobs"))?;
        // Another key's blob: now used by this one too, so it ages from now.
        let touched = File::options()
            .append(true)
            .open(&blob)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if touched.is_err() {
            let tmp = tmp_path(self.dir());
            let copied = fs::copy(blobs.join(layer.digest.digest()), &tmp)
                .and_then(|_| fs::rename(&tmp, &blob));
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
        }
        let entry = Entry {
            digest: layer.digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            size: layer.size,
        };
        let path = self.entry_path(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = tmp_path(self.dir());
        let written = serde_json::to_vec(&entry)
            .map_err(io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

/// Copies `blob` to `dest`, hashing it; `Ok(false)` when it is not the layer's digest and size.
fn copy_checked(blob: &Path, dest: &Path, layer: &WrittenLayer) -> io::Result<bool> {
    let mut src = BufReader::with_capacity(1 << 20, File::open(blob)?);
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(dest)?));
    io::copy(&mut src, &mut out)?;
    out.flush()?;
    let matches =
        out.len == layer.size && digest_of(&out).is_ok_and(|d| d.digest() == layer.digest.digest());
    let file = out.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(matches)
}
