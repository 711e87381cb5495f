//! What goes into a pack archive, and in which pieces.
//!
//! The archive is cut into segments, each compressed on its own (a zstd frame or a gzip
//! member; concatenated they are one valid stream), so segments are compressed in parallel and
//! a package's segment can be kept and reused by the next environment holding the same files.
//! [`walk`] reads the prefix's metadata (never file contents); [`plan`] decides the segments.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use super::{PackError, mode_of, mtime_of, relocatable_target};
use crate::prefix::{FileMode, InstalledPackage};

/// A segment is closed before its files would pass this many bytes (a single larger file gets a
/// segment of its own): large enough that the per-frame cost vanishes, small enough that two
/// workers share even a one-package environment.
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;

/// One path of the prefix, with the metadata its tar header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Relative to the prefix.
    pub rel: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since 1970.
    pub mtime: u64,
    /// Its nanoseconds, for the key only (tar keeps seconds): a file rewritten within the
    /// second it was written is still told apart.
    pub mtime_nanos: u32,
    /// Inode number (0 where the platform has none): part of a reusable segment's key, so a
    /// file replaced since, even with the same size and time, is never taken for the old one.
    pub ino: u64,
    /// What it is.
    pub kind: Kind,
}

/// The kinds of entry a prefix may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// A directory.
    Dir,
    /// A symlink, with the (relocatable) target to store.
    Symlink(PathBuf),
    /// A regular file of this size.
    File(u64),
}

/// A run of entries compressed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    /// In archive order.
    pub entries: Vec<Entry>,
    /// For a run of one package's files: what identifies its bytes, so it can be reused.
    pub key: Option<String>,
    /// The bytes of file content it holds.
    pub bytes: u64,
}

/// Reads the metadata of every path under `prefix_dir` (the [`super::GENERATED`] entries
/// left out), in a depth-first walk with each directory's entries sorted by name bytes.
/// Refuses what cannot be packed: symlinks leaving the prefix, sockets and devices, a `bin`
/// that is not a directory.
pub(super) fn walk(prefix_dir: &Path, embedded: &str) -> Result<Vec<Entry>, PackError> {
    let mut entries = Vec::new();
    let walk = WalkDir::new(prefix_dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1);
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(prefix_dir).to_path_buf();
            PackError::Io {
                path,
                source: e.into(),
            }
        })?;
        let Ok(rel) = entry.path().strip_prefix(prefix_dir) else {
            continue;
        };
        if super::is_generated(rel) {
            continue;
        }
        entries.push(read_entry(entry.path(), rel, embedded)?);
    }
    Ok(entries)
}

fn read_entry(path: &Path, rel: &Path, embedded: &str) -> Result<Entry, PackError> {
    let io_err = |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    let modified = meta.modified().ok();
    let ty = meta.file_type();
    if !ty.is_dir() && rel == Path::new("bin") {
        return Err(PackError::Unsupported {
            path: rel.into(),
            reason: "bin must be a directory to hold bin/conda-unpack",
        });
    }
    let kind = if ty.is_dir() {
        Kind::Dir
    } else if ty.is_symlink() {
        let target = fs::read_link(path).map_err(io_err)?;
        Kind::Symlink(relocatable_target(rel, &target, embedded)?)
    } else if ty.is_file() {
        Kind::File(meta.len())
    } else {
        return Err(PackError::Unsupported {
            path: rel.into(),
            reason: "not a directory, regular file or symlink (sockets, FIFOs and devices \
                     cannot be packed)",
        });
    };
    Ok(Entry {
        rel: rel.to_path_buf(),
        mode: if matches!(kind, Kind::Symlink(_)) {
            0o777
        } else {
            mode_of(&meta)
        },
        mtime: mtime_of(modified),
        mtime_nanos: modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.subsec_nanos()),
        ino: inode(&meta),
        kind,
    })
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &fs::Metadata) -> u64 {
    0
}

/// The walked entries by path, to their position.
pub(super) type Index<'a> = HashMap<&'a Path, usize>;

/// Indexes `entries` by path.
pub(super) fn index(entries: &[Entry]) -> Index<'_> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.rel.as_path(), i))
        .collect()
}

