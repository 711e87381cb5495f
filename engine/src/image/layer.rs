//! Writing a layer: reproducible tar entries, relocation of the install path, `.pyc` times,
//! gzip while hashed, and the layer cache's key.

use super::*;

/// Replacing the install path by the image path in files that embed it.
pub(super) struct Relocation {
    pub(super) from: Vec<u8>,
    pub(super) to: Vec<u8>,
}

/// What every layer writer shares.
pub(super) struct LayerContext<'a> {
    pub(super) prefix: &'a Path,
    pub(super) image_rel: &'a str,
    pub(super) blobs: &'a Path,
    pub(super) relocation: Option<&'a Relocation>,
    /// The files that embed the install prefix, by path relative to the prefix.
    pub(super) prefix_files: &'a HashMap<String, FileMode>,
    pub(super) level: u32,
    /// Keep directories' modes (a root filesystem's `/tmp` is 1777); conda prefixes carry none.
    pub(super) keep_dir_modes: bool,
    /// Kept layers to copy instead of writing.
    pub(super) cache: Option<&'a LayerCache>,
}

/// A layer blob written to the layout.
pub(super) struct WrittenLayer {
    pub(super) digest: Digest,
    pub(super) diff_id: Digest,
    pub(super) size: u64,
    /// Copied from the layer cache.
    pub(super) reused: bool,
}

impl WrittenLayer {
    pub(super) fn descriptor(&self) -> Result<Descriptor, ImageError> {
        Ok(DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(self.digest.clone())
            .size(self.size)
            .build()?)
    }

    pub(super) fn summary(&self, origin: LayerOrigin, packages: Vec<String>) -> LayerSummary {
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
pub(super) fn write_layers(
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
pub(super) fn digest_of<W>(w: &HashingWriter<W>) -> Result<Digest, ImageError> {
    Ok(Digest::try_from(format!("sha256:{}", w.hex()))?)
}

/// Reads exactly `remaining` bytes of a file (the size written in its tar header), remembering
/// whether a failure was on this side, so it is reported against the file and not the blob.
pub(super) struct SourceReader<R> {
    pub(super) inner: R,
    pub(super) remaining: u64,
    pub(super) failed: bool,
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
pub(super) static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn tmp_path(blobs: &Path) -> PathBuf {
    blobs.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A tar header with everything that would make it vary between machines fixed.
pub(super) fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
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
pub(super) fn write_layer(
    ctx: &LayerContext<'_>,
    plan: &LayerPlan,
) -> Result<WrittenLayer, ImageError> {
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
pub(super) fn layer_key(ctx: &LayerContext<'_>, plan: &LayerPlan) -> Result<String, ImageError> {
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

pub(super) fn write_new_layer(
    ctx: &LayerContext<'_>,
    plan: &LayerPlan,
) -> Result<WrittenLayer, ImageError> {
    let tmp = tmp_path(ctx.blobs);
    let result = write_layer_to(ctx, plan, &tmp);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(super) fn write_layer_to(
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

pub(super) fn is_pyc(rel: &str) -> bool {
    rel.ends_with(".pyc")
}

/// Sets the source mtime recorded in a timestamp-checked `.pyc` header to [`LAYER_MTIME`], the
/// mtime its `.py` gets in the layer, so Python keeps using it. Hash-checked `.pyc` files and
/// unknown formats are left alone.
pub(super) fn fix_pyc_mtime(data: &mut [u8]) {
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
pub(super) fn relocate_link(target: &str, r: &Relocation) -> Option<String> {
    let from = std::str::from_utf8(&r.from).ok()?;
    let to = std::str::from_utf8(&r.to).ok()?;
    let rest = target.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{to}{rest}"))
}

/// Replaces the install prefix in a file's bytes, as conda does on install. `None` when a binary
/// file would need the replacement to be longer than the original.
pub(super) fn relocate(data: &[u8], r: &Relocation, mode: FileMode) -> Option<Vec<u8>> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
