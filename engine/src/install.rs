//! Installing: make a prefix from a platform's locked records (`rattler::install::Installer`)
//! with a shared package cache, and switch a "current" symlink atomically.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::{StreamExt, TryStreamExt};
use rattler::{
    install::Installer,
    package_cache::{CacheKey, PackageCache},
};
use rattler_conda_types::{RepoDataRecord, Subdir};
use tokio::{io::AsyncWriteExt, sync::Semaphore};

use crate::lockfile::{LockfileError, lockfile_records};

/// What can go wrong installing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid platform {0:?}")]
    InvalidPlatform(String),
    #[error(transparent)]
    Lockfile(#[from] LockfileError),
    #[error("installing into {prefix}: {message}")]
    Install { prefix: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSummary {
    /// Operations performed (installs, removals, changes); 0 when the prefix was up to date.
    pub operations: usize,
}

/// Install `records` for `platform` into `prefix` (created if missing), fetching packages
/// through the package cache at `cache_dir` (shared between prefixes; `file://` URLs are
/// read from disk). Idempotent: packages already installed are kept, so a second run is a no-op;
/// packages no longer in `records` are removed. No link scripts run.
pub async fn install_records(
    records: Vec<RepoDataRecord>,
    platform: &str,
    prefix: &Path,
    cache_dir: &Path,
) -> Result<InstallSummary, InstallError> {
    let subdir = Subdir::from_str(platform)
        .ok()
        .filter(|s| *s != Subdir::NoArch)
        .ok_or_else(|| InstallError::InvalidPlatform(platform.to_string()))?;
    crate::tls::ensure_crypto_provider();
    // Full validation: every cached file is checked against the package's paths.json hashes
    // and a damaged entry is extracted again; rattler's default only checks index.json and
    // would link a corrupted file into the prefix (the install tests show it).
    let cache = PackageCache::new_layered(
        std::iter::once(cache_dir.to_path_buf()),
        false,
        rattler::validation::ValidationMode::Full,
    );
    let client = crate::http::client();
    // The installer then finds every package in the cache (the same object: entries it
    // fetched or validated are not validated again).
    prefetch(&records, &cache, &client, cache_dir, extraction_slots())
        .await
        .map_err(|message| InstallError::Install {
            prefix: prefix.to_path_buf(),
            message,
        })?;
    let result = Installer::new()
        .with_package_cache(cache)
        .with_download_client(client)
        .with_target_platform(subdir)
        .with_execute_link_scripts(false)
        .install(prefix, records)
        .await
        .map_err(|e| InstallError::Install {
            prefix: prefix.to_path_buf(),
            message: crate::http::error_chain(&e),
        })?;
    // rattler marks new prefixes as cache directories (excluded from backups); a prefix is not.
    let tag = prefix.join("CACHEDIR.TAG");
    match std::fs::remove_file(&tag) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(InstallError::Io { path: tag, source }),
    }
    Ok(InstallSummary {
        operations: result.transaction.operations.len(),
    })
}

/// How many archives are downloaded at once: waiting on the network, not the CPU.
const DOWNLOADS: usize = 16;

/// A download that fails this many times in a row fails the install.
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// Spooled downloads older than this were left by a process that died; they are removed.
const STALE_DOWNLOAD: Duration = Duration::from_secs(3600);

/// How many archives are extracted at once: one per CPU this process may use. Decompressing is
/// bound by the CPU and its memory (a bzip2 stream walks a 3.6 MB table at random), so more
/// at once only thrash the caches: with every package of a 98-package environment at once
/// (rattler's default) a cold install took twice as long on two cores (docs/benchmarks.md).
fn extraction_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Brings every record's package into `cache`: downloads (up to [`DOWNLOADS`] at once) into a
/// spool directory beside the cache, then extracts (`slots` at once), largest first so the last
/// one to finish is a small one. rattler's installer holds one permit across a package's
/// download and its extraction, so it can limit only both together; here the network and the
/// CPU each get their own limit. Entries already cached are validated as the installer would.
async fn prefetch(
    records: &[RepoDataRecord],
    cache: &PackageCache,
    client: &reqwest::Client,
    cache_dir: &Path,
    slots: usize,
) -> Result<(), String> {
    let spool = cache_dir.join(".downloads");
    std::fs::create_dir_all(&spool).map_err(|e| format!("{}: {e}", spool.display()))?;
    remove_stale(&spool);
    // As the installer does: one install fetches into the cache at a time (two fetching the
    // same entry at once would race to rename it into place). Released before the installer
    // takes it again.
    let _lock = cache.acquire_global_lock().await.map_err(|e| {
        format!(
            "locking the package cache: {}",
            crate::http::error_chain(&e)
        )
    })?;
    let downloads = Arc::new(Semaphore::new(DOWNLOADS));
    let extractions = Arc::new(Semaphore::new(slots.max(1)));
    let mut ordered: Vec<&RepoDataRecord> = records
        .iter()
        // Wheels are the installer's own business (none in conda-lock's conda section).
        .filter(|r| {
            matches!(
                r.identifier.archive_type,
                rattler_conda_types::package::DistArchiveType::Conda(_)
            )
        })
        .collect();
    ordered.sort_by_key(|r| std::cmp::Reverse(r.package_record.size.unwrap_or(0)));
    // Owned jobs: a future borrowing the records would not be `Send` for every lifetime.
    let jobs: Vec<(CacheKey, Fetch)> = ordered
        .into_iter()
        .map(|record| {
            let fetch = Fetch {
                url: record.url.clone(),
                file_name: record.identifier.to_file_name(),
                sha256: record.package_record.sha256,
                client: client.clone(),
                spool: spool.clone(),
                downloads: downloads.clone(),
                extractions: extractions.clone(),
            };
            (CacheKey::from(&record.package_record), fetch)
        })
        .collect();
    futures::stream::iter(jobs)
        .map(|(key, fetch)| {
            let cache = cache.clone();
            let name = fetch.file_name.clone();
            async move {
                cache
                    .get_or_fetch(key, move |dest| fetch.clone().run(dest), None)
                    .await
                    .map(drop)
                    .map_err(|e| format!("fetching {name}: {}", crate::http::error_chain(&e)))
            }
        })
        // Every lookup at once (a cached entry's validation is disk work); the semaphores
        // bound what costs.
        .buffer_unordered(256)
        .try_collect::<()>()
        .await
}

/// Removes spooled downloads a killed process left behind (best effort: another pod's
/// download in progress is younger than [`STALE_DOWNLOAD`]).
fn remove_stale(spool: &Path) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_DOWNLOAD);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Fetching one package archive into a cache entry.
#[derive(Clone)]
struct Fetch {
    url: url::Url,
    file_name: String,
    sha256: Option<rattler_digest::Sha256Hash>,
    client: reqwest::Client,
    spool: PathBuf,
    downloads: Arc<Semaphore>,
    extractions: Arc<Semaphore>,
}

