//! OCI images built directly from installed prefixes, with no container daemon: the prefix's
//! files become tar+gzip layers written into an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/<digest>`), which `skopeo copy oci:DIR:TAG ...` pushes anywhere
//! and the gateway's registry serves blob by blob.
//!
//! **Layers.** Images of different environments should share the bytes of the packages they have
//! in common, so layers follow packages: each package gets a layer of its own, and one last layer
//! holds what no package owns (`conda-meta/`, `conda-meta/history`, files made after install).
//! Runtimes cap the layer count (overlayfs stacks about 128 lower directories, some runtimes
//! fewer), so past [`ImageOptions::max_layers`] the largest packages keep their own layers (they
//! are where sharing saves bytes) and the rest are merged into buckets chosen by a hash of the
//! package name, so adding one small package changes one bucket and not every layer after it (as
//! contiguous chunks of a sorted list would).
//!
//! **Reproducibility.** A layer's bytes depend only on its own files: entries sorted by path,
//! uid/gid 0 and no user or group names, directories 0755, file modes kept, every mtime
//! [`LAYER_MTIME`], gzip header without time or name at a fixed level. So a package installed
//! from the same package file gives the same layer digest in two environments, and building twice
//! gives the same manifest digest. Because a fixed mtime would make Python's timestamp-checked
//! `.pyc` files stale (Python would recompile every module at every start, since the prefix is
//! usually read-only in a container), their header's source mtime is set to the same fixed value.
//!
//! **Relocation.** The prefix is usually installed somewhere else than where it lives in the
//! image (a build volume), so files that embed the install path (the `paths_data` entries with a
//! prefix placeholder) are rewritten to the image path as conda does: any length in text files,
//! NUL-padded C strings in binary files. Absolute symlinks into the prefix are retargeted too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, Config, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, History, HistoryBuilder,
    ImageConfiguration, ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::hashing::HashingWriter;
use crate::prefix::{FileMode, InstalledPackage, PrefixError, read_installed};

mod cache;
mod rootfs;
pub use cache::LayerCache;
pub use rootfs::{RootfsImageOptions, build_rootfs_image};

/// The mtime of every layer entry (1980-01-01T00:00:00Z). Fixed so layers are reproducible; not 0
/// because zip-based tools (Python's `zipimport`, wheels) cannot represent dates before 1980.
pub const LAYER_MTIME: u64 = 315_532_800;

/// The image's creation time unless [`ImageOptions::created`] says otherwise: [`LAYER_MTIME`],
/// so the config (and the manifest digest) does not change with the time of the build.
pub const DEFAULT_CREATED: &str = "1980-01-01T00:00:00Z";

/// The default maximum layer count, base image layers included: below the 127/128 lower
/// directories that overlayfs-based runtimes accept, with room to spare.
pub const DEFAULT_MAX_LAYERS: usize = 100;

/// The `PATH` appended after the prefix's `bin` when the base image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default gzip level. On a 300 MB synthetic prefix with flate2's Rust backend, level 3
/// built at 89 MB/s with blobs 4% larger than level 6, which built at 21 MB/s; level 1 was
/// faster still (180 MB/s) but 35% larger, which every pull pays for.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 3;

/// The annotation naming an image in an OCI layout's `index.json` (its tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The annotation `ctr images import` names an imported image by (a full reference).
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// The label holding the conda-store build id.
pub const BUILD_ID_LABEL: &str = "conda.store/build-id";

/// Building an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The prefix's conda-meta records could not be read.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// A file of the prefix or of a layout could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file of the output layout could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// What was written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The base image is missing, incomplete or corrupt.
    #[error("base image {path}: {reason}")]
    Base {
        /// The offending file or directory of the base layout.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The output layout exists but is not a valid OCI layout.
    #[error("output layout {path}: {reason}")]
    Output {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary file embeds the install prefix, and the image prefix is longer so it cannot be
    /// written in its place.
    #[error(
        "{path} embeds the install prefix in binary form, which cannot be replaced by the longer \
         image prefix {image_prefix:?}; install to a path at least as long as the image path"
    )]
    BinaryPrefixTooLong {
        /// The file.
        path: PathBuf,
        /// The image prefix.
        image_prefix: String,
    },
    /// An argument or option is invalid.
    #[error("invalid image option: {0}")]
    Invalid(String),
    /// The OCI metadata could not be built (a bug rather than bad input).
    #[error("building OCI metadata: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    /// JSON serialisation failed (a bug rather than bad input).
    #[error("serialising OCI metadata: {0}")]
    Json(#[from] serde_json::Error),
}

/// An existing image, in an OCI layout directory, to build on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The OCI layout directory (with `oci-layout` and `index.json`).
    pub layout: PathBuf,
    /// The image's tag (`org.opencontainers.image.ref.name` in `index.json`) or its manifest
    /// digest (`sha256:...`). A multi-platform index is resolved to the image's platform.
    pub reference: String,
}

