//! `step solve` and `step install`: the specification solved into a lockfile (the hand-off to
//! every later step), and the lockfile installed into the build's prefix.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use conda_store_crds::spec::{NormalizedSpec, normalize_yaml_local};
use conda_store_crds::{Artifact, ArtifactKind, Policy};
use conda_store_engine::install::install_lockfile;
use conda_store_engine::lockfile::{
    LockInput, export_environment_with, lockfile_pip, solution_from_locked, write_lockfile,
};
use conda_store_engine::pip::PipConfig;
use conda_store_engine::solve::{Solution, SolveRequest, solve};
use conda_store_storage::ArtifactStore;

use super::{StepArgs, StepLog, StepOutput, build_key};

/// The lockfile's name under the build key.
pub const LOCKFILE: &str = "conda-lock.yaml";

/// `step solve` arguments.
#[derive(Debug, Clone, Args)]
pub struct SolveArgs {
    /// The specification file: a normalised spec as JSON or an environment.yaml.
    #[arg(long, required_unless_present_any = ["specification_json", "specification_key"])]
    pub specification: Option<PathBuf>,
    /// The normalised specification itself, as JSON.
    #[arg(
        long,
        env = "CONDA_STORE_SPECIFICATION",
        conflicts_with = "specification"
    )]
    pub specification_json: Option<String>,
    /// The storage key of the normalised specification as JSON: what the operator gives its
    /// Jobs (an environment variable or argument is limited by the kernel's argument size; a
    /// lockfile Environment of hundreds of packages comes close to it).
    #[arg(
        long,
        env = "CONDA_STORE_SPECIFICATION_KEY",
        conflicts_with_all = ["specification", "specification_json"]
    )]
    pub specification_key: Option<String>,
    /// Policy to apply to an environment.yaml (YAML or JSON).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Platforms to solve for when the specification names none.
    #[arg(long = "platform", default_value = "linux-64")]
    pub platforms: Vec<String>,
    /// The environment's name, for the YAML export.
    #[arg(long, default_value = "environment")]
    pub name: String,
    /// Base URL channel names expand to (conda's channel_alias), e.g. a `file://` directory
    /// of mirrored channels.
    #[arg(long, env = "CONDA_STORE_CHANNEL_ALIAS")]
    pub channel_alias: Option<String>,
    /// Where remote repodata is kept between solves (shared by the solve Jobs, revalidated
    /// with HTTP caching); without it every solve downloads the channels' repodata again.
    #[arg(long, env = "CONDA_STORE_REPODATA_CACHE")]
    pub repodata_cache: Option<PathBuf>,
    /// The conda package cache the pip resolver's interpreter is installed from.
    #[arg(long, env = "CONDA_STORE_PKGS_DIR")]
    pub package_cache: Option<PathBuf>,
    /// Where the pip resolver's interpreters are kept between solves.
    #[arg(long, env = "CONDA_STORE_PIP_INTERPRETERS")]
    pub pip_interpreters: Option<PathBuf>,
    #[command(flatten)]
    pub pip: PipArgs,
}

/// How pip sections are resolved and installed (`crate::pip` of the engine).
#[derive(Debug, Clone, Args)]
pub struct PipArgs {
    /// The uv binary (the image carries it); without it pip sections are refused.
    #[arg(long, env = "CONDA_STORE_UV", default_value = "/usr/local/bin/uv")]
    pub uv: PathBuf,
    #[command(flatten)]
    pub index: conda_store_operator::config::PipIndexArgs,
    /// uv's cache (downloads and unpacked wheels).
    #[arg(long, env = "CONDA_STORE_PIP_CACHE")]
    pub pip_cache: Option<PathBuf>,
}

impl PipArgs {
    /// The engine's configuration, when uv is there.
    pub fn config(&self) -> Option<PipConfig> {
        self.uv.is_file().then(|| {
            let mut cfg = PipConfig::new(&self.uv);
            cfg.index_url = self.index.pip_index_url.clone();
            cfg.extra_index_urls = self.index.pip_extra_index_urls.clone();
            cfg.cache_dir = self.pip_cache.clone();
            cfg.allow_build = self.index.pip_allow_build;
            cfg
        })
    }
}

