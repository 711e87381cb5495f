//! What an installed prefix holds, read from its `conda-meta/*.json` records (the files `conda
//! list -p PREFIX` reads): each package's files, and which of them embed the prefix path. The
//! Python distributions a pip section installed are read from their `*.dist-info/RECORD`: they
//! are packages too, to the pack (relocated by `conda-unpack`) and the image (layers).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Reading a prefix failed.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    /// The prefix or a record could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A conda-meta record is not valid JSON of the expected shape.
    #[error("conda-meta record {path} is invalid: {source}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A record lists a path that would leave the prefix.
    #[error("conda-meta record {record} lists {path:?}, which is outside the prefix")]
    UnsafePath {
        /// The record file.
        record: PathBuf,
        /// The offending path.
        path: String,
    },
}

/// How a file embeds the prefix path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Text: the prefix may be replaced by a string of any length.
    Text,
    /// Binary: the prefix is a NUL-terminated string; a replacement must be padded with NULs to
    /// the same length, so it may not be longer.
    Binary,
}

/// A file of a package that contains the prefix path it was installed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixFile {
    /// Path relative to the prefix, `/`-separated.
    pub path: String,
    /// How the prefix is embedded.
    pub mode: FileMode,
}

/// Which installer put a package in the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Manager {
    /// A conda package (a `conda-meta` record).
    #[default]
    Conda,
    /// A Python distribution of a pip section (a `*.dist-info` whose `INSTALLER` is not conda).
    Pip,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// Who installed it.
    pub manager: Manager,
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// The record's file name inside `conda-meta/`.
    pub record: String,
    /// sha256 of the package archive, when the record has it (lowercase hex).
    pub sha256: Option<String>,
    /// Every file the package installed, relative to the prefix, sorted.
    pub files: Vec<String>,
    /// The files among them that embed the prefix path.
    pub prefix_files: Vec<PrefixFile>,
}

#[derive(Deserialize)]
struct Record {
    name: String,
    version: String,
    build: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    paths_data: Option<PathsData>,
}

#[derive(Deserialize)]
struct PathsData {
    #[serde(default)]
    paths: Vec<PathEntry>,
}

#[derive(Deserialize)]
struct PathEntry {
    #[serde(rename = "_path")]
    path: String,
    #[serde(default)]
    prefix_placeholder: Option<String>,
    #[serde(default)]
    file_mode: Option<FileMode>,
}

/// Whether `p` is a relative path that stays inside the prefix.
fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Reads every `conda-meta/*.json` record of `prefix`, sorted by package name.
pub fn read_installed(prefix: &Path) -> Result<Vec<InstalledPackage>, PrefixError> {
    let meta = prefix.join("conda-meta");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrefixError::Io { path, source }
    };
    let mut records: Vec<PathBuf> = std::fs::read_dir(&meta)
        .map_err(io(&meta))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    records.sort();
    let mut out = Vec::with_capacity(records.len());
    for path in records {
        let text = std::fs::read(&path).map_err(io(&path))?;
        let rec: Record = serde_json::from_slice(&text).map_err(|source| PrefixError::Record {
            path: path.clone(),
            source,
        })?;
        let mut files = rec.files;
        let mut prefix_files = Vec::new();
        for entry in rec.paths_data.map(|p| p.paths).unwrap_or_default() {
            if entry.prefix_placeholder.is_some() {
                prefix_files.push(PrefixFile {
                    path: entry.path.clone(),
                    mode: entry.file_mode.unwrap_or(FileMode::Text),
                });
            }
            // Duplicates of `files` go with the sort and dedup below.
            files.push(entry.path);
        }
        if let Some(bad) = files.iter().find(|f| !is_safe_relative(f)) {
            return Err(PrefixError::UnsafePath {
                record: path.clone(),
                path: bad.clone(),
            });
        }
        files.sort();
        files.dedup();
        prefix_files.sort_by(|a, b| a.path.cmp(&b.path));
        out.push(InstalledPackage {
            manager: Manager::Conda,
            name: rec.name,
            version: rec.version,
            build: rec.build,
            record: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: rec.sha256,
            files,
            prefix_files,
        });
    }
    let conda_files: std::collections::HashSet<&str> = out
        .iter()
        .flat_map(|p| p.files.iter().map(String::as_str))
        .collect();
    let mut pip = read_pip_installed(prefix, &conda_files)?;
    out.append(&mut pip);
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.record.cmp(&b.record)));
    Ok(out)
}

