//! Relocatable archives of installed prefixes (conda-pack's contract).
//!
//! [`pack`] streams an installed prefix into a tar archive compressed with zstd (`.tar.zst`) or
//! gzip (`.tar.gz`). Extract it anywhere and run `bin/conda-unpack` (or call [`unpack`]): every
//! file that embeds the prefix path it was installed to then names the new location instead.
//!
//! # The archive
//!
//! - Every directory, regular file and symlink under the prefix, paths relative to it (no
//!   leading `./`), in a deterministic order: the directories first (a depth-first walk with
//!   each directory's entries sorted by name bytes), then package by package (sorted by name)
//!   the files that package alone installed and that do not embed the prefix, by path, then
//!   everything else in walk order. Packing the same prefix twice gives the same bytes, with
//!   any thread count and with or without a segment cache.
//! - The compressed stream is a series of segments, each one zstd frame or gzip member (one
//!   valid `.tar.zst` / `.tar.gz` as RFC 8878 and RFC 1952 define them: `tar`, `zstd`,
//!   `gzip`, Python's `tarfile` read it whole; Rust's flate2 needs `MultiGzDecoder`). A
//!   package's files are cut into segments of up to 16 MiB of content. Segments are compressed
//!   in parallel, and with [`pack_with_cache`] a package's segments are kept in a
//!   [`SegmentCache`] and copied into the next archive holding the same files (every
//!   environment installed from the same package cache links the same files) instead of
//!   being compressed again.
//! - Headers: GNU format (long names and link targets use GNU extensions), uid/gid 0 with no
//!   user or group names, permission bits kept, **mtime preserved** (not fixed): Python
//!   validates `.pyc` caches against their source's mtime, so resetting times would make every
//!   import recompile or ignore the caches. The generated entries below take the newest
//!   mtime of the prefix, so they are deterministic too.
//! - Symlinks are stored as symlinks, never followed. Relative targets must stay inside the
//!   prefix; absolute targets inside the install path are rewritten to relative ones (so they
//!   survive relocation). A symlink that points outside the prefix is refused with
//!   [`PackError::UnsafeSymlink`]: it would dangle, or silently point somewhere else, wherever
//!   the archive is extracted, and dropping it would make an environment that differs from the
//!   one that was built.
//! - Hard links inside the prefix are stored as separate files (tar's hard-link entries would
//!   make unpack's rewrites change both names); the compressor shares the duplicate bytes.
//! - Every file a `conda-meta` record lists must exist ([`PackError::MissingFile`]), as
//!   conda-pack requires: a damaged environment is refused rather than shipped.
//! - [`MANIFEST_PATH`] (`conda-meta/.conda-store-pack.manifest`): JSON naming the prefix the
//!   files embed and the files to rewrite with their mode, one file per line:
//!
//!   ```text
//!   {
//!     "format": "conda-store-pack/1",
//!     "prefix": "/opt/envs/tool",
//!     "files": [
//!       {"path": "bin/tool", "mode": "text"},
//!       {"path": "lib/libfoo.so", "mode": "binary"}
//!     ]
//!   }
//!   ```
//!
//!   The name does not end in `.json` on purpose: conda and [`crate::prefix::read_installed`]
//!   read every `conda-meta/*.json` as a package record. The one-entry-per-line layout is part
//!   of the format because the unpack script reads it with a few regular expressions.
//! - [`UNPACK_SCRIPT_PATH`] (`bin/conda-unpack`, mode 0755): a POSIX sh script running perl
//!   (perl-base is essential on Debian and Ubuntu). It finds the prefix from its own location.
//!
//! - [`ACTIVATE_SCRIPT_PATH`] and [`DEACTIVATE_SCRIPT_PATH`] (`bin/activate`, `bin/deactivate`):
//!   conda-pack's activation scripts, sourced from bash or zsh; they set `PATH` and
//!   `CONDA_PREFIX` and source the environment's `etc/conda/{activate,deactivate}.d/*.sh`.
//!   `conda-store run` extracts the archive, runs `bin/conda-unpack`, then sources
//!   `bin/activate` before the command.
//!
//! Any of these generated entries already in the prefix (a prefix packed before) is replaced.
//!
//! # Unpacking
//!
//! The script and [`unpack`] do the same thing: text files get every occurrence of the old
//! prefix replaced (any length); binary files get conda's C-string replacement (each
//! NUL-terminated string holding the prefix is rewritten and NUL-padded, so the file keeps its
//! length and the string its terminator), which needs a new prefix no longer than the old one.
//! That is checked for every binary file before anything is written, so a failure leaves the
//! directory untouched. Files are replaced through a temporary file and a rename (read-only
//! files such as perl's `Config.pm` are common), keeping their mode and mtime. Finally the
//! manifest records the new location: running unpack again does nothing, and a directory moved
//! later is relocated by running it once more.