/// Cuts the walked entries into segments, in archive order:
///
/// 1. every directory (so each exists, with its mode, before anything lands in it);
/// 2. package by package (in `packages` order), the regular files exactly one package lists and
///    that do not embed the prefix, by path: these files are the package's own bytes, the same
///    in every environment installed from the same package cache, so their segments get a key;
/// 3. everything else in walk order: symlinks, files that embed the prefix (their bytes name
///    this environment), files of no package (conda-meta records) or of two.
///
/// `index` is [`index`] of `entries`; `tag` names the compression and its settings, part of
/// every key.
pub(super) fn plan(
    entries: &[Entry],
    index: &Index,
    packages: &[InstalledPackage],
    rewrite: &[(String, FileMode)],
    tag: &str,
) -> Vec<Segment> {
    let rewrite: HashSet<&Path> = rewrite.iter().map(|(p, _)| Path::new(p.as_str())).collect();
    let mut claims: HashMap<usize, u32> = HashMap::new();
    for pkg in packages {
        for f in &pkg.files {
            if let Some(&i) = index.get(Path::new(f.as_str())) {
                *claims.entry(i).or_default() += 1;
            }
        }
    }
    let own = |i: usize| {
        matches!(entries[i].kind, Kind::File(_))
            && claims.get(&i) == Some(&1)
            && !rewrite.contains(entries[i].rel.as_path())
    };
    let owned: Vec<Vec<usize>> = packages
        .iter()
        .map(|pkg| {
            pkg.files
                .iter()
                .filter_map(|f| index.get(Path::new(f.as_str())).copied())
                .filter(|&i| own(i))
                .collect()
        })
        .collect();

    let mut taken = vec![false; entries.len()];
    let mut segments = Vec::new();
    let dirs: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind == Kind::Dir)
        .collect();
    for &i in &dirs {
        taken[i] = true;
    }
    if !dirs.is_empty() {
        segments.push(segment(entries, &dirs, None));
    }
    for (pkg, files) in packages.iter().zip(&owned) {
        let id = match &pkg.sha256 {
            Some(sha) => format!("sha256:{sha}"),
            None => format!("record:{}", pkg.record),
        };
        for run in runs(entries, files) {
            for &i in run {
                taken[i] = true;
            }
            segments.push(segment(entries, run, Some((tag, &id))));
        }
    }
    let rest: Vec<usize> = (0..entries.len()).filter(|&i| !taken[i]).collect();
    for run in runs(entries, &rest) {
        segments.push(segment(entries, run, None));
    }
    segments
}

fn size(e: &Entry) -> u64 {
    match e.kind {
        Kind::File(size) => size,
        _ => 0,
    }
}

