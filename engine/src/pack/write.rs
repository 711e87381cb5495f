//! Compresses the planned segments in parallel and writes them out in archive order.
//!
//! Each worker takes the next segment, reads its files and compresses them into a file of its
//! own: a kept segment from the cache (checked, then copied as is), a new cache entry, or an
//! anonymous temporary file. The writer copies the finished files to the output in order. At
//! most [`AHEAD`] segments per worker are done or under way beyond the one the writer waits
//! for, so neither memory nor temporary disk grows with the prefix.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::{Condvar, Mutex, mpsc};

use super::cache::SegmentCache;
use super::plan::{Entry, Kind, Segment};
use super::{
    ACTIVATE_SCRIPT, ACTIVATE_SCRIPT_PATH, Compression, DEACTIVATE_SCRIPT, DEACTIVATE_SCRIPT_PATH,
    ExactReader, MANIFEST_PATH, PackError, UNPACK_SCRIPT, UNPACK_SCRIPT_PATH, base_header,
    entry_error,
};

/// A finished segment as a worker hands it over, by index.
type Done = (usize, Result<Ready, PackError>);

/// A compressed segment: the first `len` bytes of `file`, from its start.
struct Ready {
    file: File,
    len: u64,
    /// It came from the cache.
    reused: bool,
}

/// Segments per worker that may be finished ahead of the writer.
const AHEAD: usize = 2;

/// A segment with more content than this is compressed by all the threads at once (zstd's own
/// workers): alone it would otherwise hold one core while the others wait at the end.
const SHARED_BYTES: u64 = 64 << 20;

/// What the segments need besides themselves.
pub(super) struct Job<'a> {
    pub prefix_dir: &'a Path,
    pub compression: Compression,
    pub cache: Option<&'a SegmentCache>,
    /// After the last segment: the generated entries and the end of the archive.
    pub tail: Tail<'a>,
}

/// The generated entries, all with the prefix's newest mtime.
pub(super) struct Tail<'a> {
    pub manifest: &'a str,
    pub mtime: u64,
    /// The prefix has no `bin` directory for the script: add one.
    pub add_bin: bool,
}

