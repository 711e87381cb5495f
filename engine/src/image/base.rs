//! A base image read from its OCI layout, its blobs checked by digest.

use super::*;

/// A base image read from its layout.
pub(super) struct Base {
    pub(super) layout: PathBuf,
    pub(super) manifest: ImageManifest,
    pub(super) config: ImageConfiguration,
}

pub(super) fn blob_path(layout: &Path, digest: &Digest) -> Result<PathBuf, ImageError> {
    if digest.algorithm().as_ref() != "sha256" {
        return Err(ImageError::Base {
            path: layout.to_path_buf(),
            reason: format!("blob {digest} uses an unsupported digest algorithm"),
        });
    }
    Ok(layout.join("blobs").join("sha256").join(digest.digest()))
}

/// Reads a small blob of the base layout, checking its digest.
pub(super) fn read_base_blob(layout: &Path, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
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

pub(super) fn parse_base<T: serde::de::DeserializeOwned>(
    path: PathBuf,
    bytes: &[u8],
    what: &str,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Base {
        path,
        reason: format!("not a valid OCI {what}: {e}"),
    })
}

pub(super) fn load_base(base: &BaseImage, options: &ImageOptions) -> Result<Base, ImageError> {
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
pub(super) fn copy_blob(layout: &Path, desc: &Descriptor, blobs: &Path) -> Result<(), ImageError> {
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
pub(super) fn copy_checked<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
) -> Result<(), (bool, io::Error)> {
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
pub(super) enum Sink<W> {
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