mod cache;
mod plan;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use cache::SegmentCache;

use crate::hashing::HashingWriter;
use crate::prefix::{FileMode, InstalledPackage, PrefixError, read_installed};
use crate::relocate::{find_c_string, fix_shebang, replace_binary, replace_text};

/// Where the manifest lives in the archive, relative to the prefix.
pub const MANIFEST_PATH: &str = "conda-meta/.conda-store-pack.manifest";

/// Where the unpack script lives in the archive, relative to the prefix.
pub const UNPACK_SCRIPT_PATH: &str = "bin/conda-unpack";

/// Where the activation script lives in the archive, relative to the prefix.
pub const ACTIVATE_SCRIPT_PATH: &str = "bin/activate";

/// Where the deactivation script lives in the archive, relative to the prefix.
pub const DEACTIVATE_SCRIPT_PATH: &str = "bin/deactivate";

/// Every entry pack writes itself rather than taking from the prefix (one a prefix already
/// holds, from an earlier pack or a package, is replaced).
pub(crate) const GENERATED: [&str; 4] = [
    MANIFEST_PATH,
    UNPACK_SCRIPT_PATH,
    ACTIVATE_SCRIPT_PATH,
    DEACTIVATE_SCRIPT_PATH,
];

fn is_generated(rel: &Path) -> bool {
    GENERATED.iter().any(|g| Path::new(g) == rel)
}