/// Splits `items` into runs of at most [`SEGMENT_BYTES`] of content (a larger file alone).
fn runs<'a>(entries: &[Entry], items: &'a [usize]) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in items.iter().enumerate() {
        let s = size(&entries[i]);
        if n > start && bytes + s > SEGMENT_BYTES {
            out.push(&items[start..n]);
            (start, bytes) = (n, 0);
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

fn segment(entries: &[Entry], run: &[usize], keyed: Option<(&str, &str)>) -> Segment {
    let entries: Vec<Entry> = run.iter().map(|&i| entries[i].clone()).collect();
    let key = keyed.map(|(tag, id)| segment_key(tag, id, &entries));
    Segment {
        bytes: entries.iter().map(size).sum(),
        entries,
        key,
    }
}

/// sha256 over everything a reusable segment's bytes follow from: the format, the compression,
/// the package, and each file's path, mode, time (to the nanosecond), size and inode. The contents are the
/// package's own (the install links or copies them unchanged; files that embed the prefix are
/// never in a keyed segment).
fn segment_key(tag: &str, package: &str, entries: &[Entry]) -> String {
    let mut h = Sha256::new();
    h.update(format!("conda-store-pack-segment/1\n{tag}\n{package}\n"));
    for e in entries {
        h.update(e.rel.as_os_str().as_encoded_bytes());
        h.update(format!(
            "\0{:o}\0{}.{:09}\0{}\0{}\n",
            e.mode,
            e.mtime,
            e.mtime_nanos,
            size(e),
            e.ino
        ));
    }
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, size: u64, ino: u64) -> Entry {
        Entry {
            rel: rel.into(),
            mode: 0o644,
            mtime: 1,
            mtime_nanos: 0,
            ino,
            kind: Kind::File(size),
        }
    }

    fn dir(rel: &str) -> Entry {
        Entry {
            rel: rel.into(),
            mode: 0o755,
            mtime: 1,
            mtime_nanos: 0,
            ino: 0,
            kind: Kind::Dir,
        }
    }

    fn pkg(name: &str, files: &[&str]) -> InstalledPackage {
        InstalledPackage {
            manager: crate::prefix::Manager::Conda,
            name: name.into(),
            version: "1".into(),
            build: "0".into(),
            record: format!("{name}-1-0.json"),
            sha256: Some(format!("{name}-sha")),
            files: files.iter().map(|f| f.to_string()).collect(),
            prefix_files: Vec::new(),
        }
    }

    fn plan_of(
        entries: Vec<Entry>,
        packages: &[InstalledPackage],
        rewrite: &[(String, FileMode)],
        tag: &str,
    ) -> Vec<Segment> {
        plan(&entries, &index(&entries), packages, rewrite, tag)
    }

    fn names(s: &Segment) -> Vec<&str> {
        s.entries.iter().map(|e| e.rel.to_str().unwrap()).collect()
    }

    fn walked() -> Vec<Entry> {
        vec![
            dir("bin"),
            file("bin/a", 10, 1),
            file("bin/b", 10, 2),
            dir("conda-meta"),
            file("conda-meta/a-1-0.json", 5, 3),
            file("conda-meta/b-1-0.json", 5, 4),
            dir("lib"),
            file("lib/liba.so", 20, 5),
            file("lib/shared", 1, 6),
            Entry {
                rel: "lib/link".into(),
                mode: 0o777,
                mtime: 1,
                mtime_nanos: 0,
                ino: 7,
                kind: Kind::Symlink("liba.so".into()),
            },
        ]
    }

    #[test]
    fn directories_then_packages_then_the_rest() {
        let packages = [
            pkg("a", &["bin/a", "lib/liba.so", "lib/link", "lib/shared"]),
            pkg("b", &["bin/b", "lib/shared"]),
        ];
        let rewrite = [("bin/b".to_string(), FileMode::Text)];
        let segments = plan_of(walked(), &packages, &rewrite, "zstd-3");
        let got: Vec<Vec<&str>> = segments.iter().map(names).collect();
        assert_eq!(
            got,
            [
                vec!["bin", "conda-meta", "lib"],
                vec!["bin/a", "lib/liba.so"],
                // b's only file embeds the prefix: b has no segment of its own.
                vec![
                    "bin/b",
                    "conda-meta/a-1-0.json",
                    "conda-meta/b-1-0.json",
                    // Listed by two packages: whose bytes these are is not known.
                    "lib/shared",
                    "lib/link",
                ],
            ]
        );
        let keyed: Vec<bool> = segments.iter().map(|s| s.key.is_some()).collect();
        assert_eq!(keyed, [false, true, false]);
        assert_eq!(segments[1].bytes, 30);
        // Every entry exactly once.
        assert_eq!(segments.iter().map(|s| s.entries.len()).sum::<usize>(), 10);
    }

    #[test]
    fn keys_follow_the_files_metadata_package_and_compression() {
        let packages = [pkg("a", &["bin/a", "lib/liba.so"])];
        let key = |entries: Vec<Entry>, packages: &[InstalledPackage], tag: &str| {
            plan_of(entries, packages, &[], tag)[1].key.clone().unwrap()
        };
        let base = key(walked(), &packages, "zstd-3");
        assert_eq!(base, key(walked(), &packages, "zstd-3"), "stable");
        assert_ne!(base, key(walked(), &packages, "gzip-6"), "compression");
        let mut other = packages.clone();
        other[0].sha256 = Some("other".into());
        assert_ne!(base, key(walked(), &other, "zstd-3"), "package");
        for change in [
            |e: &mut Entry| e.mtime += 1,
            |e: &mut Entry| e.mtime_nanos += 1,
            |e: &mut Entry| e.mode = 0o600,
            |e: &mut Entry| e.ino += 100,
            |e: &mut Entry| e.kind = Kind::File(21),
        ] {
            let mut entries = walked();
            change(&mut entries[7]);
            assert_ne!(base, key(entries, &packages, "zstd-3"));
        }
        // Another environment's unrelated files do not matter.
        let mut entries = walked();
        entries[4].mtime += 1;
        assert_eq!(base, key(entries, &packages, "zstd-3"));
    }

    #[test]
    fn large_packages_are_cut_into_runs() {
        let big = SEGMENT_BYTES / 2 + 1;
        let entries = vec![
            file("a", big, 1),
            file("b", big, 2),
            file("c", 3 * SEGMENT_BYTES, 3),
            file("d", 1, 4),
            file("e", 1, 5),
        ];
        let packages = [pkg("p", &["a", "b", "c", "d", "e"])];
        let segments = plan_of(entries, &packages, &[], "t");
        let got: Vec<Vec<&str>> = segments.iter().map(names).collect();
        assert_eq!(got, [vec!["a"], vec!["b"], vec!["c"], vec!["d", "e"]]);
    }
}
