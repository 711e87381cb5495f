//! Images of plain directories: each directory given becomes one layer holding its whole tree
//! at `/`. This is how the project's own image (binaries, the libraries they link, CA
//! certificates, a non-root user) is made where no container daemon runs: the same layer writer
//! as environment images, so the same reproducibility (sorted entries, fixed owners and mtimes,
//! deterministic gzip), except that directory modes are kept (`/tmp` is 1777).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::image::{ConfigBuilder, HistoryBuilder};

use super::{
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_CREATED, ImageError, ImageSummary, IndexEntry, LayerContext,
    LayerOrigin, LayerPlan, NewImage, finish_image, write_layers,
};

/// How to build an image of plain directories; [`RootfsImageOptions::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsImageOptions {
    /// The tag in the layout's `index.json`.
    pub tag: String,
    /// The full reference (`host/repository:tag`) that `ctr images import` names the image by.
    pub reference: Option<String>,
    /// GOARCH-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// GOOS-style operating system (`linux`).
    pub os: String,
    /// The program run by default, with its first arguments.
    pub entrypoint: Vec<String>,
    /// Default arguments after the entrypoint.
    pub cmd: Vec<String>,
    /// `uid[:gid]` or a user name the image runs as.
    pub user: Option<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Labels of the image config.
    pub labels: BTreeMap<String, String>,
    /// The working directory.
    pub working_dir: String,
    /// RFC 3339 creation time of the image and its history entries.
    pub created: String,
    /// gzip level (0-9) of the layers.
    pub compression_level: u32,
}

impl RootfsImageOptions {
    /// The defaults: `amd64`/`linux`, working directory `/`, fixed creation time, gzip level
    /// [`DEFAULT_COMPRESSION_LEVEL`], nothing to run.
    pub fn new(tag: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            reference: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            user: None,
            env: Vec::new(),
            labels: BTreeMap::new(),
            working_dir: "/".into(),
            created: DEFAULT_CREATED.into(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
        }
    }
}