impl Job<'_> {
    fn threads(&self) -> usize {
        match self.compression {
            Compression::Zstd { threads, .. } => threads.max(1) as usize,
            Compression::Gzip { .. } => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

struct Window {
    /// The next segment a worker takes.
    next: usize,
    /// Segments the writer has copied out.
    written: usize,
    stop: bool,
}

/// Writes every segment, then the tail, to `out`; returns how many segments came from the cache.
pub(super) fn write_segments<W: Write>(
    job: &Job,
    segments: &[Segment],
    out: &mut W,
) -> Result<u64, PackError> {
    let workers = job.threads().min(segments.len()).max(1);
    let window = Mutex::new(Window {
        next: 0,
        written: 0,
        stop: false,
    });
    let moved = Condvar::new();
    let (tx, rx) = mpsc::channel();
    let reused = std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (window, moved) = (&window, &moved);
            scope.spawn(move || {
                loop {
                    let i = {
                        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
                        while !w.stop
                            && w.next < segments.len()
                            && w.next >= w.written + workers * AHEAD
                        {
                            w = moved.wait(w).unwrap_or_else(|e| e.into_inner());
                        }
                        if w.stop || w.next >= segments.len() {
                            return;
                        }
                        w.next += 1;
                        w.next - 1
                    };
                    let done = produce(job, &segments[i]);
                    let failed = done.is_err();
                    if tx.send((i, done)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let result = copy_in_order(segments.len(), &rx, out, &window, &moved);
        if result.is_err() {
            window.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            moved.notify_all();
        }
        result
    })?;
    let tail_err = |source| PackError::Write {
        entry: "the generated entries".into(),
        source,
    };
    compress(job, &[], Some(&job.tail), &mut *out, None).map_err(|e| match e {
        PackError::Write { source, .. } => tail_err(source),
        e => e,
    })?;
    Ok(reused)
}

fn copy_in_order<W: Write>(
    count: usize,
    rx: &mpsc::Receiver<Done>,
    out: &mut W,
    window: &Mutex<Window>,
    moved: &Condvar,
) -> Result<u64, PackError> {
    let mut pending = BTreeMap::new();
    let (mut next, mut reused) = (0, 0);
    for (i, done) in rx {
        pending.insert(i, done?);
        while let Some(ready) = pending.remove(&next) {
            let copied = io::copy(&mut (&ready.file).take(ready.len), out);
            let err = |source| PackError::Write {
                entry: format!("segment {} of {count}", next + 1),
                source,
            };
            if copied.map_err(err)? != ready.len {
                return Err(err(io::ErrorKind::UnexpectedEof.into()));
            }
            reused += u64::from(ready.reused);
            next += 1;
            window.lock().unwrap_or_else(|e| e.into_inner()).written = next;
            moved.notify_all();
        }
    }
    // Workers only stop early after sending an error, which returned above.
    debug_assert_eq!(next, count);
    Ok(reused)
}

/// The compressed segment, from the cache when it holds it.
fn produce(job: &Job, segment: &Segment) -> Result<Ready, PackError> {
    let threads = (segment.bytes > SHARED_BYTES).then(|| job.threads() as u32);
    if let (Some(cache), Some(key)) = (job.cache, &segment.key) {
        if let Some((file, len)) = cache.segment(key, job.compression) {
            return Ok(Ready {
                file,
                len,
                reused: true,
            });
        }
        if let Ok(mut pending) = cache.segment_temp() {
            match compress(job, &segment.entries, None, &mut pending, threads) {
                Ok(()) => {
                    if let Ok((file, len)) = cache.keep_segment(key, job.compression, pending) {
                        return Ok(Ready {
                            file,
                            len,
                            reused: false,
                        });
                    }
                }
                // The cache's volume failed (full, say): the archive need not.
                Err(PackError::Write { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let scratch_err = |source| PackError::Write {
        entry: "a temporary segment file".into(),
        source,
    };
    let mut file = tempfile::tempfile().map_err(scratch_err)?;
    compress(job, &segment.entries, None, &mut file, threads)?;
    let len = file.stream_position().map_err(scratch_err)?;
    file.rewind().map_err(scratch_err)?;
    Ok(Ready {
        file,
        len,
        reused: false,
    })
}

/// Compresses the tar entries of `entries` (then the tail's, and the end of the archive, when
/// given) into `out` as one zstd frame or gzip member; zstd in the calling thread, or with
/// `threads` workers.
fn compress<W: Write>(
    job: &Job,
    entries: &[Entry],
    tail: Option<&Tail>,
    out: W,
    threads: Option<u32>,
) -> Result<(), PackError> {
    let err = |entry: &str| {
        let entry = entry.to_string();
        move |source| PackError::Write { entry, source }
    };
    let out = io::BufWriter::with_capacity(256 << 10, out);
    let mut out = match job.compression {
        Compression::Zstd { level, .. } => {
            let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(err("start"))?;
            enc.include_checksum(true).map_err(err("zstd settings"))?;
            // Worker mode (for large segments) even with one worker: its output does not
            // depend on the count, so the archive does not depend on the machine.
            if let Some(threads) = threads {
                enc.multithread(threads.max(1))
                    .map_err(err("zstd settings"))?;
            }
            let enc = tar_entries(buffered(enc), job.prefix_dir, entries, tail)?;
            let enc = enc.into_inner().map_err(|e| err("end")(e.into_error()))?;
            enc.finish().map_err(err("end"))?
        }
        Compression::Gzip { level } => {
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            let enc = tar_entries(buffered(enc), job.prefix_dir, entries, tail)?;
            let enc = enc.into_inner().map_err(|e| err("end")(e.into_error()))?;
            enc.finish().map_err(err("end"))?
        }
    };
    out.flush().map_err(err("end"))
}

/// The tar stream reaches the compressor in large writes: tar writes a 512-byte header and a few
/// kilobytes per file, and each compressor call (a synchronisation point with zstd's worker
/// threads) costs more than the copy into this buffer.
fn buffered<W: Write>(inner: W) -> io::BufWriter<W> {
    io::BufWriter::with_capacity(1 << 20, inner)
}

/// tar's builder always ends with the two zero blocks that mark the end of an archive; every
/// segment but the last must not, so once cut this drops what is written.
struct Cut<W> {
    inner: W,
    cut: bool,
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut {
            Ok(buf.len())
        } else {
            self.inner.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the tar entries into `w`, returning it.
fn tar_entries<W: Write>(
    w: W,
    prefix_dir: &Path,
    entries: &[Entry],
    tail: Option<&Tail>,
) -> Result<W, PackError> {
    let mut tar = tar::Builder::new(Cut {
        inner: w,
        cut: false,
    });
    for e in entries {
        let rel = &e.rel;
        let mut header = base_header(e.mode, e.mtime);
        let appended = match &e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                // The trailing slash marks directories, as GNU tar writes them.
                tar.append_data(&mut header, rel.join(""), io::empty())
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, rel, target)
            }
            Kind::File(size) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let path = prefix_dir.join(rel);
                let file = File::open(&path).map_err(|source| PackError::Io { path, source })?;
                let data = ExactReader {
                    inner: file,
                    remaining: *size,
                };
                tar.append_data(&mut header, rel, data)
            }
        };
        appended.map_err(|e| entry_error(prefix_dir, rel, e))?;
    }
    match tail {
        Some(tail) => {
            let mut generated = |path: &str, mode, data: &[u8]| {
                let mut header = base_header(mode, tail.mtime);
                if data.is_empty() && path.ends_with('/') {
                    header.set_entry_type(tar::EntryType::Directory);
                }
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path, data)
                    .map_err(|source| PackError::Write {
                        entry: path.to_string(),
                        source,
                    })
            };
            if tail.add_bin {
                generated("bin/", 0o755, b"")?;
            }
            generated(UNPACK_SCRIPT_PATH, 0o755, UNPACK_SCRIPT.as_bytes())?;
            generated(ACTIVATE_SCRIPT_PATH, 0o644, ACTIVATE_SCRIPT.as_bytes())?;
            generated(DEACTIVATE_SCRIPT_PATH, 0o644, DEACTIVATE_SCRIPT.as_bytes())?;
            generated(MANIFEST_PATH, 0o644, tail.manifest.as_bytes())?;
        }
        None => tar.get_mut().cut = true,
    }
    let cut = tar.into_inner().map_err(|source| PackError::Write {
        entry: "end of the tar stream".into(),
        source,
    })?;
    Ok(cut.inner)
}