/// `bin/activate`, sourced (`. env/bin/activate [env]`) from bash or zsh, as conda-pack's is: it puts the environment first on `PATH`, sets `CONDA_PREFIX`, and sources
/// the environment's `etc/conda/activate.d/*.sh` scripts (packages set variables there).
/// The environment is the argument when given, else found from the script's own location.
/// (dash neither tells a sourced script where it is nor passes it arguments: it is refused.)
const ACTIVATE_SCRIPT: &str = r##"# bin/activate, written by conda-store's pack. Source it to use this environment:
#     . /path/to/env/bin/activate [/path/to/env]
# Run bin/conda-unpack once after extracting the archive, before activating.
_conda_store_activate() {
    _csa_env=${1:-}
    if [ -z "$_csa_env" ]; then
        if [ -n "${BASH_VERSION:-}" ]; then
            eval '_csa_env=${BASH_SOURCE[0]}'
        elif [ -n "${ZSH_VERSION:-}" ]; then
            eval '_csa_env=${(%):-%x}'
        else
            echo "activate: this shell does not tell a sourced script where it is; source it from bash or zsh" >&2
            return 1
        fi
        case "$_csa_env" in
        */*) _csa_env=${_csa_env%/*}/.. ;;
        *) _csa_env=.. ;;
        esac
    fi
    _csa_env=$(CDPATH='' cd -- "$_csa_env" && pwd) || return 1
    if [ ! -d "$_csa_env/conda-meta" ]; then
        echo "activate: $_csa_env is not a conda environment (no conda-meta)" >&2
        return 1
    fi
    if [ -n "${CONDA_PREFIX:-}" ]; then
        [ "$CONDA_PREFIX" = "$_csa_env" ] && return 0
        if [ -f "$CONDA_PREFIX/bin/deactivate" ]; then
            . "$CONDA_PREFIX/bin/deactivate"
        fi
    fi
    _CONDA_STORE_OLD_PATH=$PATH
    _CONDA_STORE_OLD_PS1=${PS1:-}
    export CONDA_PREFIX="$_csa_env"
    export CONDA_DEFAULT_ENV="$_csa_env"
    export PATH="$_csa_env/bin:$PATH"
    PS1="(${_csa_env##*/}) ${PS1:-}"
    hash -r 2>/dev/null || true
    if [ -d "$_csa_env/etc/conda/activate.d" ]; then
        for _csa_script in "$_csa_env"/etc/conda/activate.d/*.sh; do
            if [ -f "$_csa_script" ]; then
                . "$_csa_script"
            fi
        done
    fi
    unset _csa_env _csa_script
    return 0
}
_conda_store_activate "$@"
"##;

/// `bin/deactivate`, sourced: sources the environment's `etc/conda/deactivate.d/*.sh` scripts,
/// then puts back the `PATH` and prompt that activation replaced.
const DEACTIVATE_SCRIPT: &str = r##"# bin/deactivate, written by conda-store's pack. Source it to leave the environment
# that bin/activate entered:   . "$CONDA_PREFIX/bin/deactivate"
_conda_store_deactivate() {
    if [ -z "${CONDA_PREFIX:-}" ]; then
        return 0
    fi
    if [ -d "$CONDA_PREFIX/etc/conda/deactivate.d" ]; then
        for _csd_script in "$CONDA_PREFIX"/etc/conda/deactivate.d/*.sh; do
            if [ -f "$_csd_script" ]; then
                . "$_csd_script"
            fi
        done
    fi
    if [ -n "${_CONDA_STORE_OLD_PATH+set}" ]; then
        export PATH="$_CONDA_STORE_OLD_PATH"
        PS1=${_CONDA_STORE_OLD_PS1:-}
    fi
    unset CONDA_PREFIX CONDA_DEFAULT_ENV _CONDA_STORE_OLD_PATH _CONDA_STORE_OLD_PS1 _csd_script
    hash -r 2>/dev/null || true
    return 0
}
_conda_store_deactivate
"##;

/// The manifest's `format` value; bumped when the layout changes.
const MANIFEST_FORMAT: &str = "conda-store-pack/1";

/// The `bin/conda-unpack` script. Keep it in step with [`unpack`] and with [`manifest_text`]
/// (it parses that layout line by line: perl-base has no JSON module).
const UNPACK_SCRIPT: &str = r##"#!/bin/sh
# conda-unpack, written by conda-store's pack. Run it once after extracting the archive, from
# any directory: in every file listed in conda-meta/.conda-store-pack.manifest it replaces the
# prefix path the environment was installed to with the directory it now lives in, then records
# that directory in the manifest (running it again does nothing; after moving the directory, run
# it again). Binary files can only take a path no longer than the old one.
set -eu
case "$0" in
*/*) bin_dir=${0%/*} ;;
*) bin_dir=. ;;
esac
# The logical path (symlinks not resolved): the location as the user named it.
prefix=$(CDPATH='' cd -- "$bin_dir/.." && pwd) || {
    echo "conda-unpack: cannot find the environment directory from $0" >&2
    exit 1
}
if ! command -v perl >/dev/null 2>&1; then
    echo "conda-unpack: perl is needed and was not found" >&2
    exit 1
fi
exec perl - "$prefix" <<'PERL'
use strict;
use warnings;

my $new = $ARGV[0];
my $manifest = "$new/conda-meta/.conda-store-pack.manifest";

sub fail { print STDERR "conda-unpack: ", @_, "\n"; exit 1 }

sub slurp {
    my ($path) = @_;
    open(my $fh, '<:raw', $path) or fail("cannot read $path: $!");
    local $/;
    my $data = <$fh>;
    close($fh);
    return defined $data ? $data : '';
}

# Replaces $path by $data through a rename, keeping mode and times (.pyc checks use mtimes).
sub spew {
    my ($path, $data) = @_;
    my @st = stat($path) or fail("cannot stat $path: $!");
    my $tmp = "$path.conda-unpack.tmp";
    open(my $fh, '>:raw', $tmp) or fail("cannot write $tmp: $!");
    (print {$fh} $data) && close($fh) or fail("cannot write $tmp: $!");
    chmod($st[2] & 07777, $tmp) or fail("cannot set the mode of $tmp: $!");
    utime($st[8], $st[9], $tmp) or fail("cannot set the times of $tmp: $!");
    rename($tmp, $path) or fail("cannot replace $path: $!");
}

my $str = qr/"((?:[^"\\]|\\.)*)"/;
sub unquote { my ($s) = @_; $s =~ s/\\(.)/$1/g; return $s }

my ($format, $old, @files) = ('', undef);
for my $line (split /\n/, slurp($manifest)) {
    if ($line =~ /^\s*"format": $str/) { $format = unquote($1) }
    elsif ($line =~ /^\s*"prefix": $str/) { $old = unquote($1) }
    elsif ($line =~ /^\s*\{"path": $str, "mode": "(text|binary)"\}/) {
        push @files, [unquote($1), $2];
    }
}
$format eq 'conda-store-pack/1' or fail("$manifest: unknown format '$format'");
defined $old or fail("$manifest: no prefix");
exit 0 if $old eq $new;
$new =~ /[\x00-\x1f\x7f]/ and fail("the path $new contains control characters");

my $pad = length($old) - length($new);
my $cstr = qr/\Q$old\E[^\0]*\0/;
if ($pad < 0) {
    for my $f (grep { $_->[1] eq 'binary' } @files) {
        slurp("$new/$f->[0]") =~ $cstr and fail(
            "$f->[0] embeds the old prefix $old (", length($old), " bytes) in a binary ",
            "string; the new location $new (", length($new), " bytes) does not fit. Extract ",
            "the archive to a path of at most ", length($old), " bytes. Nothing was changed.");
    }
}

# conda's binary replacement: rewrite the whole C string, then pad with NULs to its length.
sub cfix {
    my ($s) = @_;
    my $k = () = $s =~ /\Q$old\E/g;
    $s =~ s/\Q$old\E/$new/g;
    return $s . ("\0" x ($k * $pad));
}

# conda's fix for a shebang the new prefix broke (a space, or longer than the kernel reads):
# `#!/usr/bin/env <program> <arguments>`.
sub shebang {
    my ($data) = @_;
    return $data unless $data =~ /\A#!([^\n]*)/;
    my $line = $1;
    return $data unless substr($line, 0, length($new)) eq $new;
    return $data unless $new =~ / / || length($line) + 2 > 127;
    my ($exe, $args) = substr($line, length($new)) =~ /^(\S*)(.*)$/;
    (my $program = $exe) =~ s{.*/}{};
    substr($data, 2, length($line)) = "/usr/bin/env $program$args";
    return $data;
}

