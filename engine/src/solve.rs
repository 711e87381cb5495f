//! Solving: conda match specs + channels → the exact packages, per platform (resolvo through
//! `rattler_solve`). Channels are local (`file://`, a directory) or remote (`http(s)://`,
//! names under a channel alias); remote repodata is read as `repodata.json.zst` or CEP-16
//! shards where the channel has them, and kept in [`SolveRequest::repodata_cache`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, PackageName, ParseStrictness, RepoDataRecord,
    Subdir, Version, package::BuildString,
};
use rattler_repodata_gateway::Gateway;
use rattler_solve::{ChannelPriority, SolveStrategy, SolverImpl, SolverTask, resolvo};
use rattler_virtual_packages::VirtualPackages;
use url::Url;

/// The default time limit of one platform's solve.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What to solve.
#[derive(Debug, Clone, Default)]
pub struct SolveRequest {
    /// Channels in priority order: `file://` URLs or local directory paths.
    pub channels: Vec<String>,
    /// Conda match specs (`numpy >=1.26`, `python=3.11`).
    pub specs: Vec<String>,
    /// pip requirements (the `pip:` section), resolved after the conda part with
    /// [`SolveRequest::pip_config`] (see [`crate::pip`]).
    pub pip: Vec<String>,
    /// How pip sections are resolved; `None` refuses them.
    pub pip_config: Option<crate::pip::PipConfig>,
    /// The conda package cache the pip resolution's interpreter is installed from (a
    /// temporary one when `None`).
    pub package_cache: Option<PathBuf>,
    /// Where the pip resolution's interpreters are kept between solves (by the hashes of the
    /// python packages); `None` installs one for every solve.
    pub pip_interpreters: Option<PathBuf>,
    /// Target platforms (`linux-64`, `osx-arm64`, …); each is solved separately.
    pub platforms: Vec<String>,
    /// Virtual packages per platform (`__glibc=2.28=0`), replacing the default. When a platform
    /// has no entry, its baseline (`VirtualPackages::baseline_for_platform`) is used: host
    /// independent, so the same request always gives the same result.
    pub virtual_packages: BTreeMap<String, Vec<String>>,
    /// Time limit per platform; `None` means [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Base URL channel names (`conda-forge`) expand to, as conda's `channel_alias`. `None`
    /// leaves names unexpanded (and so unsupported while only local channels are).
    pub channel_alias: Option<String>,
    /// Bound on connecting to a channel and on waiting for its next bytes; `None` means
    /// [`crate::http::CONNECT_TIMEOUT`] and [`crate::http::IDLE_TIMEOUT`].
    pub network_timeout: Option<Duration>,
    /// A directory where remote repodata is kept between solves (shared by concurrent solves:
    /// entries are locked while written, shards are named by their hash), revalidated with
    /// HTTP caching (`ETag`/`If-None-Match`, `Last-Modified`, `Cache-Control`). `None`: a
    /// temporary directory, so every solve downloads the repodata again.
    pub repodata_cache: Option<PathBuf>,
}

/// One solved package: its record, the URL it is fetched from, its channel.
pub use rattler_conda_types::RepoDataRecord as Record;

/// The result of a solve.
#[derive(Debug, Clone, Default)]
pub struct Solution {
    /// The channels' normalised URLs (with a trailing slash), in priority order.
    pub channels: Vec<String>,
    /// The requested specs, as given.
    pub specs: Vec<String>,
    /// Per platform, the records to install, sorted by name.
    pub platforms: BTreeMap<String, Vec<RepoDataRecord>>,
    /// Per platform, the pip packages installed after the conda ones, sorted by name (none
    /// without a pip section).
    pub pip: BTreeMap<String, Vec<crate::pip::PipPackage>>,
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("unknown channel {channel}: {reason}")]
    UnknownChannel { channel: String, reason: String },
    #[error(
        "unsupported channel {0}: use a file://, http:// or https:// URL, a directory, or a name with a channel alias"
    )]
    UnsupportedChannel(String),
    #[error("invalid match spec {spec:?}: {message}")]
    InvalidSpec { spec: String, message: String },
    #[error("invalid platform {0:?}")]
    InvalidPlatform(String),
    #[error("invalid virtual package {spec:?} for {platform}: {message}")]
    InvalidVirtualPackage {
        platform: String,
        spec: String,
        message: String,
    },
    #[error("nothing to solve: {0}")]
    Empty(&'static str),
    #[error(
        "pip dependencies are not enabled on this deployment (got {}): remove the pip: section, or ask for pip support (uv) to be configured",
        .0.join(", ")
    )]
    PipNotSupported(Vec<String>),
    #[error(transparent)]
    Pip(#[from] crate::pip::PipError),
    #[error("preparing the interpreter for the pip section: {0}")]
    PipInterpreter(String),
    #[error("cannot solve for {platform}:\n{message}")]
    Unsolvable { platform: String, message: String },
    #[error("solving for {platform} took longer than {timeout:?}")]
    Timeout { platform: String, timeout: Duration },
    #[error("reading repodata for {platform}: {message}")]
    Repodata { platform: String, message: String },
    #[error("solver failed for {platform}: {message}")]
    Solver { platform: String, message: String },
}

