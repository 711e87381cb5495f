//! Local conda channels: a generator of a small channel of real packages (for tests), a
//! deterministic indexer (`<subdir>/repodata.json`) and a generator of large synthetic repodata
//! (for benchmarks). Pure local I/O: no network, no clock.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    str::FromStr,
};

use rattler_conda_types::{
    NoArchType, PackageName, PackageRecord, VersionWithSource,
    compression_level::CompressionLevel,
    package::{
        BuildString, FileMode, IndexJson, PathType, PathsEntry, PathsJson, PrefixPlaceholder,
    },
};
use rattler_digest::{Md5, Sha256};
use serde::Serialize;
use url::Url;

/// The prefix placeholder written into the test packages' text files.
pub const PLACEHOLDER: &str =
    "/opt/anaconda1anaconda2anaconda3/placeholder_placeholder_placeholder";

/// A fixed timestamp (2023-11-14) for reproducible archives and records.
const TIMESTAMP_SECONDS: i64 = 1_700_000_000;

/// What can go wrong writing or indexing a channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable conda package: {message}")]
    Package { path: PathBuf, message: String },
    #[error("invalid package metadata: {0}")]
    Metadata(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ChannelError + '_ {
    move |source| ChannelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The channel written by [`write_test_channel`].
#[derive(Debug, Clone)]
pub struct TestChannel {
    /// The channel directory (holds `noarch/` and `linux-64/`).
    pub root: PathBuf,
    /// Its `file://` URL, with a trailing slash.
    pub url: String,
    /// Every package archive written, in the order written.
    pub packages: Vec<PathBuf>,
}

/// A file of a package's payload.
struct Payload {
    path: &'static str,
    content: String,
    executable: bool,
    /// Whether the content holds [`PLACEHOLDER`] (text mode).
    has_prefix: bool,
}

struct PackageDef {
    name: &'static str,
    version: &'static str,
    build: &'static str,
    /// `None` for noarch: generic.
    linux64: bool,
    depends: &'static [&'static str],
    conda_format: bool,
    payload: Vec<Payload>,
}

fn test_packages() -> Vec<PackageDef> {
    let liba = |version: &'static str| PackageDef {
        name: "liba",
        version,
        build: "h0_0",
        linux64: true,
        depends: &["__glibc >=2.17"],
        conda_format: false,
        payload: vec![Payload {
            path: "share/liba/VERSION",
            content: format!("{version}\n"),
            executable: false,
            has_prefix: false,
        }],
    };
    vec![
        liba("1.0"),
        liba("2.0"),
        PackageDef {
            name: "libb",
            version: "1.0",
            build: "h0_0",
            linux64: false,
            depends: &["liba >=2"],
            conda_format: false,
            payload: vec![Payload {
                path: "share/libb/README",
                content: "libb\n".into(),
                executable: false,
                has_prefix: false,
            }],
        },
        PackageDef {
            name: "tool",
            version: "1.0",
            build: "h1_0",
            linux64: false,
            depends: &["libb", "liba >=1.5"],
            conda_format: true,
            payload: vec![
                Payload {
                    path: "bin/tool",
                    content: format!(
                        "#!/bin/sh\nPREFIX=\"{PLACEHOLDER}\"\necho \"prefix: $PREFIX\"\ncat \"$PREFIX/share/tool/data.txt\"\n"
                    ),
                    executable: true,
                    has_prefix: true,
                },
                Payload {
                    path: "share/tool/data.txt",
                    content: "tool data\n".into(),
                    executable: false,
                    has_prefix: false,
                },
                Payload {
                    path: "etc/tool/config.txt",
                    content: format!("prefix={PLACEHOLDER}\n"),
                    executable: false,
                    has_prefix: true,
                },
                // What packages do to set variables on activation (conda and conda-pack's
                // bin/activate source these).
                Payload {
                    path: "etc/conda/activate.d/tool.sh",
                    content: "export TOOL_DATA=\"$CONDA_PREFIX/share/tool/data.txt\"\n".into(),
                    executable: false,
                    has_prefix: false,
                },
                Payload {
                    path: "etc/conda/deactivate.d/tool.sh",
                    content: "unset TOOL_DATA\n".into(),
                    executable: false,
                    has_prefix: false,
                },
            ],
        },
    ]
}

