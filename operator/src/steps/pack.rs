//! `step pack`: a relocatable archive of the installed prefix, stored as the build's archive.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use conda_store_crds::{Artifact, ArtifactKind};
use conda_store_engine::pack::{self, Compression, SegmentCache};
use conda_store_operator::config::ArchiveFormat as Format;
use conda_store_storage::ArtifactStore;

use super::{StepArgs, StepLog, StepOutput, build_key};

/// `step pack` arguments.
#[derive(Debug, Clone, Args)]
pub struct PackArgs {
    /// The installed prefix.
    #[arg(long)]
    pub prefix: PathBuf,
    /// The prefix path its files embed, when it differs from `--prefix` (a volume mounted
    /// elsewhere than where the environment was installed).
    #[arg(long)]
    pub embedded_prefix: Option<String>,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = Format::Gzip)]
    pub format: Format,
    /// Where the archive is written before upload (default: the system temp dir).
    #[arg(long, env = "CONDA_STORE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// A directory where compressed package segments are kept for the next pack of an
    /// environment holding the same package files (a rebuild), which then copies instead of
    /// compressing them. Shared by every build; segments unused for 30 days are removed.
    #[arg(long, env = "CONDA_STORE_PACK_CACHE")]
    pub segment_cache: Option<PathBuf>,
}

/// Packs `args.prefix` and stores it under `<build_key>/archive.<ext>`.
pub async fn run(
    args: PackArgs,
    step: StepArgs,
    store: Arc<dyn ArtifactStore>,
    log: StepLog,
) -> anyhow::Result<StepOutput> {
    let compression = match args.format {
        Format::Zstd => Compression::default(),
        // conda-pack's default level.
        Format::Gzip => Compression::Gzip { level: 4 },
    };
    let key = build_key(&step, &format!("archive.{}", compression.extension()))?;
    let embedded = match &args.embedded_prefix {
        Some(p) => p.clone(),
        None => args
            .prefix
            .to_str()
            .context("the prefix path is not UTF-8")?
            .to_string(),
    };
    let work = match &args.work_dir {
        Some(d) => tempfile::NamedTempFile::new_in(d),
        None => tempfile::NamedTempFile::new(),
    }
    .context("creating the temporary archive")?;
    log.line(format!(
        "packing {} ({:?})",
        args.prefix.display(),
        args.format
    ));
    let out = std::io::BufWriter::new(work.reopen().context("opening the temporary archive")?);
    let cache = match &args.segment_cache {
        Some(dir) => Some(
            SegmentCache::new(dir)
                .with_context(|| format!("opening the segment cache {}", dir.display()))?,
        ),
        None => None,
    };
    let prefix = args.prefix.clone();
    let summary = tokio::task::spawn_blocking(move || {
        pack::pack_with_cache(&prefix, &embedded, compression, cache.as_ref(), out)
    })
    .await
    .context("the pack task panicked")??;
    log.line(format!(
        "packed {} files, {} bytes into {} bytes ({} of {} segments from the segment cache); \
         uploading to {key}",
        summary.files,
        summary.bytes_in,
        summary.bytes_out,
        summary.reused_segments,
        summary.segments
    ));
    let info = store.put_file(&key, work.path()).await?;
    Ok(StepOutput {
        artifacts: vec![Artifact {
            kind: ArtifactKind::Archive,
            key: info.key,
            size: Some(info.size),
            digest: Some(format!("sha256:{}", summary.sha256)),
        }],
        details: serde_json::json!({
            "files": summary.files,
            "bytesIn": summary.bytes_in,
            "prefixFiles": summary.prefix_files,
            "segments": summary.segments,
            "reusedSegments": summary.reused_segments,
        }),
    })
}
