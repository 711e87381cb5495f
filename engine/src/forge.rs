//! A conda-forge-sized synthetic channel for the repodata benchmarks and tests: `linux-64` and
//! `noarch` with hundreds of thousands of records (no package files), each subdir as plain
//! `repodata.json`, `repodata.json.zst` and CEP-16 sharded repodata
//! (`repodata_shards.msgpack.zst` and `shards/<sha256>.msgpack.zst`), so a client can be
//! measured on each form a real channel serves.
//!
//! The dependency graph is tiered like a real distribution: a few dozen base libraries,
//! a couple of thousand mid-level libraries that depend on them, and a long tail of
//! applications and Python packages on top, so that a request for twenty packages of the tail
//! resolves to about a hundred and fifty, as a data-science environment does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rattler_conda_types::{Shard, ShardedRepodata};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::channel::{ChannelError, SplitMix, io_err as io};

/// Versions per package name.
const VERSIONS: u64 = 10;
/// Base libraries (`pkg-00000` … ): depend on lower base libraries only.
const BASE: usize = 40;
/// Mid-level libraries: depend on base libraries and on nearby mid-level ones.
const MID: usize = 2_000;

/// How a generated channel is laid out.
#[derive(Debug, Clone)]
pub struct ForgeChannel {
    pub root: PathBuf,
    /// Records in `linux-64` and `noarch` together.
    pub records: usize,
    /// Twenty specs of the long tail, as a data-science request names its packages.
    pub request: Vec<String>,
}

/// The parameters of [`write_forge_channel`].
#[derive(Debug, Clone, Copy)]
pub struct ForgeSize {
    /// Package names in `linux-64` (`pkg-NNNNN`).
    pub linux_names: usize,
    /// Package names in `noarch` (`py-NNNNN`).
    pub noarch_names: usize,
    pub seed: u64,
}

impl ForgeSize {
    /// About 520,000 records: 42,000 × 10 in `linux-64`, 10,000 × 10 in `noarch`.
    pub const CONDA_FORGE: ForgeSize = ForgeSize {
        linux_names: 42_000,
        noarch_names: 10_000,
        seed: 42,
    };
}

fn name(subdir: &str, i: usize) -> String {
    match subdir {
        "noarch" => format!("py-{i:05}"),
        _ => format!("pkg-{i:05}"),
    }
}

/// The dependency targets of package `i` of `subdir`: fixed per name, so every version of a
/// package depends on the same names (with constraints that vary by version).
fn targets(rng: &mut SplitMix, subdir: &str, i: usize) -> Vec<String> {
    let mut t = Vec::new();
    let lower =
        |rng: &mut SplitMix, from: usize, to: usize| from + rng.below((to - from) as u64) as usize;
    if subdir == "noarch" {
        // Python packages: one or two mid-level libraries, maybe a lower Python package.
        for _ in 0..1 + rng.below(2) {
            t.push(name("linux-64", lower(rng, BASE, MID)));
        }
        if i > 0 && rng.below(2) == 0 {
            t.push(name("noarch", lower(rng, i.saturating_sub(200), i)));
        }
    } else if i < BASE {
        if i > 0 {
            for _ in 0..rng.below(3) {
                t.push(name("linux-64", lower(rng, 0, i)));
            }
        }
    } else if i < MID {
        for _ in 0..1 + rng.below(2) {
            t.push(name("linux-64", lower(rng, 0, BASE)));
        }
        if i > BASE && rng.below(2) == 0 {
            t.push(name(
                "linux-64",
                lower(rng, i.saturating_sub(100).max(BASE), i),
            ));
        }
    } else {
        t.push(name("linux-64", lower(rng, 0, BASE)));
        for _ in 0..1 + rng.below(2) {
            t.push(name("linux-64", lower(rng, BASE, MID)));
        }
        if rng.below(3) == 0 {
            t.push(name(
                "linux-64",
                lower(rng, i.saturating_sub(300).max(MID), i),
            ));
        }
    }
    t.sort();
    t.dedup();
    t
}

/// The records of one subdir, by file name.
fn records(subdir: &'static str, names: usize, rng: &mut SplitMix) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for i in 0..names {
        let pkg = name(subdir, i);
        let targets = targets(rng, subdir, i);
        for v in 1..=VERSIONS {
            // Newer versions want newer dependencies (always satisfiable: every target has
            // every version); a few cap one below its newest, which the solver must respect.
            let depends: Vec<String> = targets
                .iter()
                .map(|t| match (v, rng.below(10)) {
                    (1..=3, _) => t.clone(),
                    (_, 0) => format!("{t} >={}.0,<{}.0", v / 2, VERSIONS),
                    _ => format!("{t} >={}.0", v / 2),
                })
                .collect();
            let build = format!("h{:08x}_0", rng.next_u64() as u32);
            let mut record = json!({
                "name": pkg,
                "version": format!("{v}.0"),
                "build": build,
                "build_number": 0,
                "depends": depends,
                "license": "BSD-3-Clause",
                "md5": format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
                "sha256": format!("{:016x}{:016x}{:016x}{:016x}",
                    rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()),
                "size": 1000 + rng.below(5_000_000),
                "subdir": subdir,
                "timestamp": 1_700_000_000_000u64 + i as u64,
            });
            if subdir == "noarch" {
                record["noarch"] = json!("python");
            }
            out.insert(format!("{pkg}-{v}.0-{build}.conda"), record);
        }
    }
    out
}

