//! pip sections: the `pip:` requirements of an environment resolved against a Python package
//! index for the environment's own Python, locked as conda-lock `manager: pip` entries, and
//! installed into the prefix, all by [uv](https://github.com/astral-sh/uv) run as a program.
//!
//! **Why the uv program and not its crates.** The uv crates add about 256 crates to the build
//! and are not published for reuse (pixi takes them from git, patched, with ~11k lines of glue);
//! the `uv` wheel on PyPI holds one static binary (44 MB) that the image carries, pinned by hash.
//!
//! **Conda comes first (pixi's rule).** The Python distributions the conda part installs are
//! treated as installed: each is pinned to its conda version (a constraint) and offered to the
//! resolver as a metadata-only stub wheel, so pip never replaces, upgrades or duplicates one,
//! and a requirement that needs another version is a conflict naming the conda package. Their
//! stubs are never emitted into the lockfile.
//!
//! **An interpreter.** uv resolves with a real interpreter, whose markers it then overrides with
//! the target's Python version and platform; the solve installs the solved `python` (and what it
//! needs) of the linux-64 solution into a scratch prefix for that. Installing runs the
//! environment's own Python. Both run code the environment's channels supplied, so uv runs with
//! a cleared environment and the calling process is made non-dumpable first: its
//! `/proc/<pid>/environ` (storage credentials) is then unreadable to the child.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conda_store_crds::spec::{PipLine, parse_pip_line};
use rattler_conda_types::RepoDataRecord;
use serde::{Deserialize, Serialize};

/// PyPI's simple index, the default.
pub const PYPI: &str = "https://pypi.org/simple";

/// How a pip section is resolved and installed.
#[derive(Debug, Clone)]
pub struct PipConfig {
    /// The uv binary.
    pub uv: PathBuf,
    /// The index (PEP 503 simple API); [`PYPI`] when `None`.
    pub index_url: Option<String>,
    /// Further indexes, searched after the first.
    pub extra_index_urls: Vec<String>,
    /// Credentials per index host, given to uv through a netrc file (never in a URL, so never
    /// in a lockfile or a log).
    pub credentials: Vec<IndexCredential>,
    /// Whether a package with no wheel for the target may be built from its sdist (in the Job,
    /// with build isolation). Off by default: an sdist-only package is refused.
    pub allow_build: bool,
    /// uv's cache (downloads, unpacked wheels): installs hard-link from it when it shares a file
    /// system with the prefix.
    pub cache_dir: Option<PathBuf>,
    /// Bound on one HTTP request of uv (seconds); uv retries a failed request twice.
    pub http_timeout: Duration,
}

