//! Which packages share a layer: one layer per package up to the budget, the rest in buckets.

use super::*;

/// One layer to write.
#[derive(Debug)]
pub(super) struct LayerPlan {
    pub(super) origin: LayerOrigin,
    /// `name-version-build` of its packages, sorted.
    pub(super) packages: Vec<String>,
    /// Paths relative to the prefix (files, symlinks and empty directories), sorted.
    pub(super) paths: Vec<String>,
}

/// Groups the packages into at most `budget` layers, then adds the layer of unowned files.
pub(super) fn plan_layers(
    prefix: &Path,
    packages: &[InstalledPackage],
    budget: usize,
) -> Result<Vec<LayerPlan>, ImageError> {
    let mut owned = HashSet::new();
    // (bytes, dist name, existing files) per package.
    let mut sized = Vec::with_capacity(packages.len());
    for pkg in packages {
        let mut bytes = 0u64;
        let mut files = Vec::with_capacity(pkg.files.len());
        for f in &pkg.files {
            let path = prefix.join(f);
            match std::fs::symlink_metadata(&path) {
                Ok(m) => {
                    bytes += m.len();
                    files.push(f.clone());
                    owned.insert(f.clone());
                }
                // A record may list files removed since (by the user or a later package);
                // `conda list` does not care either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ImageError::Read { path, source }),
            }
        }
        let dist = format!("{}-{}-{}", pkg.name, pkg.version, pkg.build);
        sized.push((bytes, dist, files));
    }

    let mut groups: Vec<(Vec<String>, BTreeSet<String>)> = Vec::new();
    if sized.len() <= budget {
        for (_, dist, files) in sized {
            groups.push((vec![dist], files.into_iter().collect()));
        }
    } else {
        // A quarter of the budget (at least one) for buckets of the small packages.
        let buckets = (budget / 4).max(1);
        let own = budget - buckets;
        sized.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut merged: Vec<(Vec<String>, BTreeSet<String>)> =
            vec![(Vec::new(), BTreeSet::new()); buckets];
        for (i, (_, dist, files)) in sized.into_iter().enumerate() {
            if i < own {
                groups.push((vec![dist], files.into_iter().collect()));
            } else {
                let hash = Sha256::digest(dist.as_bytes());
                let slot = (u64::from_be_bytes(hash[..8].try_into().unwrap_or([0; 8]))
                    % buckets as u64) as usize;
                merged[slot].0.push(dist);
                merged[slot].1.extend(files);
            }
        }
        groups.extend(merged.into_iter().filter(|g| !g.0.is_empty()));
    }
    for g in &mut groups {
        g.0.sort();
    }
    // Order does not change layer digests, only the manifest; sorting by package keeps it stable.
    groups.sort();
    let mut plans: Vec<LayerPlan> = groups
        .into_iter()
        .map(|(packages, paths)| LayerPlan {
            origin: LayerOrigin::Packages,
            packages,
            paths: paths.into_iter().collect(),
        })
        .collect();

    let mut unowned = Vec::new();
    for entry in walkdir::WalkDir::new(prefix)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(prefix).to_path_buf();
            ImageError::Read {
                path,
                source: e.into(),
            }
        })?;
        let rel = entry
            .path()
            .strip_prefix(prefix)
            .ok()
            .and_then(|r| r.to_str())
            .ok_or_else(|| ImageError::Read {
                path: entry.path().to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
            })?
            .to_string();
        if entry.file_type().is_dir() {
            // Directories are emitted as parents of what they contain; only empty ones need
            // an entry of their own.
            let empty = std::fs::read_dir(entry.path())
                .map_err(|source| ImageError::Read {
                    path: entry.path().to_path_buf(),
                    source,
                })?
                .next()
                .is_none();
            if empty {
                unowned.push(rel);
            }
        } else if !owned.contains(&rel) {
            unowned.push(rel);
        }
    }
    unowned.sort();
    plans.push(LayerPlan {
        origin: LayerOrigin::Unowned,
        packages: Vec::new(),
        paths: unowned,
    });
    Ok(plans)
}