fn meta(e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Metadata(e.to_string())
}

/// Writes one subdir's plain, `.zst` and sharded repodata.
fn write_subdir(
    root: &Path,
    subdir: &'static str,
    packages: BTreeMap<String, Value>,
) -> Result<(), ChannelError> {
    let dir = root.join(subdir);
    let shards_dir = dir.join("shards");
    fs::create_dir_all(&shards_dir).map_err(io(&shards_dir))?;
    let mut by_name: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for (file, record) in &packages {
        let n = record["name"].as_str().unwrap_or_default().to_string();
        by_name
            .entry(n)
            .or_default()
            .insert(file.clone(), record.clone());
    }
    let repodata = json!({
        "info": {"subdir": subdir},
        "packages": {},
        "packages.conda": packages,
        "repodata_version": 1,
    });
    let plain = serde_json::to_vec(&repodata).map_err(meta)?;
    let path = dir.join("repodata.json");
    fs::write(&path, &plain).map_err(io(&path))?;
    let zst = zstd::bulk::compress(&plain, 9).map_err(io(&path))?;
    let path = dir.join("repodata.json.zst");
    fs::write(&path, zst).map_err(io(&path))?;

    // CEP-16: one msgpack shard per name, zstd-compressed, named by the sha256 of its
    // compressed bytes; the index maps names to those hashes.
    let mut index = serde_json::Map::new();
    for (n, records) in by_name {
        let shard: Shard = serde_json::from_value(json!({
            "packages": {}, "packages.conda": records, "removed": [],
        }))
        .map_err(meta)?;
        let bytes = rmp_serde::to_vec_named(&shard).map_err(meta)?;
        let compressed = zstd::bulk::compress(&bytes, 3).map_err(io(&shards_dir))?;
        let sha = hex::encode(Sha256::digest(&compressed));
        let path = shards_dir.join(format!("{sha}.msgpack.zst"));
        fs::write(&path, compressed).map_err(io(&path))?;
        index.insert(n, Value::String(sha));
    }
    let sharded: ShardedRepodata = serde_json::from_value(json!({
        "info": {"subdir": subdir, "base_url": "./", "shards_base_url": "./shards/"},
        "shards": index,
    }))
    .map_err(meta)?;
    let bytes = rmp_serde::to_vec_named(&sharded).map_err(meta)?;
    let path = dir.join("repodata_shards.msgpack.zst");
    fs::write(&path, zstd::bulk::compress(&bytes, 3).map_err(io(&path))?).map_err(io(&path))
}

/// Writes the channel into `dir` (replacing what is there). The same size and seed always
/// give the same bytes.
pub fn write_forge_channel(dir: &Path, size: ForgeSize) -> Result<ForgeChannel, ChannelError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let root = dir.canonicalize().map_err(io(dir))?;
    let mut rng = SplitMix(size.seed);
    let linux = records("linux-64", size.linux_names, &mut rng);
    let noarch = records("noarch", size.noarch_names, &mut rng);
    let count = linux.len() + noarch.len();
    write_subdir(&root, "linux-64", linux)?;
    write_subdir(&root, "noarch", noarch)?;
    // Twenty packages of the tail: fourteen applications and six Python packages, spread.
    let tail = size.linux_names.saturating_sub(MID).max(1);
    let mut request: Vec<String> = (0..14)
        .map(|k| name("linux-64", MID.min(size.linux_names - 1) + k * tail / 14))
        .collect();
    request.extend((0..6).map(|k| name("noarch", k * size.noarch_names.max(1) / 6)));
    request.dedup();
    Ok(ForgeChannel {
        root,
        records: count,
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_holds_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let size = ForgeSize {
            linux_names: 2_100,
            noarch_names: 30,
            seed: 1,
        };
        let c = write_forge_channel(dir.path(), size).unwrap();
        assert_eq!(c.records, (2_100 + 30) * VERSIONS as usize);
        assert_eq!(c.request.len(), 20);
        let plain: Value =
            serde_json::from_slice(&fs::read(c.root.join("linux-64/repodata.json")).unwrap())
                .unwrap();
        let zst = zstd::decode_all(
            fs::read(c.root.join("linux-64/repodata.json.zst"))
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&zst).unwrap(), plain);
        let index = zstd::decode_all(
            fs::read(c.root.join("linux-64/repodata_shards.msgpack.zst"))
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let index: ShardedRepodata = rmp_serde::from_slice(&index).unwrap();
        assert_eq!(index.shards.len(), 2_100);
        let sha = index.shards["pkg-00007"];
        let bytes = fs::read(
            c.root
                .join(format!("linux-64/shards/{}.msgpack.zst", hex::encode(sha))),
        )
        .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), hex::encode(sha));
        let shard: Shard =
            rmp_serde::from_slice(&zstd::decode_all(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(shard.conda_packages.len(), VERSIONS as usize);
        assert_eq!(
            fs::read(c.root.join("linux-64/repodata.json")).unwrap(),
            {
                let again = tempfile::tempdir().unwrap();
                let c2 = write_forge_channel(again.path(), size).unwrap();
                fs::read(c2.root.join("linux-64/repodata.json")).unwrap()
            },
            "deterministic"
        );
    }
}
