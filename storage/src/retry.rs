//! Retries of transient storage failures, within a bound.
//!
//! A build step that meets a storage outage (an S3 endpoint restarting, a volume briefly
//! read-only or unmounted) should wait it out rather than fail the build; one that meets a
//! permanent problem (a missing object, an invalid key) should fail at once. [`Retrying`] wraps
//! any store: every operation that fails with an I/O or backend error is tried again with
//! exponential backoff until it succeeds or the bound is spent, and the final error says how
//! long it was tried.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ArtifactStore, ByteRange, Key, ObjectInfo, ObjectRead, Result, StorageError};

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// The first wait; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_elapsed: Duration::from_secs(120),
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Whether an error may go away by itself: I/O and backend failures may, a missing object, an
/// invalid key or range do not.
pub fn is_transient(e: &StorageError) -> bool {
    match e {
        StorageError::Io { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
        StorageError::Backend { .. } => true,
        StorageError::NotFound(_)
        | StorageError::InvalidKey { .. }
        | StorageError::InvalidRange { .. } => false,
    }
}

/// A store whose operations retry transient failures.
pub struct Retrying {
    inner: Arc<dyn ArtifactStore>,
    policy: RetryPolicy,
    on_retry: Box<dyn Fn(&str) + Send + Sync>,
}

impl Retrying {
    /// Wraps `inner`; `on_retry` hears of each retry (for a step's log).
    pub fn new(
        inner: Arc<dyn ArtifactStore>,
        policy: RetryPolicy,
        on_retry: impl Fn(&str) + Send + Sync + 'static,
    ) -> Retrying {
        Retrying {
            inner,
            policy,
            on_retry: Box::new(on_retry),
        }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut delay = self.policy.first_delay;
        let mut attempts = 1u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e)
                    if is_transient(&e) && start.elapsed() + delay <= self.policy.max_elapsed =>
                {
                    (self.on_retry)(&format!(
                        "storage {op} {key:?} failed ({e}); attempt {} in {:.1} s",
                        attempts + 1,
                        delay.as_secs_f64()
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempts += 1;
                }
                Err(e) if is_transient(&e) && attempts > 1 => {
                    return Err(StorageError::Backend {
                        op,
                        key: key.to_string(),
                        message: format!(
                            "still failing after {attempts} attempts over {:.0} s: {e}",
                            start.elapsed().as_secs_f64()
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl ArtifactStore for Retrying {
    async fn put_file(&self, key: &Key, path: &Path) -> Result<ObjectInfo> {
        self.run("writing", key.as_str(), || self.inner.put_file(key, path))
            .await
    }

    async fn put_bytes(&self, key: &Key, data: Bytes) -> Result<ObjectInfo> {
        self.run("writing", key.as_str(), || {
            self.inner.put_bytes(key, data.clone())
        })
        .await
    }

    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ObjectRead> {
        self.run("reading", key.as_str(), || self.inner.get(key, range))
            .await
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectInfo>> {
        self.run("looking up", key.as_str(), || self.inner.head(key))
            .await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.run("deleting", key.as_str(), || self.inner.delete(key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("listing", prefix, || self.inner.list(prefix))
            .await
    }

    async fn presign_get(&self, key: &Key, expires: Duration) -> Result<Option<String>> {
        self.run("presigning", key.as_str(), || {
            self.inner.presign_get(key, expires)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use std::sync::Mutex;

    fn quick(max: u64) -> RetryPolicy {
        RetryPolicy {
            max_elapsed: Duration::from_millis(max),
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        }
    }

    /// The storage directory's `builds` turns into a file for a while (writes below it fail
    /// with an I/O error, even for root), then back: the write waits it out.
    #[tokio::test]
    async fn a_write_waits_out_a_brief_outage_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("builds");
        std::fs::write(&blocker, b"in the way").unwrap();
        let heard = Arc::new(Mutex::new(Vec::<String>::new()));
        let h = heard.clone();
        let store = Retrying::new(
            Arc::new(LocalStore::new(dir.path()).unwrap()),
            quick(10_000),
            move |m| h.lock().unwrap().push(m.to_string()),
        );
        let clear = {
            let blocker = blocker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                std::fs::remove_file(&blocker).unwrap();
            })
        };
        let key = Key::new("builds/team/b-1/conda-lock.yaml").unwrap();
        let info = store
            .put_bytes(&key, Bytes::from_static(b"lock"))
            .await
            .unwrap();
        assert_eq!(info.size, 4);
        clear.await.unwrap();
        let heard = heard.lock().unwrap();
        assert!(!heard.is_empty(), "no retry was logged");
        assert!(heard[0].contains("attempt 2"), "{heard:?}");
    }

    #[tokio::test]
    async fn an_outage_past_the_bound_fails_saying_how_long_it_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("builds"), b"in the way").unwrap();
        let store = Retrying::new(
            Arc::new(LocalStore::new(dir.path()).unwrap()),
            quick(300),
            |_| {},
        );
        let key = Key::new("builds/team/b-1/x").unwrap();
        let e = store
            .put_bytes(&key, Bytes::from_static(b"x"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("still failing after") && e.contains("attempts"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_object_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = Retrying::new(
            Arc::new(LocalStore::new(dir.path()).unwrap()),
            quick(10_000),
            |m| panic!("retried: {m}"),
        );
        let start = Instant::now();
        let e = store
            .get_bytes(&Key::new("builds/nope").unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::NotFound(_)), "{e}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