/// How to build an image; [`ImageOptions::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// The environment's name: `CONDA_DEFAULT_ENV` and the `org.opencontainers.image.title` label.
    pub name: String,
    /// The tag the image gets in the layout's `index.json`; an image already there with this
    /// tag is replaced, images with other tags are kept (so one layout can hold many images and
    /// their shared blobs once).
    pub tag: String,
    /// GOARCH-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// GOOS-style operating system (`linux`).
    pub os: String,
    /// Environment variables to set (the environment's `variables`); they override the base
    /// image's and the computed `PATH`, `CONDA_PREFIX` and `CONDA_DEFAULT_ENV`.
    pub env: BTreeMap<String, String>,
    /// Labels to set; they override the base image's and the computed ones.
    pub labels: BTreeMap<String, String>,
    /// The conda-store build id, set as the [`BUILD_ID_LABEL`] label.
    pub build_id: Option<String>,
    /// The working directory; defaults to the base image's, else `/`.
    pub working_dir: Option<String>,
    /// RFC 3339 creation time of the image and its history entries.
    pub created: String,
    /// An image to build on: its layers come first and its config (`Env`, `Cmd`, `User`, ...)
    /// is kept under ours.
    pub base: Option<BaseImage>,
    /// The most layers the image may have, base layers included.
    pub max_layers: usize,
    /// The path the prefix was installed at, which files embed; defaults to the prefix
    /// directory given to [`build_image`]. When it differs from the image prefix, files are
    /// rewritten (see the module documentation).
    pub installed_at: Option<PathBuf>,
    /// gzip level (0-9) of the layers. Part of a layer's identity: changing it changes digests,
    /// so every build of a deployment should use the same one.
    pub compression_level: u32,
    /// Where layers are kept for the next image holding the same package files (a rebuild),
    /// which copies them instead of compressing again. The image is the same either way.
    pub layer_cache: Option<LayerCache>,
}

impl ImageOptions {
    /// The defaults for environment `name`: tag `latest`, `amd64`/`linux`, no base image, at
    /// most [`DEFAULT_MAX_LAYERS`] layers, gzip level [`DEFAULT_COMPRESSION_LEVEL`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tag: "latest".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            build_id: None,
            working_dir: None,
            created: DEFAULT_CREATED.into(),
            base: None,
            max_layers: DEFAULT_MAX_LAYERS,
            installed_at: None,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            layer_cache: None,
        }
    }
}

/// Where a layer of the image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOrigin {
    /// A layer of the base image, reused as is.
    Base,
    /// The files of one or more packages.
    Packages,
    /// The prefix's files that no package owns (conda-meta and the like).
    Unowned,
}

/// One layer of a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSummary {
    /// Digest of the compressed blob (`sha256:...`), as in the manifest.
    pub digest: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar, as in the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// Where the layer comes from.
    pub origin: LayerOrigin,
    /// The packages in it, as `name-version-build`, sorted; empty for other origins.
    pub packages: Vec<String>,
}

/// What [`build_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// The tag in the layout's `index.json`.
    pub tag: String,
    /// Digest of the manifest: the image's identity (`repo@sha256:...`).
    pub manifest_digest: String,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// Digest of the config blob.
    pub config_digest: String,
    /// Size of the config blob in bytes.
    pub config_size: u64,
    /// The layers in order, base layers first.
    pub layers: Vec<LayerSummary>,
    /// Manifest, config and compressed layers together, in bytes: what a registry stores.
    pub total_size: u64,
    /// Layers copied from the layer cache instead of written. Not part of `image.json`: the
    /// image is the same either way.
    #[serde(skip)]
    pub reused_layers: u64,
}

