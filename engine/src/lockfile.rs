//! Lockfiles: write a [`Solution`] as a conda-lock v1 YAML file, read one back into what an
//! install needs, and export an environment.yaml with exact pins.

use std::{collections::BTreeMap, str::FromStr};

use rattler_conda_lock::{Channel, Document, Hashes, LockFile, Manager, Package};
use rattler_conda_types::{
    PackageName, PackageRecord, RepoDataRecord, VersionWithSource, package::BuildString,
};
use rattler_digest::{Md5, Sha256};
use serde::Serialize;
use url::Url;

use crate::pip::PipPackage;
use crate::solve::Solution;

/// The `sources` recorded in lockfiles this crate writes.
pub const LOCKFILE_SOURCE: &str = "environment.yml";

/// What can go wrong writing or reading a lockfile.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("{package}: the record has no {hash} hash (conda-lock needs both md5 and sha256)")]
    MissingHash { package: String, hash: &'static str },
    #[error("invalid lockfile: {0}")]
    Invalid(String),
    #[error(
        "package {name} ({platform}) is managed by pip and has no sha256: pip packages are installed by hash"
    )]
    PipWithoutHash { name: String, platform: String },
    #[error("package {name} ({platform}): {message}")]
    InvalidPackage {
        name: String,
        platform: String,
        message: String,
    },
    #[error("the lockfile has no packages for platform {0}")]
    MissingPlatform(String),
}

/// conda-lock's form of a dependency list: name → version constraint (`""` for any).
fn dependency_map(depends: &[String]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for dep in depends {
        let dep = dep.trim();
        let (name, constraint) = match dep.split_once(' ') {
            Some((name, rest)) => (name, rest.trim()),
            None => (dep, ""),
        };
        match map.get_mut(name) {
            Some(existing) if !constraint.is_empty() => {
                if existing.is_empty() {
                    *existing = constraint.to_string();
                } else {
                    existing.push(',');
                    existing.push_str(constraint);
                }
            }
            Some(_) => {}
            None => {
                map.insert(name.to_string(), constraint.to_string());
            }
        }
    }
    map
}

/// A lockfile with no packages yet: `channels` in its metadata, our source name.
fn empty_lock(channels: &[String]) -> LockFile {
    let mut lock = LockFile::default();
    lock.metadata.channels = channels
        .iter()
        .map(|url| Channel {
            url: url.clone(),
            used_env_vars: vec![],
        })
        .collect();
    lock.metadata.sources = vec![LOCKFILE_SOURCE.to_string()];
    lock
}

/// Write `solution` as a conda-lock v1 document (deterministic: no timestamps; packages sorted
/// by platform and name). `content_hash` is a hash of the locked packages per platform.
pub fn write_lockfile(solution: &Solution) -> Result<String, LockfileError> {
    let mut lock = empty_lock(&solution.channels);
    lock.metadata.platforms = solution.platforms.keys().cloned().collect();
    for (platform, records) in &solution.platforms {
        for record in records {
            let p = &record.package_record;
            let name = p.name.as_normalized().to_string();
            let md5 = p.md5.ok_or_else(|| LockfileError::MissingHash {
                package: record.identifier.to_string(),
                hash: "md5",
            })?;
            let sha256 = p.sha256.ok_or_else(|| LockfileError::MissingHash {
                package: record.identifier.to_string(),
                hash: "sha256",
            })?;
            lock.package.push(Package {
                name,
                version: p.version.to_string(),
                manager: Manager::Conda,
                platform: platform.clone(),
                dependencies: dependency_map(&p.depends),
                url: record.url.to_string(),
                hash: Hashes {
                    md5: Some(hex::encode(md5)),
                    sha256: Some(hex::encode(sha256)),
                },
                source: None,
                build: Some(p.build.to_string()),
                category: "main".into(),
                optional: false,
            });
        }
    }
    for (platform, packages) in &solution.pip {
        for p in packages {
            lock.package.push(pip_entry(platform, p));
        }
    }
    // conda packages first, then pip's (as conda-lock writes them), each by platform and name.
    lock.package.sort_by(|a, b| {
        (
            a.manager != Manager::Conda,
            a.platform.as_str(),
            a.name.as_str(),
        )
            .cmp(&(
                b.manager != Manager::Conda,
                b.platform.as_str(),
                b.name.as_str(),
            ))
    });
    lock.metadata.content_hash = lock.compute_content_hashes();
    lock.to_yaml()
        .map_err(|e| LockfileError::Invalid(e.to_string()))
}