for my $f (@files) {
    my ($rel, $mode) = @$f;
    my $data = slurp("$new/$rel");
    my $n = $mode eq 'text' ? ($data =~ s/\Q$old\E/$new/g) : ($data =~ s/($cstr)/cfix($1)/ge);
    $data = shebang($data) if $n && $mode eq 'text';
    spew("$new/$rel", $data) if $n;
}

(my $esc = $new) =~ s/(["\\])/\\$1/g;
my $text = slurp($manifest);
$text =~ s/^(\s*"prefix": )$str/$1"$esc"/m or fail("$manifest: cannot record the new prefix");
spew($manifest, $text);
PERL
"##;

/// Packing or unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The directory is not an installed prefix.
    #[error("{path} is not a conda prefix: it has no conda-meta directory")]
    NotAPrefix {
        /// The directory given.
        path: PathBuf,
    },
    /// The prefix's conda-meta records could not be read.
    #[error(transparent)]
    Records(#[from] PrefixError),
    /// A prefix path (the embedded one, or the unpack location) cannot be used.
    #[error("invalid prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The path.
        prefix: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing the archive failed (the output, or the compressor).
    #[error("writing the archive (at {entry}): {source}")]
    Write {
        /// The archive entry being written, or a description of the step.
        entry: String,
        /// The cause.
        source: io::Error,
    },
    /// A file a conda-meta record lists is not in the prefix.
    #[error("{path} is listed by conda-meta/{record} but missing from the prefix")]
    MissingFile {
        /// The file, relative to the prefix.
        path: String,
        /// The record listing it.
        record: String,
    },
    /// A symlink points outside the prefix, so it cannot be relocated.
    #[error(
        "symlink {path} points outside the prefix (to {target}); it cannot be relocated. \
         Replace it by a copy or a link inside the prefix"
    )]
    UnsafeSymlink {
        /// The symlink, relative to the prefix.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// An entry is neither a directory, a regular file nor a symlink, or cannot be archived.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The entry, relative to the prefix.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The manifest is missing: the directory was not made by [`pack`].
    #[error("{path} is missing: this directory was not extracted from a conda-store pack")]
    NoManifest {
        /// Where the manifest was expected.
        path: PathBuf,
    },
    /// The manifest is not valid.
    #[error("the manifest {path} is invalid: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A binary file embeds the old prefix and the new one is longer, so it cannot fit.
    #[error(
        "{path} embeds the old prefix {old} ({} bytes) in a binary string; the new location \
         {new} ({} bytes) does not fit. Extract the archive to a path of at most {} bytes. \
         Nothing was changed",
        old.len(),
        new.len(),
        old.len()
    )]
    PrefixTooLong {
        /// The binary file, relative to the prefix.
        path: String,
        /// The prefix the files embed.
        old: String,
        /// The location unpack was asked to use.
        new: String,
    },
}

