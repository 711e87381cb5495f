//! Installing: make a prefix from a platform's locked records (`rattler::install::Installer`)
//! with a shared package cache, and switch a "current" symlink atomically.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use rattler::{install::Installer, package_cache::PackageCache};
use rattler_conda_types::{RepoDataRecord, Subdir};

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
    let result = Installer::new()
        // Full validation: every cached file is checked against the package's paths.json hashes
        // and a damaged entry is extracted again; rattler's default only checks index.json and
        // would link a corrupted file into the prefix (the install tests show it).
        .with_package_cache(PackageCache::new_layered(
            std::iter::once(cache_dir.to_path_buf()),
            false,
            rattler::validation::ValidationMode::Full,
        ))
        .with_download_client(crate::http::client())
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