/// `a/b/../c` → `a/c`; `None` when it leaves the root.
fn lexical_normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// The distributions pip (uv) installed: every `lib/python*/site-packages/*.dist-info` whose
/// `INSTALLER` is not conda and whose files no conda record lists. Their files are the RECORD's,
/// relative to the prefix; the scripts among them that embed the prefix (entry points' shebangs)
/// are text prefix files.
fn read_pip_installed(
    prefix: &Path,
    conda_files: &std::collections::HashSet<&str>,
) -> Result<Vec<InstalledPackage>, PrefixError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrefixError::Io { path, source }
    };
    let lib = prefix.join("lib");
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Ok(Vec::new());
    };
    let mut site_dirs: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("python"))
        .map(|n| format!("lib/{n}/site-packages"))
        .filter(|d| prefix.join(d).is_dir())
        .collect();
    site_dirs.sort();
    let needle = prefix.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for site in site_dirs {
        let dir = prefix.join(&site);
        let mut infos: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dist-info"))
            .collect();
        infos.sort();
        for info in infos {
            let rel_info = format!("{site}/{info}");
            let installer = std::fs::read_to_string(prefix.join(&rel_info).join("INSTALLER"))
                .unwrap_or_default();
            if installer.trim() == "conda"
                || conda_files.contains(format!("{rel_info}/METADATA").as_str())
            {
                continue;
            }
            let record_path = prefix.join(&rel_info).join("RECORD");
            let Ok(record) = std::fs::read_to_string(&record_path) else {
                continue;
            };
            let mut files = Vec::new();
            for line in record.lines() {
                // path,hash,size — a path with a comma is quoted (csv).
                let path = if let Some(rest) = line.strip_prefix('"') {
                    rest.split_once('"').map(|(p, _)| p).unwrap_or(rest)
                } else {
                    line.split(',').next().unwrap_or("")
                };
                if path.is_empty() {
                    continue;
                }
                let rel = lexical_normalize(&format!("{site}/{path}"))
                    .filter(|r| is_safe_relative(r))
                    .ok_or_else(|| PrefixError::UnsafePath {
                        record: record_path.clone(),
                        path: path.to_string(),
                    })?;
                files.push(rel);
            }
            files.sort();
            files.dedup();
            let mut prefix_files = Vec::new();
            for f in files.iter().filter(|f| f.starts_with("bin/")) {
                let path = prefix.join(f);
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if !meta.is_file() || meta.len() > 1 << 20 {
                    continue;
                }
                let data = std::fs::read(&path).map_err(io(&path))?;
                if data.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    prefix_files.push(PrefixFile {
                        path: f.clone(),
                        mode: if data.contains(&0) {
                            FileMode::Binary
                        } else {
                            FileMode::Text
                        },
                    });
                }
            }
            let (name, version) = info
                .trim_end_matches(".dist-info")
                .split_once('-')
                .map(|(n, v)| (crate::pip::normalize(n), v.to_string()))
                .unwrap_or_else(|| (info.clone(), String::new()));
            out.push(InstalledPackage {
                manager: Manager::Pip,
                name,
                version,
                build: "pypi_0".into(),
                record: rel_info,
                sha256: None,
                files,
                prefix_files,
            });
        }
    }
    Ok(out)
}

/// The file conda keeps a prefix's own settings in; its `env_vars` are set by `conda activate`.
pub const STATE_FILE: &str = "conda-meta/state";

/// Records the environment's variables in the prefix, as conda does (`conda env config vars
/// set`): `conda activate` sets them, and the image step reads them. Nothing is written for none.
pub fn write_env_vars(
    prefix: &Path,
    vars: &std::collections::BTreeMap<String, String>,
) -> Result<(), PrefixError> {
    if vars.is_empty() {
        return Ok(());
    }
    let path = prefix.join(STATE_FILE);
    let text = serde_json::to_string_pretty(&serde_json::json!({ "env_vars": vars }))
        .expect("strings serialise");
    std::fs::write(&path, text).map_err(|source| PrefixError::Io { path, source })
}

/// The variables recorded in the prefix (none when it has no state file).
pub fn read_env_vars(
    prefix: &Path,
) -> Result<std::collections::BTreeMap<String, String>, PrefixError> {
    let path = prefix.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(source) => return Err(PrefixError::Io { path, source }),
    };
    #[derive(Deserialize)]
    struct State {
        #[serde(default)]
        env_vars: std::collections::BTreeMap<String, String>,
    }
    serde_json::from_str::<State>(&text)
        .map(|s| s.env_vars)
        .map_err(|source| PrefixError::Record { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_record(prefix: &Path, name: &str, json: serde_json::Value) {
        std::fs::create_dir_all(prefix.join("conda-meta")).unwrap();
        std::fs::write(
            prefix.join("conda-meta").join(format!("{name}-1.0-0.json")),
            serde_json::to_vec(&json).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn reads_files_and_prefix_files() {
        let dir = tempfile::tempdir().unwrap();
        write_record(
            dir.path(),
            "tool",
            serde_json::json!({
                "name": "tool", "version": "1.0", "build": "0",
                "files": ["bin/tool", "share/tool/data.txt"],
                "paths_data": {"paths_version": 1, "paths": [
                    {"_path": "bin/tool", "path_type": "hardlink", "file_mode": "text",
                     "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3"},
                    {"_path": "share/tool/data.txt", "path_type": "hardlink"},
                    {"_path": "lib/libtool.so", "path_type": "hardlink", "file_mode": "binary",
                     "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3"}
                ]}
            }),
        );
        write_record(
            dir.path(),
            "abc",
            serde_json::json!({"name": "abc", "version": "2", "build": "h1", "files": []}),
        );
        let pkgs = read_installed(dir.path()).unwrap();
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].name, "abc");
        let tool = &pkgs[1];
        assert_eq!(
            tool.files,
            ["bin/tool", "lib/libtool.so", "share/tool/data.txt"]
        );
        assert_eq!(
            tool.prefix_files,
            [
                PrefixFile {
                    path: "bin/tool".into(),
                    mode: FileMode::Text
                },
                PrefixFile {
                    path: "lib/libtool.so".into(),
                    mode: FileMode::Binary
                },
            ]
        );
        assert_eq!(tool.record, "tool-1.0-0.json");
    }

    #[test]
    fn paths_leaving_the_prefix_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_record(
            dir.path(),
            "evil",
            serde_json::json!({"name": "evil", "version": "1", "build": "0",
                               "files": ["../../etc/passwd"]}),
        );
        assert!(matches!(
            read_installed(dir.path()),
            Err(PrefixError::UnsafePath { .. })
        ));
    }

    #[test]
    fn invalid_record_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conda-meta")).unwrap();
        std::fs::write(dir.path().join("conda-meta/bad-1-0.json"), "{not json").unwrap();
        let err = read_installed(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad-1-0.json"), "{err}");
    }
}