/// How the tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (`.tar.zst`), the default.
    Zstd {
        /// Compression level (1..=22; 3 is zstd's default).
        level: i32,
        /// Threads compressing at once (0 counts as 1). The archive's bytes do not depend on it.
        threads: u32,
    },
    /// gzip (`.tar.gz`), for tools without zstd. Compressed by one thread per core.
    Gzip {
        /// Compression level (0..=9).
        level: u32,
    },
}

impl Compression {
    /// The usual file extension, without the leading dot.
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "tar.zst",
            Compression::Gzip { .. } => "tar.gz",
        }
    }

    /// The format and level, which decide the bytes (the thread count does not).
    fn tag(&self) -> String {
        match self {
            Compression::Zstd { level, .. } => format!("zstd-{level}"),
            Compression::Gzip { level } => format!("gzip-{level}"),
        }
    }
}

impl Default for Compression {
    /// zstd level 3 with one worker per available core.
    fn default() -> Self {
        let threads =
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
        Compression::Zstd { level: 3, threads }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackSummary {
    /// Regular files archived from the prefix (the generated script and manifest excluded).
    pub files: u64,
    /// Directories archived.
    pub dirs: u64,
    /// Symlinks archived.
    pub symlinks: u64,
    /// Bytes of file content archived, uncompressed.
    pub bytes_in: u64,
    /// Bytes of compressed archive written.
    pub bytes_out: u64,
    /// sha256 of the archive written, lowercase hex.
    pub sha256: String,
    /// Files the manifest lists for prefix replacement.
    pub prefix_files: u64,
    /// Separately compressed pieces of the archive (see the module documentation).
    pub segments: u64,
    /// Of these, the ones copied from the segment cache instead of compressed.
    pub reused_segments: u64,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackSummary {
    /// The prefix the files embedded.
    pub old_prefix: String,
    /// The location they embed now.
    pub new_prefix: String,
    /// Files that held the old prefix and were rewritten.
    pub rewritten: u64,
    /// Listed files that did not hold it (or everything, when the prefix was already right).
    pub unchanged: u64,
}

/// Packs the installed prefix in `prefix_dir`, whose files embed `embedded_prefix` (the
/// absolute path it was installed to; normally `prefix_dir` itself), into a tar archive
/// written to `out` as it is produced. See the module documentation for the archive's
/// contents; [`pack_with_cache`] reuses segments of earlier packs.
///
/// `out` gets the compressed bytes only; wrap a `File` in a `BufWriter` if you like, it is
/// flushed at the end. Memory holds the metadata of each path (not its contents) and a few
/// buffers per thread; compressed segments wait for their turn in temporary files (at most
/// two per thread).
pub fn pack(
    prefix_dir: &Path,
    embedded_prefix: &str,
    compression: Compression,
    out: impl Write,
) -> Result<PackSummary, PackError> {
    pack_with_cache(prefix_dir, embedded_prefix, compression, None, out)
}

/// [`pack`], taking each package's compressed segments from `cache` when an earlier pack left
/// them there (any environment installed from the same package cache holds the same files),
/// and leaving new ones for later packs. The archive's bytes are the same with or without it.
pub fn pack_with_cache(
    prefix_dir: &Path,
    embedded_prefix: &str,
    compression: Compression,
    cache: Option<&SegmentCache>,
    out: impl Write,
) -> Result<PackSummary, PackError> {
    let embedded = check_prefix(embedded_prefix)?;
    if !prefix_dir.join("conda-meta").is_dir() {
        return Err(PackError::NotAPrefix {
            path: prefix_dir.to_path_buf(),
        });
    }
    if let Compression::Gzip { level } = compression
        && level > 9
    {
        return Err(PackError::Write {
            entry: "start".into(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is not in 0..=9"),
            ),
        });
    }
    let packages = read_installed(prefix_dir)?;
    let entries = plan::walk(prefix_dir, &embedded)?;
    let index = plan::index(&entries);
    let rewrite = files_to_rewrite(&packages, &entries, &index)?;
    let manifest = manifest_text(&embedded, &rewrite);

    let mut summary = PackSummary {
        prefix_files: rewrite.len() as u64,
        ..PackSummary::default()
    };
    let mut newest = 0;
    let mut has_bin = false;
    for e in &entries {
        newest = newest.max(e.mtime);
        match e.kind {
            plan::Kind::Dir => {
                summary.dirs += 1;
                has_bin |= e.rel == Path::new("bin");
            }
            plan::Kind::Symlink(_) => summary.symlinks += 1,
            plan::Kind::File(size) => {
                summary.files += 1;
                summary.bytes_in += size;
            }
        }
    }
    let segments = plan::plan(&entries, &index, &packages, &rewrite, &compression.tag());
    let job = write::Job {
        prefix_dir,
        compression,
        cache,
        tail: write::Tail {
            manifest: &manifest,
            mtime: newest,
            add_bin: !has_bin,
        },
    };
    let mut sink = HashingWriter::new(out);
    summary.reused_segments = write::write_segments(&job, &segments, &mut sink)?;
    summary.segments = segments.len() as u64 + 1;
    (summary.bytes_out, summary.sha256) = sink.finish().map_err(|source| PackError::Write {
        entry: "end".into(),
        source,
    })?;
    if let Some(cache) = cache {
        // Best effort: an unprunable cache only grows.
        let _ = cache.prune();
    }
    Ok(summary)
}

/// Rewrites the prefix in the files of the extracted archive in `dir` (what `bin/conda-unpack`
/// does; see the module documentation): they then embed `dir`'s absolute path.
///
/// Each listed file is read whole into memory while it is rewritten (one at a time): these are
/// scripts, configuration and shared libraries, not data.
pub fn unpack(dir: &Path) -> Result<UnpackSummary, PackError> {
    let new = new_location(dir)?;
    let manifest_path = dir.join(MANIFEST_PATH);
    let manifest = read_manifest(&manifest_path)?;
    let old = manifest.prefix;
    let total = manifest.files.len() as u64;
    let mut summary = UnpackSummary {
        old_prefix: old.clone(),
        new_prefix: new.clone(),
        rewritten: 0,
        unchanged: total,
    };
    if old == new {
        return Ok(summary);
    }
    let read = |rel: &str| {
        let path = dir.join(rel);
        fs::read(&path).map_err(|source| PackError::Io { path, source })
    };
    // Check every binary file before writing anything, so a failure changes nothing.
    if new.len() > old.len() {
        for f in manifest.files.iter().filter(|f| f.mode == FileMode::Binary) {
            if find_c_string(&read(&f.path)?, old.as_bytes(), 0).is_some() {
                return Err(PackError::PrefixTooLong {
                    path: f.path.clone(),
                    old,
                    new,
                });
            }
        }
    }
    for f in &manifest.files {
        let data = read(&f.path)?;
        let replaced = match f.mode {
            FileMode::Text => replace_text(&data, old.as_bytes(), new.as_bytes())
                .map(|d| fix_shebang(d, new.as_bytes())),
            FileMode::Binary => replace_binary(&data, old.as_bytes(), new.as_bytes()),
        };
        if let Some(replaced) = replaced {
            replace_file(&dir.join(&f.path), &replaced)?;
            summary.rewritten += 1;
        }
    }
    summary.unchanged = total - summary.rewritten;
    let files: Vec<(String, FileMode)> = manifest
        .files
        .into_iter()
        .map(|f| (f.path, f.mode))
        .collect();
    replace_file(&manifest_path, manifest_text(&new, &files).as_bytes())?;
    Ok(summary)
}

/// Checks the embedded prefix: absolute, not `/` (replacing every `/` would wreck every file),
/// storable in the manifest. Returns it without trailing slashes.
fn check_prefix(prefix: &str) -> Result<String, PackError> {
    let bad = |reason| PackError::InvalidPrefix {
        prefix: prefix.to_string(),
        reason,
    };
    if !prefix.starts_with('/') {
        return Err(bad("it must be an absolute path"));
    }
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("the root directory cannot be relocated"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    Ok(trimmed.to_string())
}

/// The absolute location unpack gives the files: `dir` made absolute without resolving
/// symlinks (as the script's `pwd` does), unless it has `..` components.
fn new_location(dir: &Path) -> Result<String, PackError> {
    let io_err = |source| PackError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut abs = std::path::absolute(dir).map_err(io_err)?;
    if abs.components().any(|c| c == Component::ParentDir) {
        abs = fs::canonicalize(dir).map_err(io_err)?;
    }
    // Collecting the components drops `.` and trailing slashes.
    let abs: PathBuf = abs.components().collect();
    let text = abs.to_str().ok_or_else(|| PackError::InvalidPrefix {
        prefix: abs.to_string_lossy().into_owned(),
        reason: "it is not valid UTF-8",
    })?;
    if text.chars().any(char::is_control) {
        return Err(PackError::InvalidPrefix {
            prefix: text.to_string(),
            reason: "it contains control characters",
        });
    }
    Ok(text.to_string())
}

/// The files that embed the prefix, by path, after checking that every file the records list
/// was walked (`entries`, by path in `index`). A path two packages list with different modes is treated as binary:
/// a binary replacement never changes a file's length, a text one would corrupt a real binary.
fn files_to_rewrite(
    packages: &[InstalledPackage],
    entries: &[plan::Entry],
    index: &plan::Index,
) -> Result<Vec<(String, FileMode)>, PackError> {
    let walked = |path: &str| index.get(Path::new(path)).map(|&i| &entries[i].kind);
    let mut rewrite = BTreeMap::new();
    for pkg in packages {
        for file in &pkg.files {
            let path = Path::new(file.as_str());
            if walked(file).is_none() && !is_generated(path) {
                return Err(PackError::MissingFile {
                    path: file.clone(),
                    record: pkg.record.clone(),
                });
            }
        }
        for pf in &pkg.prefix_files {
            match walked(&pf.path) {
                // A symlink's target is rewritten when it is listed itself.
                Some(plan::Kind::Symlink(_)) => continue,
                Some(plan::Kind::File(_)) => {}
                _ => {
                    return Err(PackError::Unsupported {
                        path: pf.path.clone().into(),
                        reason: "conda-meta says it embeds the prefix, but it is not a file",
                    });
                }
            }
            if pf.path.chars().any(char::is_control) {
                return Err(PackError::Unsupported {
                    path: pf.path.clone().into(),
                    reason: "a file embedding the prefix has control characters in its name",
                });
            }
            let mode = rewrite.entry(pf.path.clone()).or_insert(pf.mode);
            if pf.mode == FileMode::Binary {
                *mode = FileMode::Binary;
            }
        }
    }
    Ok(rewrite.into_iter().collect())
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was being archived",
    )
}

/// A header with the fields every entry shares: owned by root, no user names, `mode`, `mtime`.
fn base_header(mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header
}

fn mtime_of(time: Option<SystemTime>) -> u64 {
    // Times before 1970 (or unknown) become 0: tar stores unsigned seconds here.
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() { 0o755 } else { 0o644 }
}

/// The target to store for the symlink at `rel` (relative to the prefix): relative targets
/// must stay inside the prefix; absolute ones inside `embedded` become relative.
fn relocatable_target(rel: &Path, target: &Path, embedded: &str) -> Result<PathBuf, PackError> {
    let unsafe_link = || PackError::UnsafeSymlink {
        path: rel.to_path_buf(),
        target: target.to_path_buf(),
    };
    let depth = rel.parent().map_or(0, |p| p.components().count());
    let relative = if target.is_absolute() {
        let inside = target.strip_prefix(embedded).map_err(|_| unsafe_link())?;
        let mut relative: PathBuf = std::iter::repeat_n(Component::ParentDir, depth).collect();
        relative.push(inside);
        if relative.as_os_str().is_empty() {
            relative.push(".");
        }
        relative
    } else {
        target.to_path_buf()
    };
    // Resolve the target lexically from the link's directory: it must never climb above the
    // prefix (a symlinked directory on the way is checked as a symlink of its own).
    let mut level = depth;
    for c in relative.components() {
        match c {
            Component::ParentDir => level = level.checked_sub(1).ok_or_else(unsafe_link)?,
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_link()),
        }
    }
    Ok(relative)
}

/// Marks an error of the file being archived, so it is told apart from output errors.
#[derive(Debug)]
struct SourceError(io::Error);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn source_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SourceError(e))
}