/// Write a small channel of real packages into `dir` (created if needed) and index it:
///
/// - `linux-64/liba-1.0-h0_0.tar.bz2`, `linux-64/liba-2.0-h0_0.tar.bz2` (depend on `__glibc >=2.17`)
/// - `noarch/libb-1.0-h0_0.tar.bz2` (depends on `liba >=2`)
/// - `noarch/tool-1.0-h1_0.conda` (depends on `libb`, `liba >=1.5`); holds `bin/tool`, a shell
///   script that prints `prefix: <prefix>` then `share/tool/data.txt` read through the prefix, and
///   `etc/tool/config.txt` (`prefix=<prefix>`); both carry the prefix placeholder. Its
///   `etc/conda/activate.d/tool.sh` sets `TOOL_DATA` (the data file's path) on activation,
///   and `deactivate.d/tool.sh` unsets it.
///
/// The output is byte-for-byte reproducible.
pub fn write_test_channel(dir: &Path) -> Result<TestChannel, ChannelError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let root = dir.canonicalize().map_err(io_err(dir))?;
    let staging_root = root.join(".staging");
    let mut packages = Vec::new();
    for def in test_packages() {
        let subdir = if def.linux64 { "linux-64" } else { "noarch" };
        let out_dir = root.join(subdir);
        fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
        let staging = staging_root.join(format!("{}-{}", def.name, def.version));
        packages.push(build_package(&def, &staging, &out_dir)?);
    }
    fs::remove_dir_all(&staging_root).map_err(io_err(&staging_root))?;
    index_channel(&root)?;
    Ok(TestChannel {
        url: dir_url(&root)?,
        root,
        packages,
    })
}

fn dir_url(dir: &Path) -> Result<String, ChannelError> {
    Url::from_directory_path(dir)
        .map(|u| u.to_string())
        .map_err(|()| ChannelError::Metadata(format!("{} is not an absolute path", dir.display())))
}

fn build_package(
    def: &PackageDef,
    staging: &Path,
    out_dir: &Path,
) -> Result<PathBuf, ChannelError> {
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(io_err(staging))?;
    }
    let info = staging.join("info");
    fs::create_dir_all(&info).map_err(io_err(&info))?;
    let meta = |e: &dyn std::fmt::Display| ChannelError::Metadata(format!("{}: {e}", def.name));

    let mut entries = Vec::new();
    let mut has_prefix = String::new();
    let mut files_list = String::new();
    for p in &def.payload {
        let path = staging.join(p.path);
        let parent = path.parent().expect("payload paths have a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        fs::write(&path, &p.content).map_err(io_err(&path))?;
        if p.executable {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(io_err(&path))?;
            }
        }
        entries.push(PathsEntry {
            relative_path: PathBuf::from(p.path),
            no_link: false,
            path_type: PathType::HardLink,
            prefix_placeholder: p.has_prefix.then(|| PrefixPlaceholder {
                file_mode: FileMode::Text,
                placeholder: PLACEHOLDER.to_string(),
                experimental_offsets: None,
            }),
            sha256: Some(rattler_digest::compute_bytes_digest::<Sha256>(
                p.content.as_bytes(),
            )),
            size_in_bytes: Some(p.content.len() as u64),
        });
        files_list.push_str(p.path);
        files_list.push('\n');
        if p.has_prefix {
            has_prefix.push_str(&format!("{PLACEHOLDER} text {}\n", p.path));
        }
    }
    entries.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    let paths_json = PathsJson {
        paths: entries,
        paths_version: 1,
    };
    let timestamp = jiff::Timestamp::from_second(TIMESTAMP_SECONDS).map_err(|e| meta(&e))?;
    let index = IndexJson {
        arch: def.linux64.then(|| "x86_64".to_string()),
        build: BuildString::from_str(def.build).map_err(|e| meta(&e))?,
        build_number: 0,
        constrains: vec![],
        depends: def.depends.iter().map(|s| s.to_string()).collect(),
        extra_depends: Default::default(),
        features: None,
        flags: vec![],
        license: Some("BSD-3-Clause".into()),
        license_family: None,
        name: PackageName::from_str(def.name).map_err(|e| meta(&e))?,
        noarch: if def.linux64 {
            NoArchType::none()
        } else {
            NoArchType::generic()
        },
        platform: def.linux64.then(|| "linux".to_string()),
        purls: None,
        python_site_packages_path: None,
        repodata_revision: None,
        subdir: Some(if def.linux64 { "linux-64" } else { "noarch" }.into()),
        timestamp: Some(timestamp.into()),
        track_features: vec![],
        version: VersionWithSource::from_str(def.version).map_err(|e| meta(&e))?,
    };
    let write_json = |name: &str, value: &dyn erased::Json| -> Result<(), ChannelError> {
        let path = info.join(name);
        fs::write(&path, value.to_json()?).map_err(io_err(&path))
    };
    write_json("paths.json", &paths_json)?;
    write_json("index.json", &index)?;
    let files_path = info.join("files");
    fs::write(&files_path, files_list).map_err(io_err(&files_path))?;
    if !has_prefix.is_empty() {
        let path = info.join("has_prefix");
        fs::write(&path, has_prefix).map_err(io_err(&path))?;
    }

    // Every file, as a full path under `staging` (the writers strip the base themselves).
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(staging)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let stem = format!("{}-{}-{}", def.name, def.version, def.build);
    let out = if def.conda_format {
        out_dir.join(format!("{stem}.conda"))
    } else {
        out_dir.join(format!("{stem}.tar.bz2"))
    };
    let file = fs::File::create(&out).map_err(io_err(&out))?;
    let written = if def.conda_format {
        rattler_package_streaming::write::write_conda_package(
            file,
            staging,
            &files,
            CompressionLevel::Default,
            Some(1),
            &stem,
            Some(&timestamp),
            None,
        )
    } else {
        rattler_package_streaming::write::write_tar_bz2_package(
            file,
            staging,
            &files,
            CompressionLevel::Default,
            Some(&timestamp),
            None,
        )
    };
    written.map_err(io_err(&out))?;
    Ok(out)
}

