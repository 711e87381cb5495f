//! The local-directory backend: the embedded default, and what a volume-backed install uses.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{ArtifactStore, ByteRange, Key, ObjectInfo, ObjectRead, Result, StorageError, hex};

/// The name start of partial writes, made beside their object and renamed into place (in the
/// same directory, so on the same mount: a build pod may see only its build's directory, bind
/// mounted). No key segment starts with `.`, so they are never listed as objects.
const INCOMING: &str = ".incoming-";

/// Copy buffer size.
const CHUNK: usize = 256 * 1024;

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, created when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore> {
        let root = root.into();
        if let Err(source) = std::fs::create_dir_all(&root) {
            // A read-only mount (the gateway only reads) still serves reads; a write then
            // fails with its own error.
            if !root.is_dir() {
                return Err(StorageError::Io {
                    op: "creating",
                    key: root.display().to_string(),
                    source,
                });
            }
        }
        Ok(LocalStore { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &Key) -> PathBuf {
        // Safe: a Key has no empty, `.` or `..` segment and no leading `/`.
        self.root.join(key.as_str())
    }

    /// Removes the directories above `path` that are left empty, up to (never including) the
    /// root: deleted builds leave nothing behind.
    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Writes via a temporary file and a rename, so a reader sees the old object or the whole
    /// new one, never a part.
    async fn write_atomically<F, Fut>(&self, key: &Key, fill: F) -> Result<ObjectInfo>
    where
        F: FnOnce(tokio::fs::File) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<(u64, String)>>,
    {
        let io = |op: &'static str| {
            let key = key.to_string();
            move |source| StorageError::Io { op, key, source }
        };
        let target = self.path(key);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io("creating directory for"))?;
        }
        let tmp = target.with_file_name(format!(
            "{INCOMING}{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("creating"))?;
        let result = fill(file).await;
        let (size, sha256) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io("writing")(e));
            }
        };
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io("renaming into place")(e));
        }
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            sha256: Some(sha256),
        })
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[async_trait]
impl ArtifactStore for LocalStore {
    async fn put_file(&self, key: &Key, path: &Path) -> Result<ObjectInfo> {
        let mut src = crate::open_source(key, path).await?;
        self.write_atomically(key, |mut dst| async move {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            let mut size = 0u64;
            loop {
                let n = src.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                dst.write_all(&buf[..n]).await?;
                size += n as u64;
            }
            dst.sync_all().await?;
            Ok((size, hex(&hasher.finalize())))
        })
        .await
    }

    async fn put_bytes(&self, key: &Key, data: Bytes) -> Result<ObjectInfo> {
        self.write_atomically(key, |mut dst| async move {
            dst.write_all(&data).await?;
            dst.sync_all().await?;
            Ok((data.len() as u64, hex(&Sha256::digest(&data))))
        })
        .await
    }

    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ObjectRead> {
        let mut file = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()));
            }
            Err(source) => {
                return Err(StorageError::Io {
                    op: "opening",
                    key: key.to_string(),
                    source,
                });
            }
        };
        let io = |source| StorageError::Io {
            op: "reading",
            key: key.to_string(),
            source,
        };
        let total = file.metadata().await.map_err(io)?.len();
        let Some(range) = range else {
            return Ok(ObjectRead {
                len: total,
                total,
                body: Box::pin(file),
            });
        };
        let (start, end) = range.resolve(total).ok_or(StorageError::InvalidRange {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size: total,
        })?;
        file.seek(SeekFrom::Start(start)).await.map_err(io)?;
        let len = end - start + 1;
        Ok(ObjectRead {
            len,
            total,
            body: Box::pin(file.take(len)),
        })
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectInfo>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                sha256: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io {
                op: "inspecting",
                key: key.to_string(),
                source,
            }),
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StorageError::Io {
                    op: "deleting",
                    key: key.to_string(),
                    source,
                });
            }
        }
        self.remove_empty_parents(&path);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&Key::new(&o.key)?).await?;
        }
        // A whole directory (`builds/<ns>/<build>/`): partial writes a killed step left go too.
        if let Some(dir) = prefix.strip_suffix('/')
            && crate::validate_key(dir).is_ok()
        {
            let path = self.root.join(dir);
            match tokio::fs::remove_dir_all(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "deleting",
                        key: prefix.to_string(),
                        source,
                    });
                }
            }
            self.remove_empty_parents(&path);
        }
        Ok(objects.len())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_files(&root, &prefix))
            .await
            .map_err(|e| StorageError::Backend {
                op: "listing",
                key: String::new(),
                message: e.to_string(),
            })?
    }

    async fn presign_get(&self, _key: &Key, _expires: Duration) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Walks the directory of the prefix's complete segments and keeps keys starting with it.
fn list_files(root: &Path, prefix: &str) -> Result<Vec<ObjectInfo>> {
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    if !dir_part.is_empty() {
        crate::validate_key(dir_part)?;
    }
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir_part)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StorageError::Io {
                    op: "listing",
                    key: prefix.to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if rel.starts_with(prefix) {
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: meta.len(),
                    sha256: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