/// Maps an error of the tar builder to a read error of the entry or a write error.
fn entry_error(prefix_dir: &Path, rel: &Path, e: io::Error) -> PackError {
    if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
        let kind = e.kind();
        let source = e
            .into_inner()
            .and_then(|inner| inner.downcast::<SourceError>().ok())
            .map_or_else(|| io::Error::from(kind), |s| s.0);
        PackError::Io {
            path: prefix_dir.join(rel),
            source,
        }
    } else {
        PackError::Write {
            entry: rel.display().to_string(),
            source: e,
        }
    }
}

/// Reads exactly the size the header announced. tar's builder copies whatever the reader gives
/// and pads, so a file that shrank while being read would corrupt the archive silently; this
/// turns that into an error. A file that grew is cut at the announced size (a consistent
/// snapshot of its start); packing is meant for a prefix nobody is changing.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max]).map_err(source_error)?;
        if n == 0 {
            return Err(source_error(shrank()));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A manifest as [`unpack`] reads it.
#[derive(Deserialize)]
struct Manifest {
    format: String,
    prefix: String,
    files: Vec<ManifestFile>,
}

#[derive(Deserialize)]
struct ManifestFile {
    path: String,
    mode: FileMode,
}

fn read_manifest(path: &Path) -> Result<Manifest, PackError> {
    let bytes = fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            PackError::NoManifest {
                path: path.to_path_buf(),
            }
        } else {
            PackError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let invalid = |reason: String| PackError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(invalid(format!(
            "format {:?}, expected {MANIFEST_FORMAT:?}",
            manifest.format
        )));
    }
    check_prefix(&manifest.prefix)?;
    if let Some(bad) = manifest.files.iter().find(|f| !is_safe_relative(&f.path)) {
        return Err(invalid(format!(
            "{:?} is not a path inside the prefix",
            bad.path
        )));
    }
    Ok(manifest)
}