/// Builds an OCI image of the installed `prefix`, placed at `image_prefix` (absolute, e.g.
/// `/opt/conda/envs/NAME`) inside the image, into the OCI layout directory `layout` (created if
/// missing; an existing layout keeps its other images and blobs).
///
/// Layers are built in parallel, each streamed to disk while hashed, in constant memory (except
/// files rewritten for relocation, which are held in memory one at a time).
pub fn build_image(
    prefix: &Path,
    image_prefix: &str,
    layout: &Path,
    options: &ImageOptions,
) -> Result<ImageSummary, ImageError> {
    let image_rel = validate(image_prefix, options)?;
    let installed_at = match &options.installed_at {
        Some(p) => p.clone(),
        None => std::path::absolute(prefix).map_err(|source| ImageError::Read {
            path: prefix.to_path_buf(),
            source,
        })?,
    };
    let installed_at = installed_at
        .to_str()
        .ok_or_else(|| ImageError::Invalid(format!("install path {installed_at:?} is not UTF-8")))?
        .trim_end_matches('/')
        .to_string();
    let relocation = (installed_at != image_prefix).then(|| Relocation {
        from: installed_at.into_bytes(),
        to: image_prefix.as_bytes().to_vec(),
    });

    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| ImageError::Write {
        path: blobs.clone(),
        source,
    })?;

    let base = match &options.base {
        Some(b) => Some(load_base(b, options)?),
        None => None,
    };
    let base_layers = base.as_ref().map_or(0, |b| b.manifest.layers().len());
    // One layer is kept for the unowned files.
    let budget = options
        .max_layers
        .checked_sub(base_layers + 1)
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "max_layers {} leaves no room for packages after {base_layers} base layer(s)",
                options.max_layers
            ))
        })?;

    let packages = read_installed(prefix)?;
    let plans = plan_layers(prefix, &packages, budget)?;

    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut history = Vec::new();
    if let Some(base) = &base {
        let base_diff_ids = base.config.rootfs().diff_ids();
        if base_diff_ids.len() != base.manifest.layers().len() {
            return Err(ImageError::Base {
                path: base.layout.clone(),
                reason: format!(
                    "its config lists {} diff_ids for {} layers",
                    base_diff_ids.len(),
                    base.manifest.layers().len()
                ),
            });
        }
        for (desc, diff_id) in base.manifest.layers().iter().zip(base_diff_ids) {
            copy_blob(&base.layout, desc, &blobs)?;
            layers.push(LayerSummary {
                digest: desc.digest().to_string(),
                size: desc.size(),
                diff_id: diff_id.clone(),
                origin: LayerOrigin::Base,
                packages: Vec::new(),
            });
            descriptors.push(desc.clone());
        }
        match base.config.history() {
            Some(h) => history.extend(h.iter().cloned()),
            // Tools expect one history entry per layer; describe the base's ones.
            None => {
                for _ in 0..base_layers {
                    history.push(
                        HistoryBuilder::default()
                            .created_by("base image layer")
                            .build()?,
                    );
                }
            }
        }
    }

    // Which files embed the install prefix, and how; only needed when relocating.
    let prefix_files = match relocation {
        Some(_) => packages
            .iter()
            .flat_map(|p| &p.prefix_files)
            .map(|f| (f.path.clone(), f.mode))
            .collect(),
        None => HashMap::new(),
    };
    let ctx = LayerContext {
        prefix,
        image_rel: &image_rel,
        blobs: &blobs,
        relocation: relocation.as_ref(),
        prefix_files: &prefix_files,
        level: options.compression_level,
        keep_dir_modes: false,
        cache: options.layer_cache.as_ref(),
    };
    let written = write_layers(&ctx, &plans)?;
    let reused_layers = written.iter().filter(|w| w.reused).count() as u64;
    for (plan, written) in plans.iter().zip(written) {
        let created_by = match plan.origin {
            LayerOrigin::Packages => format!("conda-store: {}", plan.packages.join(" ")),
            _ => "conda-store: prefix files owned by no package (conda-meta, ...)".to_string(),
        };
        history.push(
            HistoryBuilder::default()
                .created(options.created.clone())
                .created_by(created_by)
                .build()?,
        );
        descriptors.push(written.descriptor()?);
        layers.push(written.summary(plan.origin, plan.packages.clone()));
    }

    let config = exec_config(image_prefix, options, base.as_ref().map(|b| &b.config))?;
    let mut summary = finish_image(
        layout,
        &blobs,
        NewImage {
            entry: IndexEntry {
                tag: &options.tag,
                architecture: &options.architecture,
                os: &options.os,
                reference: None,
            },
            created: &options.created,
            config,
            history,
            descriptors,
            layers,
        },
    )?;
    summary.reused_layers = reused_layers;
    if let Some(cache) = &options.layer_cache {
        // Best effort: an unprunable cache only grows.
        let _ = cache.prune();
    }
    Ok(summary)
}

/// An image whose layers are written, to finish.
struct NewImage<'a> {
    /// How the layout's index names it (and its platform).
    entry: IndexEntry<'a>,
    /// RFC 3339 creation time.
    created: &'a str,
    /// What runs and how (`Env`, `Entrypoint`, `User`, labels...).
    config: Config,
    /// One entry per layer.
    history: Vec<History>,
    /// The layers as the manifest lists them, in order.
    descriptors: Vec<Descriptor>,
    /// The same layers as the summary reports them (their diff_ids go into the config).
    layers: Vec<LayerSummary>,
}

/// Writes the config and the manifest of an image whose layers are written, and names it in
/// the layout's index.
fn finish_image(
    layout: &Path,
    blobs: &Path,
    image: NewImage<'_>,
) -> Result<ImageSummary, ImageError> {
    let NewImage {
        entry,
        created,
        config,
        history,
        descriptors,
        layers,
    } = image;
    let config = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::from(entry.architecture))
        .os(Os::from(entry.os))
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
                .build()?,
        )
        .history(history)
        .build()?;
    let (config_digest, config_size) = write_blob(blobs, &canonical_json(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(config_digest.clone())
                .size(config_size)
                .build()?,
        )
        .layers(descriptors)
        .build()?;
    let (manifest_digest, manifest_size) = write_blob(blobs, &canonical_json(&manifest)?)?;
    write_index(layout, &entry, &manifest_digest, manifest_size)?;
    let total_size = manifest_size + config_size + layers.iter().map(|l| l.size).sum::<u64>();
    Ok(ImageSummary {
        tag: entry.tag.to_string(),
        manifest_digest: manifest_digest.to_string(),
        manifest_size,
        config_digest: config_digest.to_string(),
        config_size,
        layers,
        total_size,
        reused_layers: 0,
    })
}

