//! `step image`: an OCI image of the installed prefix. Its blobs go to storage under
//! `blobs/sha256/<hex>`, shared by every build (layers of the same package are the same blob),
//! and the image summary to `<build_key>/image.json`, which the registry serves from.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use conda_store_crds::{Artifact, ArtifactKind};
use conda_store_engine::image::{self, BaseImage, ImageOptions, LayerCache};
use conda_store_storage::{ArtifactStore, Key};

use super::{StepArgs, StepLog, StepOutput, build_key};

/// `step image` arguments.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// The installed prefix.
    #[arg(long)]
    pub prefix: PathBuf,
    /// The environment's name (CONDA_DEFAULT_ENV, image title).
    #[arg(long)]
    pub name: String,
    /// Where the prefix lives inside the image (default `/opt/conda/envs/<name>`).
    #[arg(long)]
    pub image_prefix: Option<String>,
    /// The conda-store build id, set as a label.
    #[arg(long)]
    pub build_id: Option<String>,
    /// Base image: an OCI layout directory.
    #[arg(long, requires = "base_ref")]
    pub base_layout: Option<PathBuf>,
    /// Base image: its tag or digest in that layout.
    #[arg(long, requires = "base_layout")]
    pub base_ref: Option<String>,
    /// Environment variables to set, `NAME=VALUE`, repeatable.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Where the layout is assembled before upload (default: the system temp dir).
    #[arg(long, env = "CONDA_STORE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// A directory where compressed layers are kept for the next image holding the same
    /// package files (a rebuild), which then copies instead of compressing them. Shared by
    /// every build; layers unused for 30 days are removed.
    #[arg(long, env = "CONDA_STORE_IMAGE_CACHE")]
    pub layer_cache: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// Builds the image and uploads its blobs (skipping blobs storage already holds).
pub async fn run(
    args: ImageArgs,
    step: StepArgs,
    store: Arc<dyn ArtifactStore>,
    log: StepLog,
) -> anyhow::Result<StepOutput> {
    let layout = match &args.work_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating the temporary image layout")?;
    let image_prefix = args
        .image_prefix
        .clone()
        .unwrap_or_else(|| format!("/opt/conda/envs/{}", args.name));
    let mut options = ImageOptions::new(&args.name);
    options.build_id = args.build_id.clone();
    // The environment's variables (recorded in the prefix by the install step), then the
    // ones given here.
    options.env = conda_store_engine::prefix::read_env_vars(&args.prefix)?;
    options.env.extend(args.env.iter().cloned());
    options.base = args
        .base_layout
        .clone()
        .zip(args.base_ref.clone())
        .map(|(layout, reference)| BaseImage { layout, reference });
    if let Some(dir) = &args.layer_cache {
        options.layer_cache = Some(
            LayerCache::new(dir)
                .with_context(|| format!("opening the layer cache {}", dir.display()))?,
        );
    }
    log.line(format!(
        "building the image of {} at {image_prefix}",
        args.prefix.display()
    ));
    let (prefix, out) = (args.prefix.clone(), layout.path().to_path_buf());
    let summary = tokio::task::spawn_blocking(move || {
        image::build_image(&prefix, &image_prefix, &out, &options)
    })
    .await
    .context("the image task panicked")??;
    log.line(format!(
        "built {} with {} layers ({} from the layer cache, {} bytes); uploading blobs",
        summary.manifest_digest,
        summary.layers.len(),
        summary.reused_layers,
        summary.total_size
    ));
    let blobs = layout.path().join("blobs/sha256");
    let (mut uploaded, mut present) = (0u64, 0u64);
    let mut entries: Vec<_> = std::fs::read_dir(&blobs)
        .with_context(|| format!("reading {}", blobs.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let hex = name.to_str().context("a blob name is not UTF-8")?;
        let key = Key::new(&format!("blobs/sha256/{hex}"))?;
        let size = entry.metadata()?.len();
        // Content-addressed: an object of the same size under the digest is the same blob.
        if store.head(&key).await?.is_some_and(|o| o.size == size) {
            present += 1;
            continue;
        }
        store.put_file(&key, &entry.path()).await?;
        uploaded += 1;
    }
    log.line(format!(
        "{uploaded} blobs uploaded, {present} already stored"
    ));
    let key = build_key(&step, "image.json")?;
    let info = store
        .put_bytes(&key, serde_json::to_vec_pretty(&summary)?.into())
        .await?;
    Ok(StepOutput {
        artifacts: vec![Artifact {
            kind: ArtifactKind::Image,
            key: info.key,
            size: Some(summary.total_size),
            digest: Some(summary.manifest_digest.clone()),
        }],
        details: serde_json::json!({
            "manifestDigest": summary.manifest_digest,
            "layers": summary.layers.len(),
            "reusedLayers": summary.reused_layers,
            "blobsUploaded": uploaded,
            "blobsPresent": present,
        }),
    })
}
