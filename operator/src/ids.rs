//! Numeric build ids: a counter in a ConfigMap of the operator's namespace, advanced with a
//! conditional update (resourceVersion), so ids are unique across restarts and replicas and
//! never reused. A crash between taking an id and recording it on the Build skips it, never
//! gives one twice.
//!
//! When many builds wait for an id at once (a thousand Environments applied together), one
//! update reserves a block for all of them; ids of a block this process did not hand out
//! before it stopped are skipped. A lone build takes exactly one, so quiet clusters see no
//! gaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::labels;

/// The counter's ConfigMap.
pub const CONFIG_MAP: &str = "conda-store-build-ids";
const KEY: &str = "next";

/// Hands out build ids.
#[derive(Clone)]
pub struct IdAllocator {
    api: Api<ConfigMap>,
    /// One allocation at a time in this process: concurrent reconciles would otherwise race
    /// for the same resourceVersion and mostly retry.
    /// Reserved ids not handed out yet (`next..end`).
    turn: std::sync::Arc<tokio::sync::Mutex<Reserved>>,
    /// Callers waiting for an id: the size of the next block.
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Default)]
struct Reserved {
    next: i64,
    end: i64,
}

/// The largest block one update reserves.
const MAX_BLOCK: usize = 50;

/// Why no id could be given.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("reading or updating the build-id counter: {0}")]
    Kube(#[from] kube::Error),
    #[error("the build-id counter ConfigMap holds {0:?}, not a number")]
    Corrupt(String),
    #[error("the build-id counter kept changing under us")]
    Contended,
}

impl IdAllocator {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        IdAllocator {
            api: Api::namespaced(client, namespace),
            turn: Default::default(),
            waiting: Default::default(),
        }
    }

    /// The next id (1, 2, ...).
    pub async fn next(&self) -> Result<i64, IdError> {
        use std::sync::atomic::Ordering;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut reserved = self.turn.lock().await;
        let block = self.waiting.load(Ordering::SeqCst).clamp(1, MAX_BLOCK) as i64;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if reserved.next < reserved.end {
            reserved.next += 1;
            return Ok(reserved.next - 1);
        }
        let first = self.reserve(block).await?;
        reserved.next = first + 1;
        reserved.end = first + block;
        Ok(first)
    }

    /// Advances the counter by `block`; returns the first id of the block.
    async fn reserve(&self, block: i64) -> Result<i64, IdError> {
        for _ in 0..20 {
            match self.api.get_opt(CONFIG_MAP).await? {
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(CONFIG_MAP.into()),
                            labels: Some(BTreeMap::from([(
                                labels::MANAGED_BY.to_string(),
                                labels::MANAGER.to_string(),
                            )])),
                            ..Default::default()
                        },
                        data: Some(BTreeMap::from([(KEY.to_string(), (1 + block).to_string())])),
                        ..Default::default()
                    };
                    match self.api.create(&PostParams::default(), &cm).await {
                        Ok(_) => return Ok(1),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(mut cm) => {
                    let raw = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(KEY))
                        .cloned()
                        .unwrap_or_else(|| "1".into());
                    let id: i64 = raw
                        .trim()
                        .parse()
                        .map_err(|_| IdError::Corrupt(raw.clone()))?;
                    cm.data
                        .get_or_insert_default()
                        .insert(KEY.into(), (id + block).to_string());
                    // `replace` sends the resourceVersion we read: a concurrent update makes
                    // it fail with 409 and we read again.
                    match self
                        .api
                        .replace(CONFIG_MAP, &PostParams::default(), &cm)
                        .await
                    {
                        Ok(_) => return Ok(id),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(IdError::Contended)
    }
}
