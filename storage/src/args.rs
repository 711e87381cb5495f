//! Artifact storage selected on the command line or through the environment.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use crate::{ArtifactStore, LocalStore, S3Config, S3Store, StorageError};

/// Which backend holds artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A directory (the embedded default; a volume in a cluster).
    Local,
    /// An S3 bucket (AWS or any S3-compatible server).
    S3,
}

/// Storage settings; S3 credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Artifact storage backend.
    #[arg(long, env = "CONDA_STORE_STORAGE", value_enum, default_value_t = Backend::Local)]
    pub storage: Backend,
    /// Root directory of the local backend.
    #[arg(
        long,
        env = "CONDA_STORE_STORAGE_DIR",
        default_value = "/var/lib/conda-store/artifacts"
    )]
    pub storage_dir: PathBuf,
    /// S3 endpoint URL (unset: AWS).
    #[arg(long, env = "CONDA_STORE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "CONDA_STORE_S3_BUCKET", default_value = "conda-store")]
    pub s3_bucket: String,
    /// S3 region.
    #[arg(long, env = "CONDA_STORE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Key prefix inside the bucket.
    #[arg(long, env = "CONDA_STORE_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
}

impl StorageArgs {
    /// Opens the configured store.
    pub fn open(&self) -> Result<Arc<dyn ArtifactStore>, StorageError> {
        Ok(match self.storage {
            Backend::Local => Arc::new(LocalStore::new(&self.storage_dir)?),
            Backend::S3 => Arc::new(S3Store::new(&self.s3_config())),
        })
    }

    /// The S3 settings (credentials from the environment).
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            bucket: self.s3_bucket.clone(),
            prefix: self.s3_prefix.clone(),
            access_key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            ..S3Config::default()
        }
    }
}