/// Whether `p` is a relative path that stays inside the prefix (as conda-meta paths must be).
fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// The manifest's text: JSON in the fixed one-entry-per-line layout the unpack script parses.
/// Strings hold no control characters (refused earlier), so escaping `"` and `\` suffices.
fn manifest_text(prefix: &str, files: &[(String, FileMode)]) -> String {
    fn quoted(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
    let mut text = format!(
        "{{\n  \"format\": {},\n  \"prefix\": {},\n  \"files\": [",
        quoted(MANIFEST_FORMAT),
        quoted(prefix)
    );
    for (i, (path, mode)) in files.iter().enumerate() {
        let mode = match mode {
            FileMode::Text => "text",
            FileMode::Binary => "binary",
        };
        text.push_str(if i == 0 { "\n" } else { ",\n" });
        text.push_str(&format!(
            "    {{\"path\": {}, \"mode\": \"{mode}\"}}",
            quoted(path)
        ));
    }
    text.push_str(if files.is_empty() {
        "]\n}\n"
    } else {
        "\n  ]\n}\n"
    });
    text
}

/// Replaces the file at `path` with `data` through a temporary file and a rename (works for
/// read-only files, and a running program keeps its old copy), keeping mode and times.
fn replace_file(path: &Path, data: &[u8]) -> Result<(), PackError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Io { path, source }
    };
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".conda-unpack.tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        let mut times = fs::FileTimes::new();
        if let Ok(t) = meta.accessed() {
            times = times.set_accessed(t);
        }
        if let Ok(t) = meta.modified() {
            times = times.set_modified(t);
        }
        file.set_times(times)?;
        file.set_permissions(meta.permissions())?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_replacement_pads_each_string() {
        let data = b"xx/old/p\0yy/old/p/a:/old/p/b\0zz/old/p";
        let out = replace_binary(data, b"/old/p", b"/n").unwrap();
        assert_eq!(out.len(), data.len());
        assert_eq!(
            out,
            b"xx/n\0\0\0\0\0yy/n/a:/n/b\0\0\0\0\0\0\0\0\0zz/old/p".to_vec()
        );
        assert_eq!(replace_binary(b"no match\0", b"/old", b"/n"), None);
    }

    #[test]
    fn text_replacement_any_length() {
        let out = replace_text(b"a /p b /p/c /", b"/p", b"/longer").unwrap();
        assert_eq!(out, b"a /longer b /longer/c /".to_vec());
    }

    #[test]
    fn symlink_targets() {
        let t = |rel: &str, target: &str| {
            relocatable_target(Path::new(rel), Path::new(target), "/opt/env")
        };
        assert_eq!(t("bin/x", "y").unwrap(), Path::new("y"));
        assert_eq!(t("bin/x", "../lib/y").unwrap(), Path::new("../lib/y"));
        assert_eq!(t("bin/x", "/opt/env/lib/y").unwrap(), Path::new("../lib/y"));
        assert_eq!(t("x", "/opt/env/lib").unwrap(), Path::new("lib"));
        assert_eq!(t("x", "/opt/env").unwrap(), Path::new("."));
        assert!(t("bin/x", "../../etc").is_err());
        assert!(t("bin/x", "/etc/passwd").is_err());
        assert!(t("bin/x", "/opt/envy").is_err());
        assert!(t("bin/x", "/opt/env/../../etc").is_err());
    }
}