/// conda-lock's entry for a pip package: `manager: pip`, the file's URL and sha256.
fn pip_entry(platform: &str, p: &PipPackage) -> Package {
    Package {
        name: p.name.clone(),
        version: p.version.clone(),
        manager: Manager::Pip,
        platform: platform.to_string(),
        dependencies: p.dependencies.clone(),
        url: p.url.clone(),
        hash: Hashes {
            md5: None,
            sha256: Some(p.sha256.clone()),
        },
        source: None,
        build: None,
        category: "main".into(),
        optional: false,
    }
}

fn pip_package(package: Package) -> Result<(String, PipPackage), LockfileError> {
    let sha256 = package
        .hash
        .sha256
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| LockfileError::PipWithoutHash {
            name: package.name.clone(),
            platform: package.platform.clone(),
        })?;
    Ok((
        package.platform,
        PipPackage {
            name: crate::pip::normalize(&package.name),
            version: package.version,
            url: package.url,
            sha256: sha256.to_ascii_lowercase(),
            dependencies: package.dependencies,
        },
    ))
}

/// The pip packages of one platform of a lockfile, sorted by name.
pub fn lockfile_pip(text: &str, platform: &str) -> Result<Vec<PipPackage>, LockfileError> {
    let document = Document::parse(text).map_err(|e| LockfileError::Invalid(e.to_string()))?;
    let mut out: Vec<PipPackage> = document
        .into_lock_file()
        .package
        .into_iter()
        .filter(|p| p.manager == Manager::Pip && p.platform == platform)
        .map(|p| pip_package(p).map(|(_, p)| p))
        .collect::<Result<_, _>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One conda package of a lockfile: what an install needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackage {
    /// The target platform (`linux-64`), also for noarch packages.
    pub platform: String,
    pub name: String,
    pub version: String,
    /// Empty when the lockfile has no build (conda-lock does not write it); taken from the
    /// file name then.
    pub build: String,
    pub url: String,
    /// The package's subdir (`noarch`, `linux-64`), from the URL.
    pub subdir: String,
    /// The archive's file name (`tool-1.0-h1_0.conda`), from the URL.
    pub file_name: String,
    /// The channel URL (the package URL without `<subdir>/<file name>`), with a trailing slash.
    pub channel: String,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// Match specs (`liba >=1.5`).
    pub depends: Vec<String>,
}

impl LockedPackage {
    fn invalid(&self, message: impl Into<String>) -> LockfileError {
        LockfileError::InvalidPackage {
            name: self.name.clone(),
            platform: self.platform.clone(),
            message: message.into(),
        }
    }

    /// The repodata record the installer wants.
    pub fn to_repodata_record(&self) -> Result<RepoDataRecord, LockfileError> {
        let name = PackageName::from_str(&self.name).map_err(|e| self.invalid(e.to_string()))?;
        let version =
            VersionWithSource::from_str(&self.version).map_err(|e| self.invalid(e.to_string()))?;
        let build = BuildString::from_str(&self.build).map_err(|e| self.invalid(e.to_string()))?;
        let mut record = PackageRecord::new(name, version, build);
        record.subdir = self.subdir.clone();
        record.depends = self.depends.clone();
        if let Some(md5) = &self.md5 {
            record.md5 = Some(
                rattler_digest::parse_digest_from_hex::<Md5>(md5)
                    .ok_or_else(|| self.invalid(format!("invalid md5 {md5:?}")))?,
            );
        }
        if let Some(sha256) = &self.sha256 {
            record.sha256 = Some(
                rattler_digest::parse_digest_from_hex::<Sha256>(sha256)
                    .ok_or_else(|| self.invalid(format!("invalid sha256 {sha256:?}")))?,
            );
        }
        Ok(RepoDataRecord {
            package_record: record,
            identifier: self
                .file_name
                .parse()
                .map_err(|e: String| self.invalid(e))?,
            url: Url::parse(&self.url).map_err(|e| self.invalid(e.to_string()))?,
            channel: Some(self.channel.clone()),
        })
    }
}

/// Read a conda-lock v1 document: every conda package, in file order (pip packages are read by
/// [`lockfile_pip`]).
pub fn read_lockfile(text: &str) -> Result<Vec<LockedPackage>, LockfileError> {
    let document = Document::parse(text).map_err(|e| LockfileError::Invalid(e.to_string()))?;
    let lock = document.into_lock_file();
    lock.package
        .into_iter()
        .filter(|p| p.manager == Manager::Conda)
        .map(locked_package)
        .collect()
}

fn locked_package(package: Package) -> Result<LockedPackage, LockfileError> {
    let invalid = |message: String| LockfileError::InvalidPackage {
        name: package.name.clone(),
        platform: package.platform.clone(),
        message,
    };
    let url = Url::parse(&package.url).map_err(|e| invalid(format!("invalid url: {e}")))?;
    let mut segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let file_name = segments.pop().unwrap_or_default().to_string();
    let subdir = segments.pop().unwrap_or_default().to_string();
    if file_name.is_empty() || subdir.is_empty() {
        return Err(invalid(format!(
            "url {url} is not <channel>/<subdir>/<file>"
        )));
    }
    let mut channel = url.clone();
    channel.set_path(&format!("{}/", segments.join("/")));
    let build = match &package.build {
        Some(build) => build.clone(),
        None => {
            // <name>-<version>-<build>.<ext>
            let stem = file_name
                .strip_suffix(".conda")
                .or_else(|| file_name.strip_suffix(".tar.bz2"))
                .ok_or_else(|| invalid(format!("{file_name} is not a conda archive")))?;
            stem.rsplit('-').next().unwrap_or_default().to_string()
        }
    };
    let depends = package
        .dependencies
        .iter()
        .map(|(name, constraint)| {
            if constraint.is_empty() {
                name.clone()
            } else {
                format!("{name} {constraint}")
            }
        })
        .collect();
    Ok(LockedPackage {
        platform: package.platform,
        name: package.name,
        version: package.version,
        build,
        url: package.url,
        subdir,
        file_name,
        channel: channel.to_string(),
        md5: package.hash.md5,
        sha256: package.hash.sha256,
        depends,
    })
}

/// One package of a lockfile given as an environment's specification (conda-lock v1 fields).
pub struct LockInput<'a> {
    /// `conda` or `pip`.
    pub manager: &'a str,
    pub platform: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub url: &'a str,
    pub md5: Option<&'a str>,
    pub sha256: Option<&'a str>,
    /// name → version constraint, as conda-lock writes them.
    pub dependencies: &'a BTreeMap<String, String>,
}

