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

mod base;
mod cache;
mod layer;
mod oci;
mod plan;
mod rootfs;

use base::*;
pub use cache::LayerCache;
use layer::*;
use oci::*;
use plan::*;
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
