//! The operator's configuration: flags, their environment variables, and an optional YAML
//! config file whose keys are the flags' long names (`max-builds: 8`). Precedence: flags,
//! then the file, then the environment, then the defaults.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use conda_store_crds::Policy;

use conda_store_storage::args::StorageArgs;

/// Where a volume of the Jobs comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// A directory of the node (single-node clusters and local use).
    HostPath(String),
    /// A PersistentVolumeClaim (ReadWriteMany when Jobs run on several nodes).
    Claim(String),
}

impl FromStr for VolumeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("hostPath", p)) if p.starts_with('/') => Ok(VolumeSpec::HostPath(p.into())),
            Some(("pvc", c)) if !c.is_empty() => Ok(VolumeSpec::Claim(c.into())),
            _ => Err(format!(
                "{s:?} is not hostPath:/absolute/path or pvc:CLAIM-NAME"
            )),
        }
    }
}

/// `conda-store-operator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A YAML file of settings keyed by these flags' long names.
    #[arg(long, env = "CONDA_STORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The namespace of the operator's own objects (leader Lease, build-id counter).
    #[arg(
        long,
        env = "CONDA_STORE_OPERATOR_NAMESPACE",
        default_value = "conda-store"
    )]
    pub operator_namespace: String,
    /// The image the build Jobs run (this binary's image).
    #[arg(long, env = "CONDA_STORE_JOB_IMAGE")]
    pub job_image: String,
    /// imagePullPolicy of the Jobs.
    #[arg(
        long,
        env = "CONDA_STORE_JOB_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub job_image_pull_policy: String,
    /// Run every build's Jobs in this namespace instead of the build's own: the volume claims
    /// and the S3 Secret then exist once, there (quotas and policies of that namespace apply
    /// to all builds).
    #[arg(long, env = "CONDA_STORE_JOB_NAMESPACE")]
    pub job_namespace: Option<String>,
    /// Seconds between collections of image blobs no build references (0: never).
    #[arg(long, env = "CONDA_STORE_BLOB_GC_INTERVAL", default_value_t = 3600)]
    pub blob_gc_interval_seconds: u64,
    /// The user id the Jobs run as.
    #[arg(long, env = "CONDA_STORE_JOB_USER", default_value_t = 65532)]
    pub job_user: i64,
    /// How many builds run at once; the others wait in id order.
    #[arg(long, env = "CONDA_STORE_MAX_BUILDS", default_value_t = 4)]
    pub max_builds: usize,
    /// CPU limit of every build Job's container (Pod Security "restricted" asks for
    /// bounded pods; a build never needs more than the node's cores).
    #[arg(long, env = "CONDA_STORE_JOB_CPU_LIMIT", default_value = "2")]
    pub job_cpu_limit: String,
    /// Memory limit of every build Job's container (a large solve or pack stays well under).
    #[arg(long, env = "CONDA_STORE_JOB_MEMORY_LIMIT", default_value = "4Gi")]
    pub job_memory_limit: String,
    /// Ephemeral-storage limit of every build Job's container (its emptyDir `/tmp`).
    #[arg(long, env = "CONDA_STORE_JOB_EPHEMERAL_LIMIT", default_value = "8Gi")]
    pub job_ephemeral_limit: String,
    /// Retries of a failed step's pod before the step fails.
    #[arg(long, env = "CONDA_STORE_JOB_BACKOFF_LIMIT", default_value_t = 1)]
    pub job_backoff_limit: i32,
    /// The archive's compression: gzip (`archive.tar.gz`, conda-pack's format, which the
    /// `conda-store` client's `run` reads) or zstd (`archive.tar.zst`, smaller and faster to
    /// pack and unpack, for deployments whose users download archives with their own tools).
    #[arg(long, env = "CONDA_STORE_ARCHIVE_FORMAT", value_enum, default_value_t = ArchiveFormat::Gzip)]
    pub archive_format: ArchiveFormat,
    /// Seconds a step's pod may run.
    #[arg(long, env = "CONDA_STORE_JOB_DEADLINE", default_value_t = 3600)]
    pub job_deadline_seconds: i64,
    /// Seconds finished Jobs are kept (where the TTL controller runs).
    #[arg(long, env = "CONDA_STORE_JOB_TTL", default_value_t = 86400)]
    pub job_ttl_seconds: i32,
    /// Where Jobs see the environments volume; prefixes are `<dir>/<namespace>/<build>`.
    #[arg(
        long,
        env = "CONDA_STORE_ENVS_DIR",
        default_value = "/var/lib/conda-store/envs"
    )]
    pub envs_dir: String,
    /// The environments volume: `hostPath:/dir` or `pvc:NAME`.
    #[arg(long, env = "CONDA_STORE_ENVS_VOLUME")]
    pub envs_volume: VolumeSpec,
    /// Where the operator itself sees the environments volume, if it does: it then switches
    /// each environment's current link (`<dir>/<namespace>/<environment>`) and removes the
    /// prefixes of deleted builds.
    #[arg(long, env = "CONDA_STORE_LOCAL_ENVS_DIR")]
    pub local_envs_dir: Option<PathBuf>,
    /// The volume holding the local artifact store (mounted at --storage-dir in Jobs):
    /// `hostPath:/dir` or `pvc:NAME`. Required with the local backend.
    #[arg(long, env = "CONDA_STORE_STORAGE_VOLUME")]
    pub storage_volume: Option<VolumeSpec>,
    /// For the S3 backend: a Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`,
    /// which must exist in every namespace whose builds run (the Jobs run there).
    #[arg(long, env = "CONDA_STORE_S3_SECRET")]
    pub s3_secret: Option<String>,
    /// The global build policy (YAML: allowedChannels, defaultChannels, defaultPackages,
    /// requiredPackages, channelAlias); a Namespace's policy overrides it field by field.
    #[arg(long, env = "CONDA_STORE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Where pip sections resolve from (given to the solve and install Jobs).
    #[command(flatten)]
    pub pip: PipIndexArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "CONDA_STORE_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: String,
    /// Log as JSON lines (production); otherwise human-readable.
    #[arg(long, env = "CONDA_STORE_LOG_JSON")]
    pub log_json: bool,
    /// Take part in leader election (off: act alone, for a single local process).
    #[arg(long, env = "CONDA_STORE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// This replica's name in the Lease (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Artifact storage (the operator deletes the artifacts of deleted builds).
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The indexes of pip sections: set on the operator, passed to its Jobs by the same variables,
/// read there by the steps (one declaration for both).
#[derive(Debug, Clone, Default, Args)]
pub struct PipIndexArgs {
    /// The index pip sections resolve from (PEP 503 simple API; PyPI when unset). A pip
    /// section's own `--index-url` line overrides it.
    #[arg(long, env = "CONDA_STORE_PIP_INDEX_URL")]
    pub pip_index_url: Option<String>,
    /// Further indexes pip sections resolve from, after the first.
    #[arg(
        long = "pip-extra-index-url",
        env = "CONDA_STORE_PIP_EXTRA_INDEX_URLS",
        value_delimiter = ','
    )]
    pub pip_extra_index_urls: Vec<String>,
    /// Let a pip package with no wheel be built from its source distribution in the build pod
    /// (off: such a package is refused, naming it).
    #[arg(long, env = "CONDA_STORE_PIP_ALLOW_BUILD")]
    pub pip_allow_build: bool,
}