/// The solution a given lockfile stands for: no solve, the packages as locked, so the build
/// writes its lockfile and YAML export like any other and installs exactly these packages.
pub fn solution_from_locked<'a>(
    channels: &[String],
    packages: impl IntoIterator<Item = LockInput<'a>>,
) -> Result<Solution, LockfileError> {
    let mut lock = empty_lock(channels);
    let mut platforms = std::collections::BTreeSet::new();
    let mut pip: BTreeMap<String, Vec<PipPackage>> = BTreeMap::new();
    for p in packages {
        platforms.insert(p.platform.to_string());
        if p.manager == "pip" {
            let (platform, package) = pip_package(Package {
                name: p.name.to_string(),
                version: p.version.to_string(),
                manager: Manager::Pip,
                platform: p.platform.to_string(),
                dependencies: p.dependencies.clone(),
                url: p.url.to_string(),
                hash: Hashes {
                    md5: None,
                    sha256: p.sha256.map(str::to_string),
                },
                source: None,
                build: None,
                category: "main".into(),
                optional: false,
            })?;
            pip.entry(platform).or_default().push(package);
            continue;
        }
        lock.package.push(Package {
            name: p.name.to_string(),
            version: p.version.to_string(),
            manager: Manager::Conda,
            platform: p.platform.to_string(),
            // "No constraint" as this crate writes it (`""`): a lockfile posted back then
            // gives the same lockfile, whichever of `""` and `*` it says.
            dependencies: p
                .dependencies
                .iter()
                .map(|(k, v)| {
                    let v = if v.trim() == "*" { "" } else { v.trim() };
                    (k.clone(), v.to_string())
                })
                .collect(),
            url: p.url.to_string(),
            hash: Hashes {
                md5: p.md5.map(str::to_string),
                sha256: p.sha256.map(str::to_string),
            },
            source: None,
            build: None,
            category: "main".into(),
            optional: false,
        });
    }
    lock.metadata.platforms = platforms.iter().cloned().collect();
    lock.metadata.content_hash = lock.compute_content_hashes();
    let text = lock
        .to_yaml()
        .map_err(|e| LockfileError::Invalid(e.to_string()))?;
    for packages in pip.values_mut() {
        packages.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut solution = Solution {
        channels: channels.to_vec(),
        pip,
        ..Default::default()
    };
    for platform in platforms {
        let mut records = lockfile_records(&text, &platform)?;
        records.sort_by(|a, b| {
            a.package_record
                .name
                .as_normalized()
                .cmp(b.package_record.name.as_normalized())
        });
        solution.platforms.insert(platform, records);
    }
    Ok(solution)
}

/// The records of one platform of a lockfile, ready for the installer.
pub fn lockfile_records(text: &str, platform: &str) -> Result<Vec<RepoDataRecord>, LockfileError> {
    let document = Document::parse(text).map_err(|e| LockfileError::Invalid(e.to_string()))?;
    let lock = document.into_lock_file();
    let listed = lock.metadata.platforms.iter().any(|p| p == platform);
    let records: Vec<RepoDataRecord> = lock
        .package
        .into_iter()
        .filter(|p| p.platform == platform && p.manager == Manager::Conda)
        .map(|p| locked_package(p)?.to_repodata_record())
        .collect::<Result<_, _>>()?;
    // A platform the lockfile lists with no package is an empty environment.
    if records.is_empty() && !listed {
        return Err(LockfileError::MissingPlatform(platform.to_string()));
    }
    Ok(records)
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExportedDependency {
    Conda(String),
    Pip { pip: Vec<String> },
}

#[derive(Serialize)]
struct ExportedEnvironment<'a> {
    name: &'a str,
    channels: Vec<String>,
    dependencies: Vec<ExportedDependency>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    variables: &'a BTreeMap<String, String>,
}

/// An environment.yaml with exact pins (`name=version=build`, sorted) for one platform of
/// `solution`, for `conda env create` / re-solving to the same packages.
pub fn export_environment(
    solution: &Solution,
    platform: &str,
    name: &str,
) -> Result<String, LockfileError> {
    export_environment_with(solution, platform, name, &BTreeMap::new())
}

/// [`export_environment`] with the environment's `variables` (as conda's `variables:` key,
/// which `conda env create` sets on the environment).
pub fn export_environment_with(
    solution: &Solution,
    platform: &str,
    name: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, LockfileError> {
    let records = solution
        .platforms
        .get(platform)
        .ok_or_else(|| LockfileError::MissingPlatform(platform.to_string()))?;
    let mut dependencies: Vec<String> = records
        .iter()
        .map(|r| {
            let p = &r.package_record;
            format!("{}={}={}", p.name.as_normalized(), p.version, p.build)
        })
        .collect();
    dependencies.sort();
    let mut dependencies: Vec<ExportedDependency> = dependencies
        .into_iter()
        .map(ExportedDependency::Conda)
        .collect();
    let pip: Vec<String> = solution
        .pip
        .get(platform)
        .into_iter()
        .flatten()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    if !pip.is_empty() {
        dependencies.push(ExportedDependency::Pip { pip });
    }
    let env = ExportedEnvironment {
        name,
        channels: solution.channels.clone(),
        dependencies,
        variables,
    };
    serde_yaml::to_string(&env).map_err(|e| LockfileError::Invalid(e.to_string()))
}