/// Turn a channel string into a channel: an `http(s)://` URL as it is; a `file://` URL or a
/// directory path checked to exist and to have a `noarch/repodata.json`.
pub fn local_channel(channel: &str) -> Result<Channel, SolveError> {
    let unknown = |reason: String| SolveError::UnknownChannel {
        channel: channel.to_string(),
        reason,
    };
    let path = if channel.contains("://") {
        let mut url = Url::parse(channel).map_err(|e| unknown(e.to_string()))?;
        if matches!(url.scheme(), "http" | "https") {
            // Remote: whether it exists shows when its repodata is fetched.
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            return Ok(Channel::from_url(url));
        }
        if url.scheme() != "file" {
            return Err(SolveError::UnsupportedChannel(channel.to_string()));
        }
        url.to_file_path()
            .map_err(|()| unknown("not a local path".into()))?
    } else if Path::new(channel).is_absolute() || channel.starts_with('.') {
        Path::new(channel).to_path_buf()
    } else {
        // A channel name (`conda-forge`) or an alias: needs the network.
        return Err(SolveError::UnsupportedChannel(channel.to_string()));
    };
    if !path.is_dir() {
        return Err(unknown(format!("{} is not a directory", path.display())));
    }
    let path = path.canonicalize().map_err(|e| unknown(e.to_string()))?;
    if !path.join("noarch").join("repodata.json").is_file() {
        return Err(unknown(format!(
            "{} has no noarch/repodata.json (not an indexed channel)",
            path.display()
        )));
    }
    let url =
        Url::from_directory_path(&path).map_err(|()| unknown("not an absolute path".into()))?;
    Ok(Channel::from_url(url))
}

/// A channel name (`conda-forge`, `team/label`) expanded with `alias`; URLs and paths as they are.
pub fn expand_channel(channel: &str, alias: Option<&str>) -> String {
    let is_name =
        !channel.contains("://") && !channel.starts_with('/') && !channel.starts_with('.');
    match alias {
        Some(alias) if is_name => format!("{}/{}", alias.trim_end_matches('/'), channel),
        _ => channel.to_string(),
    }
}

fn parse_platform(platform: &str) -> Result<Subdir, SolveError> {
    let subdir =
        Subdir::from_str(platform).map_err(|_| SolveError::InvalidPlatform(platform.into()))?;
    if subdir == Subdir::NoArch || subdir.to_string() != platform {
        return Err(SolveError::InvalidPlatform(platform.into()));
    }
    Ok(subdir)
}

fn virtual_packages(
    request: &SolveRequest,
    platform: &str,
    subdir: Subdir,
) -> Result<Vec<GenericVirtualPackage>, SolveError> {
    match request.virtual_packages.get(platform) {
        None => Ok(VirtualPackages::baseline_for_platform(subdir)
            .into_generic_virtual_packages()
            .collect()),
        Some(specs) => specs
            .iter()
            .map(|s| {
                parse_virtual_package(s).map_err(|message| SolveError::InvalidVirtualPackage {
                    platform: platform.into(),
                    spec: s.clone(),
                    message,
                })
            })
            .collect(),
    }
}

/// `__name=version=build` (build defaults to `0`).
fn parse_virtual_package(s: &str) -> Result<GenericVirtualPackage, String> {
    let mut parts = s.splitn(3, '=');
    let name = parts.next().unwrap_or_default();
    if !name.starts_with("__") {
        return Err("virtual package names start with __".into());
    }
    let version = parts.next().ok_or("expected name=version[=build]")?;
    let build = parts.next().unwrap_or("0");
    Ok(GenericVirtualPackage {
        name: PackageName::from_str(name).map_err(|e| e.to_string())?,
        version: Version::from_str(version).map_err(|e| e.to_string())?,
        build_string: BuildString::from_str(build).map_err(|e| e.to_string())?,
    })
}

