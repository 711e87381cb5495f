//! Garbage collection of image blobs. Images share their blobs (`blobs/sha256/<hex>`: a
//! package's layer is the same blob in every image that has it), so deleting a build cannot
//! delete its blobs; this removes, from time to time, the blobs that no remaining build's
//! `image.json` references.
//!
//! An image step uploads its blobs before it writes the `image.json` that references them, so
//! a collection must not overlap an image step: it runs only while no image Job is active, and
//! holds the [`ImageGate`] so that none starts meanwhile.

use std::collections::HashSet;

use conda_store_storage::{ArtifactStore, Key, StorageError};

/// Where image blobs live in artifact storage.
pub const BLOBS_PREFIX: &str = "blobs/sha256/";

/// Collection failed; nothing was deleted after the first error.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Storage could not be listed, read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An `image.json` is not an image summary: without knowing what it references, no blob
    /// may be deleted.
    #[error("{key}: {reason}")]
    Summary {
        /// The unreadable summary.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Image summaries read.
    pub images: usize,
    /// Blobs in storage before.
    pub blobs: usize,
    /// Blobs deleted.
    pub deleted: usize,
    /// Their bytes.
    pub deleted_bytes: u64,
}

/// The blob digests (hex) an image summary references: manifest, config and layers.
pub fn referenced_by(summary: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(summary).map_err(|e| format!("not JSON: {e}"))?;
    let hex = |d: &serde_json::Value, what: &str| -> Result<String, String> {
        d.as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_string)
            .ok_or_else(|| format!("no sha256 {what} digest"))
    };
    let mut out = vec![
        hex(&v["manifest_digest"], "manifest")?,
        hex(&v["config_digest"], "config")?,
    ];
    let layers = v["layers"]
        .as_array()
        .ok_or_else(|| "no layers".to_string())?;
    for layer in layers {
        out.push(hex(&layer["digest"], "layer")?);
    }
    Ok(out)
}

/// The blob keys among `keys` whose digest nobody references. Keys that are not
/// `blobs/sha256/<64 hex digits>` (an upload's temporary object, say) are left alone.
pub fn unreferenced<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    referenced: &HashSet<String>,
) -> Vec<&'a str> {
    keys.into_iter()
        .filter(|k| {
            k.strip_prefix(BLOBS_PREFIX).is_some_and(|hex| {
                hex.len() == 64
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    && !referenced.contains(hex)
            })
        })
        .collect()
}

/// Deletes the blobs no `builds/.../image.json` references. The caller makes sure no image
/// step runs meanwhile.
pub async fn collect(store: &dyn ArtifactStore) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    let mut referenced = HashSet::new();
    for o in store.list("builds/").await? {
        if !o.key.ends_with("/image.json") {
            continue;
        }
        let bytes = store.get_bytes(&Key::new(&o.key)?).await?;
        let digests = referenced_by(&bytes).map_err(|reason| GcError::Summary {
            key: o.key.clone(),
            reason,
        })?;
        referenced.extend(digests);
        report.images += 1;
    }
    let blobs = store.list(BLOBS_PREFIX).await?;
    report.blobs = blobs.len();
    let sizes: std::collections::HashMap<&str, u64> =
        blobs.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for key in unreferenced(blobs.iter().map(|o| o.key.as_str()), &referenced) {
        store.delete(&Key::new(key)?).await?;
        report.deleted += 1;
        report.deleted_bytes += sizes.get(key).copied().unwrap_or(0);
    }
    Ok(report)
}

/// Serialises image steps and collections: an image Job is created under a read guard, a
/// collection runs under the write guard.
#[derive(Debug, Default)]
pub struct ImageGate(tokio::sync::RwLock<()>);

impl ImageGate {
    /// A guard under which an image Job may be created, unless a collection runs.
    pub fn try_step(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        self.0.try_read().ok()
    }

    /// Waits for Job creations under way, then keeps new ones out until dropped.
    pub async fn collect(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conda_store_storage::LocalStore;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    fn summary(manifest: &str, config: &str, layers: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "tag": "latest",
            "manifest_digest": format!("sha256:{manifest}"),
            "config_digest": format!("sha256:{config}"),
            "layers": layers.iter().map(|l| serde_json::json!({"digest": format!("sha256:{l}")})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn a_summary_references_its_manifest_config_and_layers() {
        assert_eq!(
            referenced_by(&summary(A, B, &[C])).unwrap(),
            [A.to_string(), B.to_string(), C.to_string()]
        );
        assert!(referenced_by(b"{}").is_err());
        assert!(referenced_by(b"not json").is_err());
    }

    #[test]
    fn only_well_formed_unreferenced_blob_keys_are_chosen() {
        let referenced = HashSet::from([A.to_string()]);
        let a = format!("{BLOBS_PREFIX}{A}");
        let b = format!("{BLOBS_PREFIX}{B}");
        let keys = [
            a.as_str(),
            b.as_str(),
            "blobs/sha256/.tmp-upload",
            "builds/x/image.json",
        ];
        assert_eq!(unreferenced(keys, &referenced), [b.as_str()]);
    }

    #[tokio::test]
    async fn collect_deletes_what_no_image_references_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        for blob in [A, B, C, D] {
            store
                .put_bytes(
                    &Key::new(&format!("{BLOBS_PREFIX}{blob}")).unwrap(),
                    blob.as_bytes().to_vec().into(),
                )
                .await
                .unwrap();
        }
        // Two images share the layer C; nothing references D.
        store
            .put_bytes(
                &Key::new("builds/team/one/image.json").unwrap(),
                summary(A, B, &[C]).into(),
            )
            .await
            .unwrap();
        store
            .put_bytes(
                &Key::new("builds/team/two/image.json").unwrap(),
                summary(B, A, &[C]).into(),
            )
            .await
            .unwrap();
        let report = collect(&store).await.unwrap();
        assert_eq!(
            report,
            GcReport {
                images: 2,
                blobs: 4,
                deleted: 1,
                deleted_bytes: 64
            }
        );
        let left: Vec<String> = store
            .list(BLOBS_PREFIX)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left.len(), 3);
        assert!(!left.iter().any(|k| k.ends_with(D)));

        // An unreadable summary stops the collection before anything is deleted.
        store
            .put_bytes(
                &Key::new("builds/team/three/image.json").unwrap(),
                b"{}".to_vec().into(),
            )
            .await
            .unwrap();
        store
            .put_bytes(
                &Key::new(&format!("{BLOBS_PREFIX}{D}")).unwrap(),
                D.as_bytes().to_vec().into(),
            )
            .await
            .unwrap();
        assert!(matches!(
            collect(&store).await,
            Err(GcError::Summary { .. })
        ));
        assert_eq!(store.list(BLOBS_PREFIX).await.unwrap().len(), 4);
    }
}
