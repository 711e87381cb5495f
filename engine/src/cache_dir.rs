//! What the pack segment cache and the image layer cache share: directories of files that
//! several builds write (a temporary file renamed into place) and that age out when unused.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

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
pub(crate) fn prune(dir: &Path, max_age: Duration) -> io::Result<PruneSummary> {
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