/// A tiny helper so `build_package` can write differently-typed JSON documents with one closure.
mod erased {
    use super::ChannelError;
    pub trait Json {
        fn to_json(&self) -> Result<String, ChannelError>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String, ChannelError> {
            serde_json::to_string_pretty(self).map_err(|e| ChannelError::Metadata(e.to_string()))
        }
    }
}

/// The `repodata.json` document this module writes (keys in a fixed order, maps sorted).
#[derive(Serialize)]
struct RepoDataOut<R: Serialize> {
    info: Info,
    packages: BTreeMap<String, R>,
    #[serde(rename = "packages.conda")]
    packages_conda: BTreeMap<String, R>,
    repodata_version: u32,
}

#[derive(Serialize)]
struct Info {
    subdir: String,
}

/// Index a channel directory: write `<subdir>/repodata.json` for every subdirectory holding
/// packages (`.conda`, `.tar.bz2`), and always for `noarch/` (created if missing; the repodata
/// gateway requires it). Deterministic: the same packages give the same bytes.
pub fn index_channel(dir: &Path) -> Result<(), ChannelError> {
    let noarch = dir.join("noarch");
    fs::create_dir_all(&noarch).map_err(io_err(&noarch))?;
    let mut subdirs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    subdirs.sort();
    for subdir in subdirs {
        index_subdir(&subdir)?;
    }
    Ok(())
}

fn index_subdir(dir: &Path) -> Result<(), ChannelError> {
    let subdir = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut out = RepoDataOut {
        info: Info { subdir },
        packages: BTreeMap::new(),
        packages_conda: BTreeMap::new(),
        repodata_version: 1,
    };
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let Some(file_name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let is_conda = file_name.ends_with(".conda");
        if !is_conda && !file_name.ends_with(".tar.bz2") {
            continue;
        }
        let package_err = |message: String| ChannelError::Package {
            path: path.clone(),
            message,
        };
        let index: IndexJson = rattler_package_streaming::seek::read_package_file(&path)
            .map_err(|e| package_err(e.to_string()))?;
        let size = fs::metadata(&path).map_err(io_err(&path))?.len();
        let sha256 = rattler_digest::compute_file_digest::<Sha256>(&path).map_err(io_err(&path))?;
        let md5 = rattler_digest::compute_file_digest::<Md5>(&path).map_err(io_err(&path))?;
        let record = PackageRecord::from_index_json(index, Some(size), Some(sha256), Some(md5))
            .map_err(|e| package_err(e.to_string()))?;
        if is_conda {
            out.packages_conda.insert(file_name, record);
        } else {
            out.packages.insert(file_name, record);
        }
    }
    let path = dir.join("repodata.json");
    let bytes =
        serde_json::to_vec_pretty(&out).map_err(|e| ChannelError::Metadata(e.to_string()))?;
    fs::write(&path, bytes).map_err(io_err(&path))
}

/// What [`write_synthetic_repodata`] wrote.
#[derive(Debug, Clone)]
pub struct SyntheticChannel {
    /// The channel directory (holds `noarch/` and `linux-64/`).
    pub root: PathBuf,
    /// Its `file://` URL.
    pub url: String,
    /// How many records `linux-64/repodata.json` holds.
    pub records: usize,
    /// A few specs whose solve walks long dependency chains with version constraints.
    pub suggested_specs: Vec<String>,
}

/// A deterministic pseudo-random generator (splitmix64), so generated channels and benchmark
/// data need no extra crate: the same seed gives the same sequence everywhere.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next value of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Serialize)]
struct SyntheticRecord {
    build: String,
    build_number: u64,
    depends: Vec<String>,
    license: &'static str,
    md5: String,
    name: String,
    sha256: String,
    size: u64,
    subdir: &'static str,
    timestamp: i64,
    version: String,
}

