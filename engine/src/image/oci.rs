//! OCI metadata: canonical JSON blobs, the config's execution settings, the manifest and the
//! layout's index.

use super::*;

/// An image whose layers are written, to finish.
pub(super) struct NewImage<'a> {
    /// How the layout's index names it (and its platform).
    pub(super) entry: IndexEntry<'a>,
    /// RFC 3339 creation time.
    pub(super) created: &'a str,
    /// What runs and how (`Env`, `Entrypoint`, `User`, labels...).
    pub(super) config: Config,
    /// One entry per layer.
    pub(super) history: Vec<History>,
    /// The layers as the manifest lists them, in order.
    pub(super) descriptors: Vec<Descriptor>,
    /// The same layers as the summary reports them (their diff_ids go into the config).
    pub(super) layers: Vec<LayerSummary>,
}

/// Writes the config and the manifest of an image whose layers are written, and names it in
/// the layout's index.
pub(super) fn finish_image(
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
/// JSON with object keys sorted: oci-spec keeps labels and annotations in `HashMap`s, whose
/// order changes from run to run, and a digest must not.
pub(super) fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    pub(super) fn sort(v: serde_json::Value) -> serde_json::Value {
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
pub(super) fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(Digest, u64), ImageError> {
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
pub(super) fn exec_config(
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
pub(super) struct IndexEntry<'a> {
    pub(super) tag: &'a str,
    pub(super) architecture: &'a str,
    pub(super) os: &'a str,
    /// The full reference containerd's importer names the image by, if any.
    pub(super) reference: Option<&'a str>,
}

/// Adds the manifest to the layout's `index.json` under the tag (replacing an image of the same
/// tag), and writes `oci-layout`.
pub(super) fn write_index(
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

pub(super) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}
