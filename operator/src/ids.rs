//! Numeric build ids: a counter in a ConfigMap of the operator's namespace, advanced with a
//! conditional update (resourceVersion), so ids are unique across restarts and replicas and
//! never reused. A crash between taking an id and recording it on the Build skips one id,
//! never gives one twice.

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
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

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
        }
    }

    /// The next id (1, 2, ...).
    pub async fn next(&self) -> Result<i64, IdError> {
        let _turn = self.turn.lock().await;
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
                        data: Some(BTreeMap::from([(KEY.to_string(), "2".to_string())])),
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
                        .insert(KEY.into(), (id + 1).to_string());
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