/// `step install` arguments.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The prefix to install into (`<root>/<namespace>/<build>`).
    #[arg(long)]
    pub prefix: PathBuf,
    /// The platform of the lockfile to install.
    #[arg(long, default_value = "linux-64")]
    pub platform: String,
    /// The shared package cache.
    #[arg(
        long,
        env = "CONDA_STORE_PKGS_DIR",
        default_value = "/var/cache/conda-store/pkgs"
    )]
    pub package_cache: PathBuf,
    #[command(flatten)]
    pub pip: PipArgs,
}

async fn read_spec(args: &SolveArgs, store: &dyn ArtifactStore) -> anyhow::Result<NormalizedSpec> {
    if let Some(key) = &args.specification_key {
        let bytes = store
            .get_bytes(&conda_store_storage::Key::new(key)?)
            .await
            .with_context(|| format!("reading the specification {key}"))?;
        return serde_json::from_slice(&bytes).context("the stored specification is not valid");
    }
    let text = match (&args.specification_json, &args.specification) {
        (Some(json), _) => {
            return serde_json::from_str(json).context("the specification JSON is not valid");
        }
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => anyhow::bail!("no specification given"),
    };
    if let Ok(spec) = serde_json::from_str::<NormalizedSpec>(&text) {
        return Ok(spec);
    }
    let policy: Policy = match &args.policy {
        Some(p) => serde_yaml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("reading policy {}", p.display()))?,
        None => Policy::default(),
    };
    normalize_yaml_local(&text, &policy).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Solves and stores the lockfile and the YAML export.
pub async fn run_solve(
    args: SolveArgs,
    step: StepArgs,
    store: Arc<dyn ArtifactStore>,
    log: StepLog,
) -> anyhow::Result<StepOutput> {
    let spec = read_spec(&args, store.as_ref()).await?;
    if let Some(lock) = &spec.lockfile {
        log.line(format!(
            "the specification is a lockfile of {} packages for {}: no solve",
            lock.packages.len(),
            lock.platforms.join(", ")
        ));
        let solution = solution_from_locked(
            &lock.channels,
            lock.packages.iter().map(|p| LockInput {
                manager: &p.manager,
                platform: &p.platform,
                name: &p.name,
                version: &p.version,
                url: &p.url,
                md5: p.md5.as_deref(),
                sha256: p.sha256.as_deref(),
                dependencies: &p.dependencies,
            }),
        )?;
        let platforms: Vec<String> = solution.platforms.keys().cloned().collect();
        return store_solution(&solution, &platforms, &spec, &args, &step, &store, &log).await;
    }
    let platforms = if spec.platforms.is_empty() {
        args.platforms.clone()
    } else {
        spec.platforms.clone()
    };
    log.line(format!(
        "solving {} dependencies from {} for {}",
        spec.dependencies.len(),
        spec.channels.join(", "),
        platforms.join(", ")
    ));
    let solution = solve(&SolveRequest {
        channels: spec.channels.clone(),
        specs: spec.dependencies.clone(),
        pip: spec.pip.clone(),
        pip_config: args.pip.config(),
        package_cache: args.package_cache.clone(),
        pip_interpreters: args.pip_interpreters.clone(),
        platforms: platforms.clone(),
        channel_alias: args.channel_alias.clone(),
        repodata_cache: args.repodata_cache.clone(),
        ..Default::default()
    })
    .await?;
    if !spec.pip.is_empty() {
        let counts: Vec<String> = solution
            .pip
            .iter()
            .map(|(p, pkgs)| format!("{p}: {}", pkgs.len()))
            .collect();
        log.line(format!("pip section resolved: {}", counts.join(", ")));
    }
    if let Some(dir) = &args.repodata_cache {
        // Shards and bodies unused for a month go; a pruned entry is only fetched again.
        match conda_store_engine::cache_dir::CacheDir::new(dir).and_then(|c| c.prune()) {
            Ok(p) if p.removed > 0 => {
                log.line(format!("repodata cache: {} old entries removed", p.removed))
            }
            Ok(_) => {}
            Err(e) => log.line(format!("repodata cache: pruning {}: {e}", dir.display())),
        }
    }
    store_solution(&solution, &platforms, &spec, &args, &step, &store, &log).await
}