/// Checks the arguments; returns the image prefix relative to `/`.
fn validate(image_prefix: &str, options: &ImageOptions) -> Result<String, ImageError> {
    let rel = image_prefix
        .strip_prefix('/')
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| {
            !r.is_empty()
                && !r.contains(['\\', '\0'])
                && r.split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        })
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "image prefix {image_prefix:?} must be an absolute, normalised path below /"
            ))
        })?;
    if image_prefix.ends_with('/') {
        return Err(ImageError::Invalid(format!(
            "image prefix {image_prefix:?} must not end with /"
        )));
    }
    if options.name.is_empty() || options.tag.is_empty() {
        return Err(ImageError::Invalid("name and tag must not be empty".into()));
    }
    if options.compression_level > 9 {
        return Err(ImageError::Invalid(format!(
            "compression level {} is above 9",
            options.compression_level
        )));
    }
    Ok(rel.to_string())
}

/// One layer to write.
#[derive(Debug)]
struct LayerPlan {
    origin: LayerOrigin,
    /// `name-version-build` of its packages, sorted.
    packages: Vec<String>,
    /// Paths relative to the prefix (files, symlinks and empty directories), sorted.
    paths: Vec<String>,
}

/// Groups the packages into at most `budget` layers, then adds the layer of unowned files.
fn plan_layers(
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

/// Replacing the install path by the image path in files that embed it.
struct Relocation {
    from: Vec<u8>,
    to: Vec<u8>,
}

/// What every layer writer shares.
struct LayerContext<'a> {
    prefix: &'a Path,
    image_rel: &'a str,
    blobs: &'a Path,
    relocation: Option<&'a Relocation>,
    /// The files that embed the install prefix, by path relative to the prefix.
    prefix_files: &'a HashMap<String, FileMode>,
    level: u32,
    /// Keep directories' modes (a root filesystem's `/tmp` is 1777); conda prefixes carry none.
    keep_dir_modes: bool,
    /// Kept layers to copy instead of writing.
    cache: Option<&'a LayerCache>,
}

/// A layer blob written to the layout.
struct WrittenLayer {
    digest: Digest,
    diff_id: Digest,
    size: u64,
    /// Copied from the layer cache.
    reused: bool,
}

impl WrittenLayer {
    fn descriptor(&self) -> Result<Descriptor, ImageError> {
        Ok(DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(self.digest.clone())
            .size(self.size)
            .build()?)
    }

    fn summary(&self, origin: LayerOrigin, packages: Vec<String>) -> LayerSummary {
        LayerSummary {
            digest: self.digest.to_string(),
            size: self.size,
            diff_id: self.diff_id.to_string(),
            origin,
            packages,
        }
    }
}