/// Builds an image whose layers are `dirs`, in order (later ones over earlier ones), into the
/// OCI layout directory `layout` (created if missing; its other images are kept).
pub fn build_rootfs_image(
    dirs: &[PathBuf],
    layout: &Path,
    options: &RootfsImageOptions,
) -> Result<ImageSummary, ImageError> {
    if dirs.is_empty() {
        return Err(ImageError::Invalid(
            "an image needs at least one layer".into(),
        ));
    }
    if options.tag.is_empty() {
        return Err(ImageError::Invalid("the tag must not be empty".into()));
    }
    if options.compression_level > 9 {
        return Err(ImageError::Invalid(format!(
            "compression level {} is above 9",
            options.compression_level
        )));
    }
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| ImageError::Write {
        path: blobs.clone(),
        source,
    })?;

    // One layer per directory, written side by side (gzip is the cost, one core each).
    let no_prefix_files = HashMap::new();
    let written: Vec<Result<_, ImageError>> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let (blobs, no_prefix_files) = (&blobs, &no_prefix_files);
                s.spawn(move || {
                    let plan = LayerPlan {
                        origin: LayerOrigin::Unowned,
                        packages: Vec::new(),
                        paths: tree(dir)?,
                    };
                    let ctx = LayerContext {
                        prefix: dir,
                        image_rel: "",
                        blobs,
                        relocation: None,
                        prefix_files: no_prefix_files,
                        level: options.compression_level,
                        keep_dir_modes: true,
                        cache: None,
                    };
                    write_layers(&ctx, std::slice::from_ref(&plan))?
                        .pop()
                        .ok_or_else(|| {
                            ImageError::Invalid("a layer writer returned nothing".into())
                        })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ImageError::Invalid("a layer writer panicked".into())))
            })
            .collect()
    });

    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut history = Vec::new();
    for (dir, written) in dirs.iter().zip(written) {
        let written = written?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        history.push(
            HistoryBuilder::default()
                .created(options.created.clone())
                .created_by(format!("conda-store: directory {name}"))
                .build()?,
        );
        descriptors.push(written.descriptor()?);
        layers.push(written.summary(LayerOrigin::Unowned, Vec::new()));
    }

    let mut config = ConfigBuilder::default()
        .env(
            options
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .working_dir(options.working_dir.clone())
        .labels(
            options
                .labels
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
        .build()?;
    if !options.entrypoint.is_empty() {
        config.set_entrypoint(Some(options.entrypoint.clone()));
    }
    if !options.cmd.is_empty() {
        config.set_cmd(Some(options.cmd.clone()));
    }
    config.set_user(options.user.clone());
    finish_image(
        layout,
        &blobs,
        NewImage {
            entry: IndexEntry {
                tag: &options.tag,
                architecture: &options.architecture,
                os: &options.os,
                reference: options.reference.as_deref(),
            },
            created: &options.created,
            config,
            history,
            descriptors,
            layers,
        },
    )
}

/// Every path below `dir` (directories included, so empty ones and their modes are kept),
/// relative, sorted.
fn tree(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut paths = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| ImageError::Read {
            path: e
                .path()
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
            source: e.into(),
        })?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| {
                ImageError::Invalid(format!("{} is not a UTF-8 path", entry.path().display()))
            })?;
        paths.push(rel.to_string());
    }
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rootfs(root: &Path) -> PathBuf {
        let dir = root.join("base");
        std::fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(dir.join("usr/local/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            dir.join("usr/local/bin/hello"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/local/bin", dir.join("bin")).unwrap();
        dir
    }

    fn entries(layout: &Path, digest: &str) -> Vec<(String, u32, tar::EntryType)> {
        let blob = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob).unwrap());
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn a_directory_becomes_a_layer_at_the_root_with_modes_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = rootfs(tmp.path());
        let layout = tmp.path().join("layout");
        let mut options = RootfsImageOptions::new("v1");
        options.reference = Some("localhost/test/hello:v1".into());
        options.entrypoint = vec!["/usr/local/bin/hello".into()];
        options.user = Some("65532:65532".into());
        options.env = vec![("PATH".into(), "/usr/local/bin".into())];
        let summary = build_rootfs_image(&[dir], &layout, &options).unwrap();
        assert_eq!(summary.layers.len(), 1);

        let listed = entries(&layout, &summary.layers[0].digest);
        let names: Vec<&str> = listed.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/hello"
            ]
        );
        let tmp_entry = listed.iter().find(|(p, _, _)| p == "tmp/").unwrap();
        assert_eq!(tmp_entry.1, 0o1777);
        let hello = listed
            .iter()
            .find(|(p, _, _)| p.ends_with("hello"))
            .unwrap();
        assert_eq!(hello.1, 0o755);
        assert_eq!(listed[0].2, tar::EntryType::Symlink);

        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(annotations[super::super::REF_NAME], "v1");
        assert_eq!(
            annotations[super::super::CONTAINERD_IMAGE_NAME],
            "localhost/test/hello:v1"
        );
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(summary.config_digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/hello");
        assert_eq!(config["config"]["Env"][0], "PATH=/usr/local/bin");
    }

    #[test]
    fn the_same_directories_give_the_same_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = rootfs(tmp.path());
        let a = build_rootfs_image(
            std::slice::from_ref(&dir),
            &tmp.path().join("a"),
            &RootfsImageOptions::new("t"),
        )
        .unwrap();
        let b = build_rootfs_image(&[dir], &tmp.path().join("b"), &RootfsImageOptions::new("t"))
            .unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
    }

    #[test]
    fn no_directories_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = build_rootfs_image(&[], tmp.path(), &RootfsImageOptions::new("t")).unwrap_err();
        assert!(err.to_string().contains("at least one layer"), "{err}");
    }
}