/// Stores the lockfile and the YAML export of a solution.
async fn store_solution(
    solution: &Solution,
    platforms: &[String],
    spec: &NormalizedSpec,
    args: &SolveArgs,
    step: &StepArgs,
    store: &Arc<dyn ArtifactStore>,
    log: &StepLog,
) -> anyhow::Result<StepOutput> {
    let counts: serde_json::Map<String, serde_json::Value> = solution
        .platforms
        .iter()
        .map(|(p, records)| (p.clone(), records.len().into()))
        .collect();
    log.line(format!("solved: {counts:?}"));
    let lock = write_lockfile(solution)?;
    let lock_info = store
        .put_bytes(&build_key(step, LOCKFILE)?, lock.into())
        .await?;
    // The YAML export carries the environment's variables: the install step records them in
    // the prefix from there (the lockfile has no place for them).
    let export = export_environment_with(solution, &platforms[0], &args.name, &spec.variables)?;
    let yaml_info = store
        .put_bytes(&build_key(step, "environment.yaml")?, export.into())
        .await?;
    let artifact = |kind, info: conda_store_storage::ObjectInfo| Artifact {
        kind,
        key: info.key,
        size: Some(info.size),
        digest: info.sha256.map(|h| format!("sha256:{h}")),
    };
    Ok(StepOutput {
        artifacts: vec![
            artifact(ArtifactKind::Lockfile, lock_info),
            artifact(ArtifactKind::Yaml, yaml_info),
        ],
        details: serde_json::json!({ "packages": counts }),
    })
}

/// Installs the build's stored lockfile into the prefix.
pub async fn run_install(
    args: InstallArgs,
    step: StepArgs,
    store: Arc<dyn ArtifactStore>,
    log: StepLog,
) -> anyhow::Result<StepOutput> {
    let key = build_key(&step, LOCKFILE)?;
    let lock = String::from_utf8(store.get_bytes(&key).await?.to_vec())
        .context("the stored lockfile is not UTF-8")?;
    log.line(format!(
        "installing {key} ({}) into {}",
        args.platform,
        args.prefix.display()
    ));
    let summary =
        install_lockfile(&lock, &args.platform, &args.prefix, &args.package_cache).await?;
    log.line(format!("{} operations", summary.operations));
    let pip = lockfile_pip(&lock, &args.platform)?;
    if !pip.is_empty() {
        let cfg = args.pip.config().ok_or_else(|| {
            anyhow::anyhow!(
                "the lockfile has {} pip packages, and this deployment has no uv ({}) to install them",
                pip.len(),
                args.pip.uv.display()
            )
        })?;
        let done = conda_store_engine::pip::install(&cfg, &args.prefix, &pip).await?;
        log.line(format!("{} pip packages installed", done.packages));
    }
    // The environment's variables, from the solve step's YAML export, into conda-meta/state
    // (what `conda activate` sets, and the image's environment).
    let vars = match store
        .get_bytes(&build_key(&step, "environment.yaml")?)
        .await
    {
        Ok(bytes) => {
            #[derive(serde::Deserialize)]
            struct Export {
                #[serde(default)]
                variables: std::collections::BTreeMap<String, String>,
            }
            serde_yaml::from_slice::<Export>(&bytes)
                .context("the stored environment.yaml is not valid")?
                .variables
        }
        Err(conda_store_storage::StorageError::NotFound(_)) => Default::default(),
        Err(e) => return Err(e.into()),
    };
    conda_store_engine::prefix::write_env_vars(&args.prefix, &vars)?;
    if !vars.is_empty() {
        log.line(format!(
            "recorded {} variables in conda-meta/state",
            vars.len()
        ));
    }
    Ok(StepOutput {
        artifacts: Vec::new(),
        details: serde_json::json!({ "operations": summary.operations }),
    })
}