/// Writes the layers on as many threads as there are cores; results in plan order.
fn write_layers(
    ctx: &LayerContext<'_>,
    plans: &[LayerPlan],
) -> Result<Vec<WrittenLayer>, ImageError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(plans.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<WrittenLayer, ImageError>>>> =
        Mutex::new((0..plans.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= plans.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = write_layer(ctx, &plans[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut results) = results.lock() {
                        results[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| ImageError::Invalid("a layer writer panicked".into()))?;
    let mut out = Vec::with_capacity(plans.len());
    let mut first_error = None;
    for r in results {
        match r {
            Some(Ok(w)) => out.push(w),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None if out.len() == plans.len() => Ok(out),
        None => Err(ImageError::Invalid("a layer writer panicked".into())),
    }
}

/// The sha256 of what passed through `w`, as an OCI digest.
fn digest_of<W>(w: &HashingWriter<W>) -> Result<Digest, ImageError> {
    Ok(Digest::try_from(format!("sha256:{}", w.hex()))?)
}

/// Reads exactly `remaining` bytes of a file (the size written in its tar header), remembering
/// whether a failure was on this side, so it is reported against the file and not the blob.
struct SourceReader<R> {
    inner: R,
    remaining: u64,
    failed: bool,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..max]) {
            Ok(0) => {
                self.failed = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            Ok(n) => n,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Distinguishes temporary blob files of concurrent writers in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_path(blobs: &Path) -> PathBuf {
    blobs.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A tar header with everything that would make it vary between machines fixed.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(LAYER_MTIME);
    h.set_size(size);
    h
}

/// Writes one layer: a temporary file in `blobs` written while hashed, then renamed to its
/// digest; or copies it from the layer cache.
fn write_layer(ctx: &LayerContext<'_>, plan: &LayerPlan) -> Result<WrittenLayer, ImageError> {
    let Some(cache) = ctx.cache else {
        return write_new_layer(ctx, plan);
    };
    let key = layer_key(ctx, plan)?;
    if let Some(layer) = cache.layer(&key, ctx.blobs) {
        return Ok(layer);
    }
    let layer = write_new_layer(ctx, plan)?;
    cache.keep_layer(&key, &layer, ctx.blobs);
    Ok(layer)
}

/// sha256 over everything a layer's bytes follow from: the format, where the prefix is in the
/// image, the compression, and each path's (and parent's) kind, mode, relocated symlink
/// target, and for files that embed the install path the digest of their rewritten content,
/// for other files size, inode and time (to the nanosecond). A file's inode and time stand for
/// its contents: installs link a package's files from the shared package cache, so another
/// environment's copy of the same file has the same ones.
fn layer_key(ctx: &LayerContext<'_>, plan: &LayerPlan) -> Result<String, ImageError> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(format!(
        "conda-store-image-layer/1\n{}\n{}\n{}\n",
        ctx.image_rel, ctx.level, ctx.keep_dir_modes
    ));
    if let Some(r) = ctx.relocation {
        h.update(&r.to);
    }
    h.update(b"\n");
    // The layer holds every path's parents too (as what they are on disk).
    let mut rels = BTreeSet::new();
    for p in &plan.paths {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            rels.insert(&p[..at + i]);
            at += i + 1;
        }
        rels.insert(p.as_str());
    }
    for rel in rels {
        let path = ctx.prefix.join(rel);
        let read_err = |source| ImageError::Read {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(read_err)?;
        h.update(rel.as_bytes());
        let ft = meta.file_type();
        let line = if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err)?;
            let target = match (ctx.relocation, target.to_str()) {
                (Some(r), Some(t)) => relocate_link(t, r).map_or(target, PathBuf::from),
                _ => target,
            };
            format!("\0l\0{}", target.display())
        } else if ft.is_file() {
            match ctx.relocation.zip(ctx.prefix_files.get(rel)) {
                // Each build installs somewhere else, so a file that embeds the install path is
                // a new copy every time: what the layer holds is its rewritten content.
                Some((r, mode)) => {
                    let data = std::fs::read(&path).map_err(read_err)?;
                    let digest = relocate(&data, r, *mode).map_or_else(
                        || "cannot be rewritten".to_string(),
                        |d| hex(&Sha256::digest(&d)),
                    );
                    format!("\0r\0{:o}\0{digest}", meta.mode() & 0o7777)
                }
                None => format!(
                    "\0f\0{:o}\0{}\0{}\0{}.{:09}",
                    meta.mode() & 0o7777,
                    meta.len(),
                    meta.ino(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                ),
            }
        } else {
            format!("\0d\0{:o}", meta.mode() & 0o7777)
        };
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    Ok(hex(&h.finalize()))
}

fn write_new_layer(ctx: &LayerContext<'_>, plan: &LayerPlan) -> Result<WrittenLayer, ImageError> {
    let tmp = tmp_path(ctx.blobs);
    let result = write_layer_to(ctx, plan, &tmp);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_layer_to(
    ctx: &LayerContext<'_>,
    plan: &LayerPlan,
    tmp: &Path,
) -> Result<WrittenLayer, ImageError> {
    let write_err = |source| ImageError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(write_err)?;
    let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let gz = GzBuilder::new()
        .operating_system(255)
        .write(compressed, Compression::new(ctx.level));
    let mut tar = tar::Builder::new(HashingWriter::new(gz));

    // Every entry with its parents, sorted so the archive does not depend on walk order; a
    // parent sorts before its children since it is their prefix.
    let mut entries = BTreeSet::new();
    let mut ancestor = String::new();
    for seg in ctx.image_rel.split('/').filter(|s| !s.is_empty()) {
        if !ancestor.is_empty() {
            ancestor.push('/');
        }
        ancestor.push_str(seg);
        entries.insert(ancestor.clone());
    }
    let in_image = |rel: &str| match ctx.image_rel {
        "" => rel.to_string(),
        at => format!("{at}/{rel}"),
    };
    for p in &plan.paths {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            entries.insert(in_image(&p[..at + i]));
            at += i + 1;
        }
        entries.insert(in_image(p));
    }

    for entry in &entries {
        let rel = match ctx.image_rel {
            "" => Some(entry.as_str()),
            at => entry.strip_prefix(at).and_then(|r| r.strip_prefix('/')),
        };
        let Some(rel) = rel else {
            // An ancestor of the image prefix (or the prefix itself).
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{entry}/"), io::empty())
                .map_err(write_err)?;
            continue;
        };
        let path = ctx.prefix.join(rel);
        let read_err = |source| ImageError::Read {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(read_err)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            // conda packages carry no directory modes (installers create them), so a fixed
            // mode keeps layers identical across installs.
            let mode = match ctx.keep_dir_modes {
                true => meta.permissions().mode() & 0o7777,
                false => 0o755,
            };
            let mut h = header(tar::EntryType::Directory, mode, 0);
            tar.append_data(&mut h, format!("{entry}/"), io::empty())
                .map_err(write_err)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err)?;
            let target = match (ctx.relocation, target.to_str()) {
                (Some(r), Some(t)) => relocate_link(t, r).map_or(target, PathBuf::from),
                _ => target,
            };
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut h, entry, &target).map_err(write_err)?;
        } else if ft.is_file() {
            let mode = meta.permissions().mode() & 0o7777;
            let rewrite = ctx
                .relocation
                .and_then(|r| ctx.prefix_files.get(rel).map(|m| (r, *m)));
            if rewrite.is_some() || is_pyc(rel) {
                // Transformed files are held in memory: prefix files are scripts and libraries,
                // .pyc files are small.
                let mut data = std::fs::read(&path).map_err(read_err)?;
                if let Some((r, m)) = rewrite {
                    data =
                        relocate(&data, r, m).ok_or_else(|| ImageError::BinaryPrefixTooLong {
                            path: path.clone(),
                            image_prefix: String::from_utf8_lossy(&r.to).into_owned(),
                        })?;
                }
                if is_pyc(rel) {
                    fix_pyc_mtime(&mut data);
                }
                let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
                tar.append_data(&mut h, entry, data.as_slice())
                    .map_err(write_err)?;
            } else {
                let f = File::open(&path).map_err(read_err)?;
                let mut reader = SourceReader {
                    inner: BufReader::with_capacity(1 << 16, f),
                    remaining: meta.len(),
                    failed: false,
                };
                let mut h = header(tar::EntryType::Regular, mode, meta.len());
                if let Err(source) = tar.append_data(&mut h, entry, &mut reader) {
                    return Err(if reader.failed {
                        ImageError::Read { path, source }
                    } else {
                        ImageError::Write {
                            path: tmp.to_path_buf(),
                            source,
                        }
                    });
                }
            }
        }
        // Sockets, FIFOs and devices have no place in an image layer; conda never installs them.
    }

    let uncompressed = tar.into_inner().map_err(write_err)?;
    let diff_id = digest_of(&uncompressed)?;
    let gz = uncompressed.inner;
    let mut compressed = gz.finish().map_err(write_err)?;
    compressed.flush().map_err(write_err)?;
    let digest = digest_of(&compressed)?;
    let size = compressed.len;
    let file = compressed
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    let dest = ctx.blobs.join(digest.digest());
    std::fs::rename(tmp, &dest).map_err(|source| ImageError::Write { path: dest, source })?;
    Ok(WrittenLayer {
        digest,
        diff_id,
        size,
        reused: false,
    })
}

fn is_pyc(rel: &str) -> bool {
    rel.ends_with(".pyc")
}

/// Sets the source mtime recorded in a timestamp-checked `.pyc` header to [`LAYER_MTIME`], the
/// mtime its `.py` gets in the layer, so Python keeps using it. Hash-checked `.pyc` files and
/// unknown formats are left alone.
fn fix_pyc_mtime(data: &mut [u8]) {
    if data.len() < 16 || data[2..4] != *b"\r\n" {
        return;
    }
    let magic = u16::from_le_bytes([data[0], data[1]]);
    let at = match magic {
        // Python 3.7+ (PEP 552): magic, flags, mtime, size; flags 0 means timestamp-checked.
        3390..=3999 if data[4..8] == [0, 0, 0, 0] => 8,
        // Python 3.3-3.6: magic, mtime, size.
        3230..=3389 => 4,
        _ => return,
    };
    // Python compares the low 32 bits.
    let mtime = (LAYER_MTIME & 0xffff_ffff) as u32;
    data[at..at + 4].copy_from_slice(&mtime.to_le_bytes());
}

/// The symlink target with the install prefix replaced, when it points into it.
fn relocate_link(target: &str, r: &Relocation) -> Option<String> {
    let from = std::str::from_utf8(&r.from).ok()?;
    let to = std::str::from_utf8(&r.to).ok()?;
    let rest = target.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{to}{rest}"))
}

/// Replaces the install prefix in a file's bytes, as conda does on install. `None` when a binary
/// file would need the replacement to be longer than the original.
fn relocate(data: &[u8], r: &Relocation, mode: FileMode) -> Option<Vec<u8>> {
    match mode {
        FileMode::Text => Some(
            crate::relocate::replace_text(data, &r.from, &r.to).unwrap_or_else(|| data.to_vec()),
        ),
        FileMode::Binary => {
            if r.to.len() > r.from.len() {
                return crate::relocate::find(data, &r.from, 0)
                    .is_none()
                    .then(|| data.to_vec());
            }
            Some(
                crate::relocate::replace_binary(data, &r.from, &r.to)
                    .unwrap_or_else(|| data.to_vec()),
            )
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with object keys sorted: oci-spec keeps labels and annotations in `HashMap`s, whose
/// order changes from run to run, and a digest must not.
fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

/// Writes a small blob (config, manifest); returns its digest and size.
fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(Digest, u64), ImageError> {
    let digest = Digest::try_from(format!("sha256:{}", hex(&Sha256::digest(bytes))))?;
    let tmp = tmp_path(blobs);
    std::fs::write(&tmp, bytes).map_err(|source| ImageError::Write {
        path: tmp.clone(),
        source,
    })?;
    let dest = blobs.join(digest.digest());
    std::fs::rename(&tmp, &dest).map_err(|source| ImageError::Write { path: dest, source })?;
    Ok((digest, bytes.len() as u64))
}

/// The execution settings: the base's under ours.
fn exec_config(
    image_prefix: &str,
    options: &ImageOptions,
    base: Option<&ImageConfiguration>,
) -> Result<Config, ImageError> {
    let mut config: Config = match base.and_then(|b| b.config().clone()) {
        Some(c) => c,
        None => ConfigBuilder::default().build()?,
    };
    let base_env = config.env().clone().unwrap_or_default();
    let base_path = base_env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut ours = BTreeMap::new();
    ours.insert(
        "PATH".to_string(),
        format!("{image_prefix}/bin:{base_path}"),
    );
    ours.insert("CONDA_PREFIX".to_string(), image_prefix.to_string());
    ours.insert("CONDA_DEFAULT_ENV".to_string(), options.name.clone());
    ours.extend(options.env.clone());
    // The base's variables keep their order; ours follow, replacing any of the same name.
    let mut env: Vec<String> = base_env
        .into_iter()
        .filter(|e| !ours.contains_key(e.split('=').next().unwrap_or_default()))
        .collect();
    env.extend(ours.into_iter().map(|(k, v)| format!("{k}={v}")));
    config.set_env(Some(env));

    let working_dir = options
        .working_dir
        .clone()
        .or_else(|| config.working_dir().clone())
        .unwrap_or_else(|| "/".to_string());
    config.set_working_dir(Some(working_dir));

    let mut labels = config.labels().clone().unwrap_or_default();
    labels.insert(
        "org.opencontainers.image.title".into(),
        options.name.clone(),
    );
    labels.insert(
        "org.opencontainers.image.created".into(),
        options.created.clone(),
    );
    labels.insert(
        "org.opencontainers.image.description".into(),
        format!("conda environment {} at {image_prefix}", options.name),
    );
    if let Some(id) = &options.build_id {
        labels.insert(BUILD_ID_LABEL.into(), id.clone());
    }
    labels.extend(options.labels.clone());
    config.set_labels(Some(labels));
    Ok(config)
}

/// How a manifest is named in a layout's `index.json`.
struct IndexEntry<'a> {
    tag: &'a str,
    architecture: &'a str,
    os: &'a str,
    /// The full reference containerd's importer names the image by, if any.
    reference: Option<&'a str>,
}

/// Adds the manifest to the layout's `index.json` under the tag (replacing an image of the same
/// tag), and writes `oci-layout`.
fn write_index(
    layout: &Path,
    entry: &IndexEntry<'_>,
    digest: &Digest,
    size: u64,
) -> Result<(), ImageError> {
    let index_path = layout.join("index.json");
    let mut manifests = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|e| ImageError::Output {
                path: index_path.clone(),
                reason: format!("not a valid OCI index: {e}"),
            })?
            .manifests()
            .clone(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ImageError::Read {
                path: index_path,
                source,
            });
        }
    };
    manifests.retain(|d| ref_name(d) != Some(entry.tag));
    let mut annotations = HashMap::from([(REF_NAME.to_string(), entry.tag.to_string())]);
    if let Some(reference) = entry.reference {
        annotations.insert(CONTAINERD_IMAGE_NAME.to_string(), reference.to_string());
    }
    manifests.push(
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(digest.clone())
            .size(size)
            .platform(
                PlatformBuilder::default()
                    .architecture(Arch::from(entry.architecture))
                    .os(Os::from(entry.os))
                    .build()?,
            )
            .annotations(annotations)
            .build()?,
    );
    // Sorted by tag so the file does not depend on the order images were added in.
    manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    // Written to a temporary file and renamed, so a reader never sees half an index.
    let tmp = layout.join(".index.json.tmp");
    std::fs::write(&tmp, canonical_json(&index)?).map_err(|source| ImageError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &index_path).map_err(|source| ImageError::Write {
        path: index_path,
        source,
    })?;
    let marker = layout.join("oci-layout");
    std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|source| {
        ImageError::Write {
            path: marker,
            source,
        }
    })
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// A base image read from its layout.
struct Base {
    layout: PathBuf,
    manifest: ImageManifest,
    config: ImageConfiguration,
}

fn blob_path(layout: &Path, digest: &Digest) -> Result<PathBuf, ImageError> {
    if digest.algorithm().as_ref() != "sha256" {
        return Err(ImageError::Base {
            path: layout.to_path_buf(),
            reason: format!("blob {digest} uses an unsupported digest algorithm"),
        });
    }
    Ok(layout.join("blobs").join("sha256").join(digest.digest()))
}

/// Reads a small blob of the base layout, checking its digest.
fn read_base_blob(layout: &Path, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(layout, desc.digest())?;
    let bytes = std::fs::read(&path).map_err(|e| ImageError::Base {
        path: path.clone(),
        reason: format!("cannot read blob: {e}"),
    })?;
    if hex(&Sha256::digest(&bytes)) != desc.digest().digest() {
        return Err(ImageError::Base {
            path,
            reason: "blob is corrupt: its content does not match its digest".into(),
        });
    }
    Ok(bytes)
}

fn parse_base<T: serde::de::DeserializeOwned>(
    path: PathBuf,
    bytes: &[u8],
    what: &str,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Base {
        path,
        reason: format!("not a valid OCI {what}: {e}"),
    })
}