/// Parse and check a request: specs, platforms, channels.
fn prepare(request: &SolveRequest) -> Result<(Vec<MatchSpec>, Vec<Channel>), SolveError> {
    if !request.pip.is_empty() && request.pip_config.is_none() {
        return Err(SolveError::PipNotSupported(request.pip.clone()));
    }
    if request.platforms.is_empty() {
        return Err(SolveError::Empty("no platforms"));
    }
    // No specs is an empty environment (conda-store builds those), which needs no channel.
    if request.channels.is_empty() && !request.specs.is_empty() {
        return Err(SolveError::Empty("no channels"));
    }
    let specs = request
        .specs
        .iter()
        .map(|s| {
            MatchSpec::from_str(s, ParseStrictness::Lenient).map_err(|e| SolveError::InvalidSpec {
                spec: s.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for spec in &specs {
        if spec.name.as_exact().is_none() {
            return Err(SolveError::InvalidSpec {
                spec: spec.to_string(),
                message: "a package name is required".into(),
            });
        }
    }
    for platform in &request.platforms {
        parse_platform(platform)?;
    }
    let channels = request
        .channels
        .iter()
        .map(|c| local_channel(&expand_channel(c, request.channel_alias.as_deref())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((specs, channels))
}

/// Solve `request` for each of its platforms (one after the other).
pub async fn solve(request: &SolveRequest) -> Result<Solution, SolveError> {
    let (specs, channels) = prepare(request)?;
    let channel_urls = || channels.iter().map(|c| c.base_url.to_string()).collect();
    if specs.is_empty() {
        if !request.pip.is_empty() {
            return Err(crate::pip::PipError::NoPython {
                platform: request.platforms.join(", "),
            }
            .into());
        }
        return Ok(Solution {
            channels: channel_urls(),
            platforms: request
                .platforms
                .iter()
                .map(|p| (p.clone(), Vec::new()))
                .collect(),
            ..Default::default()
        });
    }
    crate::tls::ensure_crypto_provider();
    let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT);
    // A fresh gateway per solve: it caches repodata in memory, and channels change. Its disk
    // cache (remote repodata, revalidated by HTTP caching before use) is the configured one,
    // else a directory of this solve, never the home directory.
    let scratch;
    let cache = match &request.repodata_cache {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| SolveError::Repodata {
                platform: String::new(),
                message: format!("creating the repodata cache {}: {e}", dir.display()),
            })?;
            dir.clone()
        }
        None => {
            scratch = tempfile::tempdir().map_err(|e| SolveError::Repodata {
                platform: String::new(),
                message: format!("creating the repodata cache: {e}"),
            })?;
            scratch.path().to_path_buf()
        }
    };
    let client = match request.network_timeout {
        Some(t) => crate::http::client_with(t, t),
        None => crate::http::client(),
    };
    let gateway = Gateway::builder()
        .with_cache_dir(&cache)
        .with_client(client)
        .finish();
    let mut platforms = BTreeMap::new();
    for platform in &request.platforms {
        let subdir = parse_platform(platform)?;
        let vpkgs = virtual_packages(request, platform, subdir)?;
        let repodata = gateway
            .query(channels.clone(), [subdir, Subdir::NoArch], specs.clone())
            .recursive(true)
            .await
            .map_err(|e| SolveError::Repodata {
                platform: platform.clone(),
                message: crate::http::describe(
                    &e,
                    &channels
                        .iter()
                        .map(|c| c.base_url.to_string())
                        .collect::<Vec<_>>(),
                ),
            })?;
        let specs = specs.clone();
        let solved = tokio::task::spawn_blocking(move || {
            let task = SolverTask {
                specs,
                virtual_packages: vpkgs,
                timeout: Some(timeout),
                channel_priority: ChannelPriority::Strict,
                strategy: SolveStrategy::Highest,
                ..SolverTask::from_iter(&repodata)
            };
            resolvo::Solver.solve(task)
        })
        .await
        .map_err(|e| SolveError::Solver {
            platform: platform.clone(),
            message: e.to_string(),
        })?;
        let mut records = match solved {
            Ok(result) => result.records,
            Err(rattler_solve::SolveError::Unsolvable(messages)) => {
                return Err(SolveError::Unsolvable {
                    platform: platform.clone(),
                    message: messages.join("\n").trim_end().to_string(),
                });
            }
            Err(rattler_solve::SolveError::Cancelled) => {
                return Err(SolveError::Timeout {
                    platform: platform.clone(),
                    timeout,
                });
            }
            Err(e) => {
                return Err(SolveError::Solver {
                    platform: platform.clone(),
                    message: e.to_string(),
                });
            }
        };
        records.sort_by(|a, b| {
            a.package_record
                .name
                .as_normalized()
                .cmp(b.package_record.name.as_normalized())
        });
        platforms.insert(platform.clone(), records);
    }
    let mut solution = Solution {
        channels: channel_urls(),
        specs: request.specs.clone(),
        platforms,
        pip: BTreeMap::new(),
    };
    if let Some(cfg) = request
        .pip_config
        .as_ref()
        .filter(|_| !request.pip.is_empty())
    {
        solution.pip = solve_pip(request, cfg, &solution).await?;
    }
    Ok(solution)
}

/// The pip section resolved for every platform of `solution`, with the python of its linux-64
/// part installed into a scratch prefix as the resolver's interpreter.
async fn solve_pip(
    request: &SolveRequest,
    cfg: &crate::pip::PipConfig,
    solution: &Solution,
) -> Result<BTreeMap<String, Vec<crate::pip::PipPackage>>, SolveError> {
    let host = "linux-64";
    let records = solution.platforms.get(host).ok_or_else(|| {
        SolveError::PipInterpreter(format!(
            "a pip section is resolved with the environment's {host} python: add {host} to the platforms"
        ))
    })?;
    crate::pip::target_for(host, records)?;
    let work = tempfile::tempdir().map_err(|e| SolveError::PipInterpreter(e.to_string()))?;
    let cache = match &request.package_cache {
        Some(c) => c.clone(),
        None => work.path().join("pkgs"),
    };
    let prefix = interpreter_prefix(
        python_closure(records),
        request.pip_interpreters.as_deref(),
        work.path(),
        &cache,
    )
    .await?;
    let interpreter = prefix.join("bin").join("python");
    let mut out = BTreeMap::new();
    for (platform, records) in &solution.platforms {
        let target = crate::pip::target_for(platform, records)?;
        let glibc = request
            .virtual_packages
            .get(platform)
            .into_iter()
            .flatten()
            .find_map(|v| v.strip_prefix("__glibc="))
            .map(|v| v.split('=').next().unwrap_or(v));
        let packages = crate::pip::resolve(cfg, &request.pip, &interpreter, &target, glibc).await?;
        out.insert(platform.clone(), packages);
    }
    Ok(out)
}

/// A prefix holding `closure` (the python the resolver runs): kept under `shared` by the
/// closure's hashes, so the next solve with the same python finds it ready, or made in `work`
/// without `shared`. A new one is installed beside its final name and renamed into place, so
/// concurrent solves never see half of one (the loser of a race uses the winner's).
async fn interpreter_prefix(
    closure: Vec<RepoDataRecord>,
    shared: Option<&Path>,
    work: &Path,
    cache: &Path,
) -> Result<PathBuf, SolveError> {
    let err = |e: &dyn std::fmt::Display| SolveError::PipInterpreter(e.to_string());
    let Some(shared) = shared else {
        let prefix = work.join("python");
        crate::install::install_records(closure, "linux-64", &prefix, cache)
            .await
            .map_err(|e| err(&e))?;
        return Ok(prefix);
    };
    let mut ids: Vec<String> = closure
        .iter()
        .map(|r| {
            r.package_record
                .sha256
                .map(hex::encode)
                .unwrap_or_else(|| r.url.to_string())
        })
        .collect();
    ids.sort();
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ids.join("\n")));
    let done = shared.join(&key[..32]);
    if done.join("bin").join("python").exists() {
        return Ok(done);
    }
    std::fs::create_dir_all(shared).map_err(|e| err(&e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(shared)
        .map_err(|e| err(&e))?;
    let prefix = tmp.path().join("python");
    crate::install::install_records(closure, "linux-64", &prefix, cache)
        .await
        .map_err(|e| err(&e))?;
    match std::fs::rename(&prefix, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.join("bin").join("python").exists() => Ok(done),
        Err(e) => Err(err(&e)),
    }
}

/// `python` and what it depends on, transitively, among `records`.
fn python_closure(records: &[RepoDataRecord]) -> Vec<RepoDataRecord> {
    let by_name: BTreeMap<&str, &RepoDataRecord> = records
        .iter()
        .map(|r| (r.package_record.name.as_normalized(), r))
        .collect();
    let mut todo = vec!["python"];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(r) = by_name.get(name) {
            for d in &r.package_record.depends {
                if let Some(dep) = d.split_whitespace().next()
                    && let Some((k, _)) = by_name.get_key_value(dep)
                {
                    todo.push(k);
                }
            }
        }
    }
    seen.iter()
        .filter_map(|n| by_name.get(n).map(|r| (*r).clone()))
        .collect()
}