impl PipConfig {
    /// A configuration with PyPI, no credentials, wheels only.
    pub fn new(uv: impl Into<PathBuf>) -> Self {
        Self {
            uv: uv.into(),
            index_url: None,
            extra_index_urls: Vec::new(),
            credentials: Vec::new(),
            allow_build: false,
            cache_dir: None,
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// A user name and password for the indexes on one host.
#[derive(Debug, Clone)]
pub struct IndexCredential {
    pub host: String,
    pub username: String,
    pub password: String,
}

/// One locked pip package: the wheel (or sdist) an install fetches, by URL and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipPackage {
    /// The normalised project name (PEP 503).
    pub name: String,
    pub version: String,
    pub url: String,
    /// Lowercase hex.
    pub sha256: String,
    /// The projects it requires in this resolution, to `*` (the edge, not the specifier).
    pub dependencies: BTreeMap<String, String>,
}

/// What the resolution targets: one platform's Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTarget {
    /// The conda platform (`linux-64`).
    pub platform: String,
    /// The solved python's version (`3.11.2`).
    pub version: String,
    /// The Python distributions the conda part installs: normalised name → version.
    pub provided: BTreeMap<String, String>,
}

/// Why a pip section could not be resolved or installed.
#[derive(Debug, thiserror::Error)]
pub enum PipError {
    #[error("a pip section needs python among the conda dependencies for {platform}")]
    NoPython { platform: String },
    #[error("pip packages cannot be resolved for {0}: no wheel platform is known for it")]
    UnsupportedPlatform(String),
    #[error("{0:?} is not a pip requirement this builder accepts: {1}")]
    InvalidRequirement(String, String),
    #[error("resolving the pip section for {platform}: {message}")]
    Resolve { platform: String, message: String },
    #[error("installing the pip packages into {prefix}: {message}")]
    Install { prefix: PathBuf, message: String },
    #[error("running {uv}: {source}")]
    Run {
        uv: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("uv wrote an unreadable lock: {0}")]
    Output(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipError + '_ {
    move |source| PipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// PEP 503 normalisation of a project name.
pub use conda_store_crds::spec::normalize_project as normalize;

/// uv's `--python-platform` for a conda platform. Linux targets manylinux 2.17 (conda-forge's
/// glibc floor) unless the solve's `__glibc` virtual package says more.
pub fn wheel_platform(platform: &str, glibc: Option<&str>) -> Option<String> {
    let glibc = glibc
        .and_then(|v| {
            let mut it = v.split('.');
            Some((
                it.next()?.parse::<u32>().ok()?,
                it.next()?.parse::<u32>().ok()?,
            ))
        })
        .filter(|&(major, minor)| major == 2 && minor >= 17);
    let linux = |arch: &str| match glibc {
        Some((_, minor)) => format!("{arch}-manylinux_2_{minor}"),
        None => format!("{arch}-manylinux_2_17"),
    };
    Some(match platform {
        "linux-64" => linux("x86_64"),
        "linux-aarch64" => linux("aarch64"),
        "linux-ppc64le" => linux("powerpc64le"),
        "osx-64" => "x86_64-apple-darwin".into(),
        "osx-arm64" => "aarch64-apple-darwin".into(),
        "win-64" => "x86_64-pc-windows-msvc".into(),
        _ => return None,
    })
}

/// The target of one platform's records: the python version and the Python distributions the
/// conda packages provide (those that depend on python, or are noarch python), by their PyPI
/// name when the record names it (a `pkg:pypi/` purl), else by the conda name.
pub fn target_for(platform: &str, records: &[RepoDataRecord]) -> Result<PythonTarget, PipError> {
    let python = records
        .iter()
        .find(|r| r.package_record.name.as_normalized() == "python")
        .ok_or_else(|| PipError::NoPython {
            platform: platform.to_string(),
        })?;
    let mut provided = BTreeMap::new();
    for r in records {
        let p = &r.package_record;
        let name = p.name.as_normalized();
        if name == "python" {
            continue;
        }
        let pythonic = p.noarch.is_python()
            || p.depends
                .iter()
                .any(|d| d.split_whitespace().next() == Some("python"));
        if !pythonic {
            continue;
        }
        let pypi: Vec<String> = p
            .purls
            .iter()
            .flatten()
            .filter(|u| u.package_type() == "pypi")
            .map(|u| normalize(u.name()))
            .collect();
        let version = p.version.to_string();
        if pypi.is_empty() {
            provided.insert(normalize(name), version);
        } else {
            for n in pypi {
                provided.insert(n, version.clone());
            }
        }
    }
    Ok(PythonTarget {
        platform: platform.to_string(),
        version: python.package_record.version.to_string(),
        provided,
    })
}

/// Makes this process non-dumpable, so a child running another party's code cannot read its
/// memory or `/proc/<pid>/environ` (which holds storage credentials in a build pod).
fn protect_self() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// A uv command with nothing of this process's environment: no credentials, no user config,
/// no downloads of Python.
fn uv_command(cfg: &PipConfig, work: &Path) -> Result<tokio::process::Command, PipError> {
    protect_self();
    let mut cmd = tokio::process::Command::new(&cfg.uv);
    cmd.env_clear()
        .env("HOME", work)
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_PROGRESS", "1")
        .env(
            "UV_HTTP_TIMEOUT",
            cfg.http_timeout.as_secs().max(1).to_string(),
        )
        .env("UV_HTTP_RETRIES", "2")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    if let Ok(certs) = std::env::var("SSL_CERT_FILE") {
        cmd.env("SSL_CERT_FILE", certs).env("UV_NATIVE_TLS", "1");
    }
    match &cfg.cache_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            cmd.env("UV_CACHE_DIR", dir);
        }
        None => {
            cmd.env("UV_CACHE_DIR", work.join("uv-cache"));
        }
    }
    if !cfg.credentials.is_empty() {
        let netrc = work.join("netrc");
        let mut text = String::new();
        for c in &cfg.credentials {
            text.push_str(&format!(
                "machine {} login {} password {}\n",
                c.host, c.username, c.password
            ));
        }
        write_private(&netrc, text.as_bytes())?;
        cmd.env("NETRC", &netrc);
    }
    Ok(cmd)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PipError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

async fn run(
    mut cmd: tokio::process::Command,
    uv: &Path,
) -> Result<Result<String, String>, PipError> {
    let out = cmd.output().await.map_err(|source| PipError::Run {
        uv: uv.to_path_buf(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Ok(if out.status.success() {
        Ok(stderr)
    } else {
        Err(stderr)
    })
}

/// The indexes uv is given: the requirement lines' own, else the configuration's.
fn index_args(cfg: &PipConfig, lines: &[PipLine]) -> Vec<String> {
    let mut index = cfg.index_url.clone().unwrap_or_else(|| PYPI.to_string());
    let mut extra = cfg.extra_index_urls.clone();
    for l in lines {
        match l {
            PipLine::IndexUrl(u) => index = u.clone(),
            PipLine::ExtraIndexUrl(u) => extra.push(u.clone()),
            PipLine::Requirement { .. } => {}
        }
    }
    let mut args = vec!["--index-url".to_string(), index];
    for e in extra {
        args.extend(["--extra-index-url".to_string(), e]);
    }
    args
}

/// A wheel holding only the metadata of `name` `version`: what the resolver is offered for a
/// distribution conda installs (it has no dependencies: conda installed those too).
fn write_stub_wheel(dir: &Path, name: &str, version: &str) -> Result<(), PipError> {
    let dist = format!("{}-{}", name.replace('-', "_"), version);
    let path = dir.join(format!("{dist}-py3-none-any.whl"));
    let file = std::fs::File::create(&path).map_err(io_err(&path))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let entries = [
        (
            format!("{dist}.dist-info/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: installed by conda\n"),
        ),
        (
            format!("{dist}.dist-info/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: conda-store\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
        (format!("{dist}.dist-info/RECORD"), String::new()),
    ];
    for (n, body) in entries {
        zip.start_file(n, opts)
            .map_err(|e| PipError::Output(e.to_string()))?;
        zip.write_all(body.as_bytes()).map_err(io_err(&path))?;
    }
    zip.finish().map_err(|e| PipError::Output(e.to_string()))?;
    Ok(())
}

#[derive(Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PylockFile>,
    sdist: Option<PylockFile>,
}

#[derive(Deserialize)]
struct PylockFile {
    url: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// Edges from uv's `# via` annotations: package → the packages that require it.
fn via_edges(requirements_txt: &str) -> BTreeMap<String, Vec<String>> {
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in requirements_txt.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("--") {
            continue;
        }
        if !line.starts_with(' ') && !t.starts_with('#') {
            let name = t.split("==").next().unwrap_or(t).trim();
            current = Some(normalize(name));
            // `--annotation-style line`: `name==1.0    # via a, b`
            if let Some((_, via)) = t.split_once("# via") {
                let from = via
                    .split(',')
                    .map(|s| s.trim())
                    .filter(|s| !s.starts_with('-'));
                edges
                    .entry(normalize(name))
                    .or_default()
                    .extend(from.map(normalize));
            }
        } else if let (Some(c), Some(rest)) = (&current, t.strip_prefix('#')) {
            // `--annotation-style split`: `    # via a` or `    #   a`
            let rest = rest.trim().trim_start_matches("via").trim();
            if !rest.is_empty() && !rest.starts_with('-') {
                edges.entry(c.clone()).or_default().push(normalize(rest));
            }
        }
    }
    edges
}

/// Resolves `requirements` for `target` with `interpreter` (any Python uv can run; its markers
/// are replaced by the target's). The conda-provided distributions are fixed (see the module
/// documentation). Returns the packages pip installs, sorted by name.
pub async fn resolve(
    cfg: &PipConfig,
    requirements: &[String],
    interpreter: &Path,
    target: &PythonTarget,
    glibc: Option<&str>,
) -> Result<Vec<PipPackage>, PipError> {
    // The specification was checked when it was normalised; a caller of this function directly
    // gets the same refusals.
    let lines: Vec<PipLine> = requirements
        .iter()
        .map(|r| parse_pip_line(r).map_err(|why| PipError::InvalidRequirement(r.clone(), why)))
        .collect::<Result<_, _>>()?;
    let reqs: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            PipLine::Requirement { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let resolve_err = |message: String| PipError::Resolve {
        platform: target.platform.clone(),
        message,
    };
    let platform = wheel_platform(&target.platform, glibc)
        .ok_or_else(|| PipError::UnsupportedPlatform(target.platform.clone()))?;
    let work = tempfile::tempdir().map_err(io_err(Path::new("tempdir")))?;
    let w = work.path();
    let req_in = w.join("requirements.in");
    std::fs::write(&req_in, reqs.join("\n") + "\n").map_err(io_err(&req_in))?;
    let constraints = w.join("conda.txt");
    let stubs = w.join("conda-stubs");
    std::fs::create_dir_all(&stubs).map_err(io_err(&stubs))?;
    let mut pins = String::new();
    for (name, version) in &target.provided {
        pins.push_str(&format!("{name}=={version}\n"));
        write_stub_wheel(&stubs, name, version)?;
    }
    std::fs::write(&constraints, pins).map_err(io_err(&constraints))?;

    let base = |format: &str, out: &Path| -> Result<tokio::process::Command, PipError> {
        let mut cmd = uv_command(cfg, w)?;
        cmd.arg("pip").arg("compile").arg(&req_in);
        cmd.arg("--constraint").arg(&constraints);
        cmd.arg("--find-links").arg(&stubs);
        cmd.arg("--python").arg(interpreter);
        cmd.args(["--python-version", &target.version]);
        cmd.args(["--python-platform", &platform]);
        cmd.args(index_args(cfg, &lines));
        if !cfg.allow_build {
            cmd.arg("--no-build");
        }
        cmd.args(["--format", format, "--no-header", "--quiet"]);
        cmd.args(["--annotation-style", "line", "--no-strip-extras"]);
        for name in target.provided.keys() {
            cmd.args(["--no-emit-package", name]);
        }
        cmd.arg("--output-file").arg(out);
        Ok(cmd)
    };
    // The same resolution twice, side by side: pylock.toml gives each file's URL and hash, the
    // annotated requirements.txt the edges (uv writes no dependencies into pylock.toml).
    let lock_path = w.join("pylock.toml");
    let txt_path = w.join("requirements.txt");
    let (lock_run, txt_run) = tokio::join!(
        run(base("pylock.toml", &lock_path)?, &cfg.uv),
        run(base("requirements.txt", &txt_path)?, &cfg.uv)
    );
    if let Err(stderr) = lock_run? {
        return Err(resolve_err(explain(&stderr, target)));
    }
    if let Err(stderr) = txt_run? {
        return Err(resolve_err(explain(&stderr, target)));
    }
    let lock_text = std::fs::read_to_string(&lock_path).map_err(io_err(&lock_path))?;
    let lock: Pylock = toml::from_str(&lock_text).map_err(|e| PipError::Output(e.to_string()))?;
    let txt = std::fs::read_to_string(&txt_path).map_err(io_err(&txt_path))?;
    let edges = via_edges(&txt);

    let mut out: BTreeMap<String, PipPackage> = BTreeMap::new();
    for p in lock.packages {
        let name = normalize(&p.name);
        if target.provided.contains_key(&name) {
            continue;
        }
        let version = p
            .version
            .ok_or_else(|| PipError::Output(format!("{name} has no version")))?;
        let file = p
            .wheels
            .into_iter()
            .find(|f| f.url.is_some())
            .or(p.sdist.filter(|_| cfg.allow_build))
            .ok_or_else(|| {
                resolve_err(format!(
                    "{name} {version} has no wheel for {platform} (only a source distribution, \
                     and building from source is not allowed)"
                ))
            })?;
        let url = file.url.unwrap_or_default();
        let sha256 = file
            .hashes
            .get("sha256")
            .cloned()
            .ok_or_else(|| resolve_err(format!("the index gives no sha256 for {url}")))?;
        out.insert(
            name.clone(),
            PipPackage {
                name,
                version,
                url,
                sha256,
                dependencies: BTreeMap::new(),
            },
        );
    }
    for (child, parents) in edges {
        for parent in parents {
            if let Some(p) = out.get_mut(&parent) {
                p.dependencies.insert(child.clone(), "*".into());
            }
        }
    }
    Ok(out.into_values().collect())
}

/// uv's message, with what this builder adds: which conda packages a conflict involves.
fn explain(stderr: &str, target: &PythonTarget) -> String {
    let text: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut message = text.join("\n");
    let lower = message.to_ascii_lowercase();
    let involved: Vec<String> = target
        .provided
        .iter()
        .filter(|(name, _)| mentions(&lower, name))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    if !involved.is_empty() {
        message.push_str(&format!(
            "\nthe conda packages of this environment install {}; pip may not replace them \
             (change the conda dependency instead)",
            involved.join(", ")
        ));
    }
    if lower.contains("building source distributions is disabled")
        || lower.contains("has no usable wheels")
        || lower.contains("no-build")
    {
        message.push_str(
            "\nonly wheels are installed: a package published as a source distribution only \
             needs its wheel on the index (or a policy that allows building)",
        );
    }
    message
}

/// Whether `text` names the project `name` as a word (`click` in "click==8", not in "clickhouse").
fn mentions(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(word)
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// What a pip install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipInstallSummary {
    /// Packages given to install.
    pub packages: usize,
}

/// Installs exactly `packages` (by URL, checked against their sha256) into `prefix` with the
/// prefix's own Python, without their dependencies (the lock has them all). Idempotent.
pub async fn install(
    cfg: &PipConfig,
    prefix: &Path,
    packages: &[PipPackage],
) -> Result<PipInstallSummary, PipError> {
    if packages.is_empty() {
        return Ok(PipInstallSummary { packages: 0 });
    }
    let err = |message: String| PipError::Install {
        prefix: prefix.to_path_buf(),
        message,
    };
    let python = prefix.join("bin").join("python");
    if !python.exists() {
        return Err(err(
            "the prefix has no bin/python: a pip section needs python among the conda dependencies"
                .into(),
        ));
    }
    let work = tempfile::tempdir().map_err(io_err(Path::new("tempdir")))?;
    let w = work.path();
    let reqs = w.join("requirements.txt");
    let mut text = String::new();
    for p in packages {
        text.push_str(&format!(
            "{} @ {} --hash=sha256:{}\n",
            p.name, p.url, p.sha256
        ));
    }
    std::fs::write(&reqs, text).map_err(io_err(&reqs))?;
    let mut cmd = uv_command(cfg, w)?;
    cmd.args(["pip", "install", "--no-deps", "--require-hashes", "--quiet"]);
    cmd.arg("--python").arg(&python);
    cmd.arg("--break-system-packages");
    if !cfg.allow_build {
        cmd.arg("--no-build");
    }
    cmd.arg("-r").arg(&reqs);
    if let Err(stderr) = run(cmd, &cfg.uv).await? {
        return Err(err(stderr));
    }
    Ok(PipInstallSummary {
        packages: packages.len(),
    })
}

/// The distinct projects of `packages`.
pub fn names(packages: &[PipPackage]) -> BTreeSet<&str> {
    packages.iter().map(|p| p.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_map_to_wheel_tags() {
        assert_eq!(
            wheel_platform("linux-64", None).unwrap(),
            "x86_64-manylinux_2_17"
        );
        assert_eq!(
            wheel_platform("linux-64", Some("2.28")).unwrap(),
            "x86_64-manylinux_2_28"
        );
        assert_eq!(
            wheel_platform("linux-64", Some("1.0")).unwrap(),
            "x86_64-manylinux_2_17"
        );
        assert_eq!(
            wheel_platform("osx-arm64", None).unwrap(),
            "aarch64-apple-darwin"
        );
        assert_eq!(wheel_platform("emscripten-wasm32", None), None);
    }

    #[test]
    fn via_annotations_become_edges() {
        let txt = "flask==3.1.3    # via -r requirements.in\n\
                   jinja2==3.1.6    # via flask\n\
                   markupsafe==3.0.4    # via jinja2, werkzeug\n";
        let e = via_edges(txt);
        assert_eq!(e["jinja2"], vec!["flask"]);
        assert_eq!(e["markupsafe"], vec!["jinja2", "werkzeug"]);
        assert!(e["flask"].is_empty());
    }

    #[test]
    fn a_conflict_names_the_conda_package() {
        let target = PythonTarget {
            platform: "linux-64".into(),
            version: "3.11.2".into(),
            provided: BTreeMap::from([("click".into(), "8.5.1".into())]),
        };
        let m = explain(
            "  × No solution found\n  ╰─▶ Because you require click==8.5.1 and click<8, we can conclude ...",
            &target,
        );
        assert!(
            m.contains("install click 8.5.1; pip may not replace"),
            "{m}"
        );
    }
}