fn load_base(base: &BaseImage, options: &ImageOptions) -> Result<Base, ImageError> {
    let layout = &base.layout;
    let marker = layout.join("oci-layout");
    if !marker.is_file() {
        return Err(ImageError::Base {
            path: layout.clone(),
            reason: "not an OCI image layout (no oci-layout file)".into(),
        });
    }
    let index_path = layout.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|e| ImageError::Base {
        path: index_path.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    let index: ImageIndex = parse_base(index_path.clone(), &bytes, "index")?;
    let mut desc = index
        .manifests()
        .iter()
        .find(|d| {
            ref_name(d) == Some(base.reference.as_str())
                || d.digest().as_ref() == base.reference.as_str()
        })
        .cloned()
        .ok_or_else(|| ImageError::Base {
            path: index_path.clone(),
            reason: format!(
                "no image {:?}; tags: {}",
                base.reference,
                index
                    .manifests()
                    .iter()
                    .filter_map(ref_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    if *desc.media_type() == MediaType::ImageIndex {
        // A multi-platform image: take the manifest of our platform.
        let path = blob_path(layout, desc.digest())?;
        let nested: ImageIndex =
            parse_base(path.clone(), &read_base_blob(layout, &desc)?, "index")?;
        desc = nested
            .manifests()
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.architecture().to_string() == options.architecture
                        && p.os().to_string() == options.os
                })
            })
            .cloned()
            .ok_or_else(|| ImageError::Base {
                path,
                reason: format!("no manifest for {}/{}", options.os, options.architecture),
            })?;
    }
    let manifest_path = blob_path(layout, desc.digest())?;
    let manifest: ImageManifest =
        parse_base(manifest_path, &read_base_blob(layout, &desc)?, "manifest")?;
    let config_path = blob_path(layout, manifest.config().digest())?;
    let config: ImageConfiguration = parse_base(
        config_path.clone(),
        &read_base_blob(layout, manifest.config())?,
        "image config",
    )?;
    if config.architecture().to_string() != options.architecture
        || config.os().to_string() != options.os
    {
        return Err(ImageError::Base {
            path: config_path,
            reason: format!(
                "the base is {}/{}, the image is {}/{}",
                config.os(),
                config.architecture(),
                options.os,
                options.architecture
            ),
        });
    }
    Ok(Base {
        layout: layout.clone(),
        manifest,
        config,
    })
}

/// Copies a base layer into the output layout, checking its digest on the way; when both
/// layouts are the same directory, only checks it.
fn copy_blob(layout: &Path, desc: &Descriptor, blobs: &Path) -> Result<(), ImageError> {
    let src = blob_path(layout, desc.digest())?;
    let dest = blobs.join(desc.digest().digest());
    let same = match (src.canonicalize(), dest.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let base_err = |reason: String| ImageError::Base {
        path: src.clone(),
        reason,
    };
    let mut input = File::open(&src).map_err(|e| base_err(format!("cannot read layer: {e}")))?;
    let tmp = tmp_path(blobs);
    let mut out = if same {
        HashingWriter::new(Sink::Discard)
    } else {
        let f = File::create(&tmp).map_err(|source| ImageError::Write {
            path: tmp.clone(),
            source,
        })?;
        HashingWriter::new(Sink::To(BufWriter::new(f)))
    };
    let copied = copy_checked(&mut input, &mut out).map_err(|(read_side, e)| {
        if read_side {
            base_err(format!("cannot read layer: {e}"))
        } else {
            ImageError::Write {
                path: tmp.clone(),
                source: e,
            }
        }
    });
    let check = copied.and_then(|()| {
        if digest_of(&out)?.digest() != desc.digest().digest() || out.len != desc.size() {
            return Err(base_err(
                "layer is corrupt: its content does not match its digest or size".into(),
            ));
        }
        if let Sink::To(w) = std::mem::replace(&mut out.inner, Sink::Discard) {
            w.into_inner()
                .map_err(|e| ImageError::Write {
                    path: tmp.clone(),
                    source: e.into_error(),
                })?
                .sync_all()
                .map_err(|source| ImageError::Write {
                    path: tmp.clone(),
                    source,
                })?;
            std::fs::rename(&tmp, &dest).map_err(|source| ImageError::Write {
                path: dest.clone(),
                source,
            })?;
        }
        Ok(())
    });
    if check.is_err() && !same {
        let _ = std::fs::remove_file(&tmp);
    }
    check
}

/// `io::copy`, telling read errors (`true`) from write errors.
fn copy_checked<R: Read, W: Write>(r: &mut R, w: &mut W) -> Result<(), (bool, io::Error)> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((true, e)),
        };
        w.write_all(&buf[..n]).map_err(|e| (false, e))?;
    }
    w.flush().map_err(|e| (false, e))
}

/// A writer that may discard (`Discard` only lets a [`HashWriter`] hash).
enum Sink<W> {
    Discard,
    To(W),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::To(w) => w.write(buf),
            Sink::Discard => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::To(w) => w.flush(),
            Sink::Discard => Ok(()),
        }
    }
}
