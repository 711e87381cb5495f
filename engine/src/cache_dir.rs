//! What the pack segment cache and the image layer cache share: a directory of files that
//! several builds write (a temporary file renamed into place) and that age out when unused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A directory of kept build outputs (pack segments, image layers) that builds share, and how
/// long an unused one stays. `pack::SegmentCache` and `image::LayerCache` are this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    dir: PathBuf,
    max_age: Duration,
}

impl CacheDir {
    /// Entries unused for this long are removed by [`CacheDir::prune`].
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

    /// A cache in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(CacheDir {
            dir,
            max_age: Self::DEFAULT_MAX_AGE,
        })
    }

    /// Keeps unused entries for `max_age` instead of [`CacheDir::DEFAULT_MAX_AGE`].
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<area>/<the key's first two characters>/<name>`: a few thousand entries per
    /// directory at most.
    pub(crate) fn sharded(&self, area: &str, key: &str, name: &str) -> PathBuf {
        self.dir
            .join(area)
            .join(key.get(..2).unwrap_or("xx"))
            .join(name)
    }

    /// Removes entries unused for longer than the maximum age, and temporary files a stopped
    /// build left behind. Files it cannot inspect are kept.
    pub fn prune(&self) -> io::Result<PruneSummary> {
        prune(&self.dir, self.max_age)
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// Entries (and abandoned temporary files) removed.
    pub removed: u64,
    /// Entries kept.
    pub kept: u64,
}

/// Temporary files (names starting with `.`) older than this were left by a build that
/// stopped; younger ones may still be written.
const ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// Removes the files under `dir` (at any depth) not modified for `max_age`, and temporary
/// files older than a day. Files it cannot inspect are kept.
fn prune(dir: &Path, max_age: Duration) -> io::Result<PruneSummary> {
    let now = SystemTime::now();
    let mut summary = PruneSummary::default();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let temporary = entry.file_name().to_string_lossy().starts_with('.');
            let age = if temporary { ABANDONED } else { max_age };
            let old = meta
                .modified()
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
            if old && fs::remove_file(entry.path()).is_ok() {
                summary.removed += 1;
            } else if !temporary {
                summary.kept += 1;
            }
        }
    }
    Ok(summary)
}