/// Versions per synthetic package name.
const SYNTHETIC_VERSIONS: usize = 8;

/// Write a large synthetic channel in `dir`: `linux-64/repodata.json` with `records` records (no
/// package files) and an empty `noarch/repodata.json`. Packages are `pkg-NNNNN` with
/// [`SYNTHETIC_VERSIONS`] versions each (`1.0` … `8.0`); every version of package `i` depends on
/// one to three packages with a higher index (so chains are long and the graph acyclic), newer
/// versions with version ranges (`>=k`, `<k`, `>=a,<b`) that force backtracking, while every
/// `1.0` depends on its targets without constraints (so a solution always exists). The same
/// `(records, seed)` always give the same bytes.
pub fn write_synthetic_repodata(
    dir: &Path,
    records: usize,
    seed: u64,
) -> Result<SyntheticChannel, ChannelError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let root = dir.canonicalize().map_err(io_err(dir))?;
    let mut rng = SplitMix(seed);
    let names = records.div_ceil(SYNTHETIC_VERSIONS).max(1);
    let mut out = RepoDataOut {
        info: Info {
            subdir: "linux-64".into(),
        },
        packages: BTreeMap::new(),
        packages_conda: BTreeMap::new(),
        repodata_version: 1,
    };
    let mut written = 0;
    'outer: for i in 0..names {
        let name = format!("pkg-{i:05}");
        // The dependency targets are fixed per name (higher indices only); constraints vary.
        let remaining = (names - i - 1) as u64;
        let fanout = if remaining == 0 {
            0
        } else {
            1 + rng.below(3.min(remaining))
        };
        let mut targets: Vec<usize> = (0..fanout)
            .map(|_| i + 1 + rng.below(remaining.min(50)) as usize)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        for v in 1..=SYNTHETIC_VERSIONS {
            if written == records {
                break 'outer;
            }
            let needs_glibc = rng.below(4) == 0;
            let depends: Vec<String> = targets
                .iter()
                .map(|t| {
                    let target = format!("pkg-{t:05}");
                    if v == 1 {
                        return target;
                    }
                    let k = 1 + rng.below(SYNTHETIC_VERSIONS as u64);
                    match rng.below(4) {
                        0 => target,
                        1 => format!("{target} >={k}.0"),
                        2 => format!("{target} <{}.0", k + 1),
                        _ => {
                            let hi = k + 1 + rng.below(3);
                            format!("{target} >={k}.0,<{hi}.0")
                        }
                    }
                })
                .chain(needs_glibc.then(|| "__glibc >=2.17".to_string()))
                .collect();
            let build = format!("h{:08x}_0", rng.next_u64() as u32);
            let record = SyntheticRecord {
                build: build.clone(),
                build_number: 0,
                depends,
                license: "BSD-3-Clause",
                md5: format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
                name: name.clone(),
                sha256: format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64()
                ),
                size: 1000 + rng.below(1_000_000),
                subdir: "linux-64",
                timestamp: TIMESTAMP_SECONDS * 1000,
                version: format!("{v}.0"),
            };
            out.packages_conda
                .insert(format!("{name}-{v}.0-{build}.conda"), record);
            written += 1;
        }
    }
    let linux = root.join("linux-64");
    fs::create_dir_all(&linux).map_err(io_err(&linux))?;
    let path = linux.join("repodata.json");
    let bytes = serde_json::to_vec(&out).map_err(|e| ChannelError::Metadata(e.to_string()))?;
    fs::write(&path, bytes).map_err(io_err(&path))?;
    let noarch = root.join("noarch");
    fs::create_dir_all(&noarch).map_err(io_err(&noarch))?;
    let empty: RepoDataOut<SyntheticRecord> = RepoDataOut {
        info: Info {
            subdir: "noarch".into(),
        },
        packages: BTreeMap::new(),
        packages_conda: BTreeMap::new(),
        repodata_version: 1,
    };
    let path = noarch.join("repodata.json");
    let bytes = serde_json::to_vec(&empty).map_err(|e| ChannelError::Metadata(e.to_string()))?;
    fs::write(&path, bytes).map_err(io_err(&path))?;
    let suggested_specs = (0..names.min(3))
        .map(|i| format!("pkg-{:05}", i * 2))
        .filter(|s| out.packages_conda.keys().any(|k| k.starts_with(s.as_str())))
        .collect();
    Ok(SyntheticChannel {
        url: dir_url(&root)?,
        root,
        records: written,
        suggested_specs,
    })
}