impl RunArgs {
    /// The global policy from `--policy`.
    pub fn global_policy(&self) -> anyhow::Result<Policy> {
        use anyhow::Context;
        match &self.policy {
            None => Ok(Policy::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading the policy {}", p.display()))?;
                serde_yaml::from_str(&text)
                    .with_context(|| format!("reading the policy {}", p.display()))
            }
        }
    }

    /// The lease duration and how often it is renewed.
    pub fn lease_timing(&self) -> (Duration, Duration) {
        (Duration::from_secs(15), Duration::from_secs(4))
    }
}

/// The arguments a config file stands for: `--key=value` for each scalar, repeated for
/// lists, `--key` for `true`. They go before the command line's, so flags win.
pub fn file_args(text: &str) -> Result<Vec<String>, String> {
    let map: serde_yaml::Mapping = serde_yaml::from_str(text)
        .map_err(|e| format!("the config file is not a YAML mapping: {e}"))?;
    let mut args = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| format!("config key {k:?} is not a string"))?
            .to_string();
        let scalar = |v: &serde_yaml::Value| -> Result<String, String> {
            match v {
                serde_yaml::Value::String(s) => Ok(s.clone()),
                serde_yaml::Value::Number(n) => Ok(n.to_string()),
                serde_yaml::Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("config key {key}: {other:?} is not a scalar")),
            }
        };
        match &v {
            serde_yaml::Value::Sequence(items) => {
                for item in items {
                    args.push(format!("--{key}={}", scalar(item)?));
                }
            }
            serde_yaml::Value::Null => {}
            other => args.push(format!("--{key}={}", scalar(other)?)),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs() {
        assert_eq!(
            "hostPath:/srv/envs".parse::<VolumeSpec>(),
            Ok(VolumeSpec::HostPath("/srv/envs".into()))
        );
        assert_eq!(
            "pvc:envs".parse::<VolumeSpec>(),
            Ok(VolumeSpec::Claim("envs".into()))
        );
        assert!("hostPath:relative".parse::<VolumeSpec>().is_err());
        assert!("nfs:/x".parse::<VolumeSpec>().is_err());
    }

    #[test]
    fn config_file_becomes_flags() {
        let args = file_args("max-builds: 8\nleader-election: false\njob-image: img:1\n").unwrap();
        assert_eq!(
            args,
            vec![
                "--max-builds=8",
                "--leader-election=false",
                "--job-image=img:1"
            ]
        );
        assert!(file_args("- a\n- b\n").is_err());
        assert!(file_args("x: {a: 1}\n").is_err());
    }
}

/// The compression of a build's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum ArchiveFormat {
    /// gzip-compressed tar (`archive.tar.gz`): conda-pack's format, what conda-store serves.
    Gzip,
    /// zstd-compressed tar (`archive.tar.zst`).
    Zstd,
}