/// Why fetching a package failed (told through the cache's error).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{url}: {source}")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: the channel answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} is not a file path")]
    FileUrl { url: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{url}: {source}")]
    Extract {
        url: String,
        #[source]
        source: rattler_package_streaming::ExtractError,
    },
    #[error("{url}: the archive's sha256 is {actual}, the lockfile says {expected}")]
    Digest {
        url: String,
        expected: String,
        actual: String,
    },
}

impl Fetch {
    async fn run(self, dest: PathBuf) -> Result<Option<rattler_digest::Sha256Hash>, FetchError> {
        let url = self.url.to_string();
        // A file:// archive is read in place; anything else is downloaded first, so the
        // extraction slots never wait on the network.
        let (archive, _spooled) = if self.url.scheme() == "file" {
            let path = self
                .url
                .to_file_path()
                .map_err(|()| FetchError::FileUrl { url: url.clone() })?;
            (path, None)
        } else {
            let spooled = self.download().await?;
            (spooled.path().to_path_buf(), Some(spooled))
        };
        let _slot = self.extractions.acquire().await.expect("never closed");
        let result = rattler_package_streaming::tokio::fs::extract(&archive, &dest)
            .await
            .map_err(|source| FetchError::Extract {
                url: url.clone(),
                source,
            })?;
        if let Some(expected) = self.sha256
            && expected != result.sha256
        {
            return Err(FetchError::Digest {
                url,
                expected: hex::encode(expected),
                actual: hex::encode(result.sha256),
            });
        }
        Ok(Some(result.sha256))
    }

    /// The archive in a temporary file of the spool (removed when dropped), named so its
    /// extension tells its format.
    async fn download(&self) -> Result<tempfile::NamedTempFile, FetchError> {
        let url = self.url.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The permit is held for the download only, not through the back-off below.
            let result = {
                let _permit = self.downloads.acquire().await.expect("never closed");
                self.download_once().await
            };
            match result {
                Ok(file) => return Ok(file),
                // The channel's refusals are final; the transport's failures are retried.
                Err(FetchError::Download { source, .. }) if attempt < DOWNLOAD_ATTEMPTS => {
                    tracing::warn!(%url, attempt, error = %source, "download failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn download_once(&self) -> Result<tempfile::NamedTempFile, FetchError> {
        let url = self.url.to_string();
        let failed = |source| FetchError::Download {
            url: url.clone(),
            source,
        };
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url,
                status: response.status(),
            });
        }
        let spooled = tempfile::Builder::new()
            .prefix(".")
            .suffix(&format!("-{}", self.file_name))
            .tempfile_in(&self.spool)?;
        let mut out = tokio::fs::File::from_std(spooled.reopen()?);
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(spooled)
    }
}

/// Install one platform of a conda-lock v1 lockfile into `prefix` (see [`install_records`]).
pub async fn install_lockfile(
    lockfile: &str,
    platform: &str,
    prefix: &Path,
    cache_dir: &Path,
) -> Result<InstallSummary, InstallError> {
    let records = lockfile_records(lockfile, platform)?;
    install_records(records, platform, prefix, cache_dir).await
}

/// Point the symlink `link` at `target` atomically: a temporary symlink next to `link` is
/// renamed over it, so readers see either the old or the new target, never nothing.
#[cfg(unix)]
pub fn switch_current(link: &Path, target: &Path) -> Result<(), InstallError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    let parent = link
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .ok_or_else(|| InstallError::Io {
            path: link.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(InstallError::Io { path: tmp, source }),
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
    if let Err(source) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(InstallError::Io {
            path: link.to_path_buf(),
            source,
        });
    }
    Ok(())
}
