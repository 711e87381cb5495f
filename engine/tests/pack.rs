//! Packs a fake installed prefix, extracts it with the system `tar` elsewhere, relocates it with
//! `bin/conda-unpack` or `pack::unpack`, and runs what it holds.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conda_store_engine::pack::{
    self, ACTIVATE_SCRIPT_PATH, Compression, DEACTIVATE_SCRIPT_PATH, MANIFEST_PATH, PackError,
    UNPACK_SCRIPT_PATH,
};
use conda_store_engine::prefix::read_installed;
use sha2::{Digest, Sha256};

const PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";
const DATA: &str = "some data\n";

/// The bytes of `lib/libfoo.so`: `prefix` as a C string among other bytes, twice in one string
/// and once alone, plus an occurrence with no terminator (conda leaves that one alone).
fn libfoo(prefix: &str) -> Vec<u8> {
    let mut b = vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3];
    b.extend_from_slice(prefix.as_bytes());
    b.extend_from_slice(b"/lib\0\xff\xfe");
    b.extend_from_slice(format!("{prefix}/a:{prefix}/b\0").as_bytes());
    b.extend_from_slice(&[9; 16]);
    b.extend_from_slice(prefix.as_bytes());
    b
}

/// The C-string replacement done by hand: what `libfoo(old)` must become.
fn libfoo_relocated(old: &str, new: &str) -> Vec<u8> {
    let pad = old.len() - new.len();
    let mut b = vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3];
    b.extend_from_slice(new.as_bytes());
    b.extend_from_slice(b"/lib\0");
    b.extend(std::iter::repeat_n(0, pad));
    b.extend_from_slice(b"\xff\xfe");
    b.extend_from_slice(format!("{new}/a:{new}/b\0").as_bytes());
    b.extend(std::iter::repeat_n(0, 2 * pad));
    b.extend_from_slice(&[9; 16]);
    b.extend_from_slice(old.as_bytes());
    b
}

/// Builds an installed prefix at `p` holding package `tool`.
fn make_prefix(p: &Path) {
    let prefix = p.to_str().unwrap();
    fs::create_dir_all(p.join("conda-meta")).unwrap();
    fs::create_dir_all(p.join("bin")).unwrap();
    fs::create_dir_all(p.join("share/tool")).unwrap();
    fs::create_dir_all(p.join("lib")).unwrap();
    let record = serde_json::json!({
        "name": "tool", "version": "1.0", "build": "0",
        "files": ["bin/tool", "bin/tool-link", "lib/libfoo.so", "share/tool/data.txt"],
        "paths_data": {"paths_version": 1, "paths": [
            {"_path": "bin/tool", "path_type": "hardlink", "file_mode": "text",
             "prefix_placeholder": PLACEHOLDER},
            {"_path": "bin/tool-link", "path_type": "softlink"},
            {"_path": "lib/libfoo.so", "path_type": "hardlink", "file_mode": "binary",
             "prefix_placeholder": PLACEHOLDER},
            {"_path": "share/tool/data.txt", "path_type": "hardlink"}
        ]}
    });
    fs::write(
        p.join("conda-meta/tool-1.0-0.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    let script =
        format!("#!/bin/sh\necho \"prefix is {prefix}\"\ncat \"{prefix}/share/tool/data.txt\"\n");
    fs::write(p.join("bin/tool"), script).unwrap();
    fs::set_permissions(p.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    // Read-only, like perl's Config.pm: unpack must still rewrite it.
    fs::write(p.join("lib/libfoo.so"), libfoo(prefix)).unwrap();
    fs::set_permissions(p.join("lib/libfoo.so"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::write(p.join("share/tool/data.txt"), DATA).unwrap();
    symlink("tool", p.join("bin/tool-link")).unwrap();
}

/// A temporary root plus a long original prefix inside it (so shorter new paths exist).
fn long_prefix() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let p = root
        .path()
        .join("a-rather-long-original-install-location/for/the/environment/named/tool-env");
    make_prefix(&p);
    (root, p)
}

fn pack_to_vec(p: &Path, compression: Compression) -> (Vec<u8>, pack::PackSummary) {
    let mut out = Vec::new();
    let summary = pack::pack(p, p.to_str().unwrap(), compression, &mut out).unwrap();
    (out, summary)
}

const ZSTD: Compression = Compression::Zstd {
    level: 3,
    threads: 2,
};
const GZIP: Compression = Compression::Gzip { level: 6 };
const GZIP_TOO_HIGH: Compression = Compression::Gzip { level: 10 };

/// Writes the archive to a file and extracts it into `dest` with the system tar.
fn extract(archive: &[u8], compression: Compression, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let file = dest.with_extension(compression.extension());
    fs::write(&file, archive).unwrap();
    let flag = match compression {
        Compression::Zstd { .. } => "--zstd",
        Compression::Gzip { .. } => "--gzip",
    };
    let out = Command::new("tar")
        .arg(flag)
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar failed: {}", stderr(&out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_tool(dir: &Path) -> String {
    let out = Command::new(dir.join("bin/tool")).output().unwrap();
    assert!(out.status.success(), "bin/tool failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `bin/conda-unpack` as `./bin/conda-unpack` from inside `dir`.
fn conda_unpack_relative(dir: &Path) -> Output {
    Command::new("./bin/conda-unpack")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs `bin/conda-unpack` by its absolute path from elsewhere.
fn conda_unpack_absolute(dir: &Path) -> Output {
    Command::new(dir.join(UNPACK_SCRIPT_PATH))
        .current_dir("/")
        .output()
        .unwrap()
}

fn check_relocated(old: &Path, new: &Path) {
    let (old, new_str) = (old.to_str().unwrap(), new.to_str().unwrap());
    assert_eq!(run_tool(new), format!("prefix is {new_str}\n{DATA}"));
    let lib = fs::read(new.join("lib/libfoo.so")).unwrap();
    assert_eq!(lib, libfoo_relocated(old, new_str));
    let mode = fs::metadata(new.join("lib/libfoo.so"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "mode kept");
    assert_eq!(
        fs::read_link(new.join("bin/tool-link")).unwrap(),
        Path::new("tool")
    );
    let manifest = fs::read_to_string(new.join(MANIFEST_PATH)).unwrap();
    assert!(
        manifest.contains(&format!("\"prefix\": \"{new_str}\"")),
        "{manifest}"
    );
    // The manifest is not mistaken for a package record.
    let pkgs = read_installed(new).unwrap();
    assert_eq!(pkgs.len(), 1);
}

#[test]
fn zstd_archive_relocates_with_the_script_into_a_shorter_path_with_spaces() {
    let (root, p) = long_prefix();
    let (archive, summary) = pack_to_vec(&p, ZSTD);
    assert_eq!(summary.files, 4);
    assert_eq!(summary.symlinks, 1);
    assert_eq!(summary.prefix_files, 2);
    assert_eq!(summary.bytes_out, archive.len() as u64);
    assert_eq!(summary.sha256, format!("{:x}", Sha256::digest(&archive)));

    let new = root.path().join("new env");
    extract(&archive, ZSTD, &new);
    // The original is untouched and still works.
    assert!(run_tool(&p).contains(p.to_str().unwrap()));
    let out = conda_unpack_relative(&new);
    assert!(
        out.status.success(),
        "conda-unpack failed: {}",
        stderr(&out)
    );
    check_relocated(&p, &new);

    // Running it again changes nothing.
    let before = fs::read(new.join("lib/libfoo.so")).unwrap();
    let out = conda_unpack_absolute(&new);
    assert!(out.status.success(), "second run failed: {}", stderr(&out));
    assert_eq!(fs::read(new.join("lib/libfoo.so")).unwrap(), before);
    check_relocated(&p, &new);
}

#[test]
fn gzip_archive_relocates_with_the_library_function() {
    let (root, p) = long_prefix();
    let (archive, _) = pack_to_vec(&p, GZIP);
    let new = root.path().join("gz");
    extract(&archive, GZIP, &new);
    let summary = pack::unpack(&new).unwrap();
    assert_eq!(summary.old_prefix, p.to_str().unwrap());
    assert_eq!(summary.new_prefix, new.to_str().unwrap());
    assert_eq!((summary.rewritten, summary.unchanged), (2, 0));
    check_relocated(&p, &new);

    let again = pack::unpack(&new).unwrap();
    assert_eq!((again.rewritten, again.unchanged), (0, 2));
    check_relocated(&p, &new);
}

#[test]
fn moved_again_after_unpacking_it_relocates_again() {
    let (root, p) = long_prefix();
    let (archive, _) = pack_to_vec(&p, ZSTD);
    let first = root.path().join("first");
    extract(&archive, ZSTD, &first);
    assert!(conda_unpack_absolute(&first).status.success());
    let second = root.path().join("2nd");
    fs::rename(&first, &second).unwrap();
    let out = conda_unpack_absolute(&second);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_tool(&second),
        format!("prefix is {}\n{DATA}", second.display())
    );
    // Relocating via "first": padding from the first move and the second is all NULs.
    let lib = fs::read(second.join("lib/libfoo.so")).unwrap();
    assert_eq!(
        lib,
        libfoo_relocated(p.to_str().unwrap(), second.to_str().unwrap())
    );
}

#[test]
fn text_files_take_a_longer_path() {
    // Only text files embed the prefix here, so a longer location is fine.
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("p");
    make_prefix(&p);
    let record = p.join("conda-meta/tool-1.0-0.json");
    let text = fs::read_to_string(&record)
        .unwrap()
        .replace("\"binary\"", "\"text\"");
    fs::write(&record, text).unwrap();
    fs::set_permissions(p.join("lib/libfoo.so"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(p.join("lib/libfoo.so"), b"no prefix here").unwrap();
    let (archive, _) = pack_to_vec(&p, ZSTD);
    let new = root.path().join("a much longer location/with spaces");
    extract(&archive, ZSTD, &new);
    let out = conda_unpack_relative(&new);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_tool(&new),
        format!("prefix is {}\n{DATA}", new.display())
    );

    // Characters the manifest escapes, or perl or sh could interpret. (bin/tool itself could
    // not run from there: its own quoting is naive; its text is checked instead.)
    let odd = root
        .path()
        .join(r#"odd "quoted" \back\slash $HOME @x 'single'"#);
    fs::rename(&new, &odd).unwrap();
    let out = conda_unpack_absolute(&odd);
    assert!(out.status.success(), "{}", stderr(&out));
    let tool = fs::read_to_string(odd.join("bin/tool")).unwrap();
    let odd_str = odd.to_str().unwrap();
    let expected =
        format!("#!/bin/sh\necho \"prefix is {odd_str}\"\ncat \"{odd_str}/share/tool/data.txt\"\n");
    assert_eq!(tool, expected);
    // The manifest records the escaped path and both unpackers read it back.
    assert_eq!(pack::unpack(&odd).unwrap().rewritten, 0);
    assert!(conda_unpack_relative(&odd).status.success());
    assert_eq!(fs::read_to_string(odd.join("bin/tool")).unwrap(), tool);
}

#[test]
fn a_longer_path_for_a_binary_file_fails_clearly_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("short");
    make_prefix(&p);
    let (archive, _) = pack_to_vec(&p, ZSTD);
    let new = root.path().join("a-location-longer-than-the-original");
    extract(&archive, ZSTD, &new);
    let tool_before = fs::read(new.join("bin/tool")).unwrap();

    let out = conda_unpack_relative(&new);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("lib/libfoo.so") && msg.contains("does not fit") && msg.contains("at most"),
        "{msg}"
    );
    assert_eq!(fs::read(new.join("bin/tool")).unwrap(), tool_before);

    let err = pack::unpack(&new).unwrap_err();
    assert!(matches!(err, PackError::PrefixTooLong { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("lib/libfoo.so") && msg.contains("at most"),
        "{msg}"
    );
    assert_eq!(fs::read(new.join("bin/tool")).unwrap(), tool_before);
}

#[test]
fn packing_is_deterministic() {
    let (_root, p) = long_prefix();
    for compression in [ZSTD, GZIP] {
        let (a, sa) = pack_to_vec(&p, compression);
        let (b, sb) = pack_to_vec(&p, compression);
        assert!(a == b, "{compression:?} differs between runs");
        assert_eq!(sa, sb);
    }
    // zstd's multithreaded output does not depend on the number of workers.
    let one = pack_to_vec(
        &p,
        Compression::Zstd {
            level: 3,
            threads: 1,
        },
    )
    .0;
    let four = pack_to_vec(
        &p,
        Compression::Zstd {
            level: 3,
            threads: 4,
        },
    )
    .0;
    assert!(one == four, "zstd output depends on the thread count");
}

#[test]
fn archive_entries_are_ordered_with_root_owned_headers_and_kept_modes_and_times() {
    let (_root, p) = long_prefix();
    let (archive, _) = pack_to_vec(&p, GZIP);
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&archive[..]));
    let mut names = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header();
        let name = entry.path().unwrap().to_str().unwrap().to_string();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{name}");
        if name == "lib/libfoo.so" {
            assert_eq!(h.mode().unwrap(), 0o444);
            let mtime = fs::metadata(p.join(&name)).unwrap().modified().unwrap();
            let secs = mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(h.mtime().unwrap(), secs);
        }
        if name == "bin/tool-link" {
            assert_eq!(h.entry_type(), tar::EntryType::Symlink);
            assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("tool"));
        }
        if name == UNPACK_SCRIPT_PATH {
            assert_eq!(h.mode().unwrap(), 0o755);
        }
        if name == MANIFEST_PATH {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["prefix"], p.to_str().unwrap());
            assert_eq!(
                json["files"],
                serde_json::json!([
                    {"path": "bin/tool", "mode": "text"},
                    {"path": "lib/libfoo.so", "mode": "binary"}
                ])
            );
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            // Directories first, in walk order.
            "bin/",
            "conda-meta/",
            "lib/",
            "share/",
            "share/tool/",
            // The package's own files (not those that embed the prefix).
            "share/tool/data.txt",
            // The rest in walk order.
            "bin/tool",
            "bin/tool-link",
            "conda-meta/tool-1.0-0.json",
            "lib/libfoo.so",
            UNPACK_SCRIPT_PATH,
            ACTIVATE_SCRIPT_PATH,
            DEACTIVATE_SCRIPT_PATH,
            MANIFEST_PATH,
        ]
    );
}

/// Runs `script` with `shell -c`, with a PATH of the system directories only.
fn shell(shell: &str, script: &str) -> String {
    let out = Command::new(shell)
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell} -c {script:?} failed: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// conda-pack's contract as the `conda-store run` client uses it: Python's `tarfile` opens the
/// archive as gzip, `bin/conda-unpack` relocates it, and `. bin/activate PREFIX && exec CMD`
/// runs a program of the environment with its activation scripts applied.
#[test]
fn the_archive_activates_as_conda_pack_does() {
    let (root, p) = long_prefix();
    for (dir, name, body) in [
        (
            "activate.d",
            "tool.sh",
            "export TOOL_HOME=\"$CONDA_PREFIX/share/tool\"\n",
        ),
        ("deactivate.d", "tool.sh", "unset TOOL_HOME\n"),
    ] {
        fs::create_dir_all(p.join("etc/conda").join(dir)).unwrap();
        fs::write(p.join("etc/conda").join(dir).join(name), body).unwrap();
    }
    // A prefix that has its own (stale) activate script gets ours.
    fs::write(p.join(ACTIVATE_SCRIPT_PATH), "exit 7\n").unwrap();
    let (archive, _) = pack_to_vec(&p, GZIP);
    let file = root.path().join("archive.tar.gz");
    fs::write(&file, &archive).unwrap();
    let new = root.path().join("run env");
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys, tarfile; tarfile.open(sys.argv[1], mode='r:gz').extractall(path=sys.argv[2])")
        .arg(&file)
        .arg(&new)
        .output()
        .unwrap();
    assert!(out.status.success(), "tarfile: {}", stderr(&out));
    let out = conda_unpack_absolute(&new);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = new.to_str().unwrap();
    let q = |s: &str| format!("'{s}'");
    // ksh and zsh (not installed here) tell a sourced script where it is as bash does.
    {
        let sh = "bash";
        // The client's own command line: activate with the prefix as argument, then exec.
        let got = shell(
            sh,
            &format!(
                ". {} {} && exec sh -c 'tool; echo \"$CONDA_PREFIX|$TOOL_HOME\"'",
                q(&format!("{env}/bin/activate")),
                q(env)
            ),
        );
        assert_eq!(
            got,
            format!("prefix is {env}\n{DATA}{env}|{env}/share/tool\n"),
            "{sh}"
        );
        // Deactivate undoes it: PATH back, the package's deactivate.d script run.
        let got = shell(
            sh,
            &format!(
                "before=$PATH; . {} {}; . \"$CONDA_PREFIX/bin/deactivate\"; \
                 [ \"$PATH\" = \"$before\" ] && echo \"restored|${{CONDA_PREFIX:-}}|${{TOOL_HOME:-}}\"",
                q(&format!("{env}/bin/activate")),
                q(env)
            ),
        );
        assert_eq!(got, "restored||\n", "{sh}");
    }
    // bash finds the environment from the script's own location.
    let got = shell(
        "bash",
        &format!(". {} && command -v tool", q(&format!("{env}/bin/activate"))),
    );
    assert_eq!(got, format!("{env}/bin/tool\n"));
    // dash cannot tell where a sourced script is, nor pass it arguments: it says so, and
    // nothing is changed.
    let out = Command::new("dash")
        .arg("-c")
        .arg(format!(
            ". {} || echo \"refused|${{CONDA_PREFIX:-}}\"",
            q(&format!("{env}/bin/activate"))
        ))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "refused|\n");
    assert!(
        stderr(&out).contains("source it from bash or zsh"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_stale_script_and_manifest_in_the_prefix_are_replaced() {
    let (root, p) = long_prefix();
    fs::write(p.join(UNPACK_SCRIPT_PATH), "#!/bin/sh\nexit 3\n").unwrap();
    fs::write(p.join(MANIFEST_PATH), "stale").unwrap();
    let (archive, _) = pack_to_vec(&p, ZSTD);
    let new = root.path().join("n");
    extract(&archive, ZSTD, &new);
    let out = conda_unpack_relative(&new);
    assert!(out.status.success(), "{}", stderr(&out));
    check_relocated(&p, &new);
}

#[test]
fn absolute_symlinks_inside_become_relative_and_outside_are_refused() {
    let (root, p) = long_prefix();
    symlink(p.join("share/tool/data.txt"), p.join("bin/data-abs")).unwrap();
    let (archive, _) = pack_to_vec(&p, ZSTD);
    let new = root.path().join("n");
    extract(&archive, ZSTD, &new);
    assert_eq!(
        fs::read_link(new.join("bin/data-abs")).unwrap(),
        Path::new("../share/tool/data.txt")
    );
    assert_eq!(fs::read_to_string(new.join("bin/data-abs")).unwrap(), DATA);

    symlink("/etc/hostname", p.join("share/outside")).unwrap();
    let err = pack::pack(&p, p.to_str().unwrap(), ZSTD, std::io::sink()).unwrap_err();
    assert!(matches!(err, PackError::UnsafeSymlink { .. }), "{err}");
    assert!(err.to_string().contains("share/outside"), "{err}");
    fs::remove_file(p.join("share/outside")).unwrap();

    symlink("../../../escape", p.join("share/tool/up")).unwrap();
    let err = pack::pack(&p, p.to_str().unwrap(), ZSTD, std::io::sink()).unwrap_err();
    assert!(matches!(err, PackError::UnsafeSymlink { .. }), "{err}");
}

#[test]
fn a_directory_without_conda_meta_is_not_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bin")).unwrap();
    let err = pack::pack(dir.path(), dir.path().to_str().unwrap(), ZSTD, Vec::new()).unwrap_err();
    assert!(matches!(err, PackError::NotAPrefix { .. }), "{err}");
    assert!(err.to_string().contains("conda-meta"), "{err}");
}

#[test]
fn a_listed_file_missing_is_reported() {
    let (_root, p) = long_prefix();
    fs::remove_file(p.join("share/tool/data.txt")).unwrap();
    let err = pack::pack(&p, p.to_str().unwrap(), ZSTD, Vec::new()).unwrap_err();
    assert!(matches!(err, PackError::MissingFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("share/tool/data.txt") && msg.contains("tool-1.0-0.json"),
        "{msg}"
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let (_root, p) = long_prefix();
    fs::set_permissions(
        p.join("share/tool/data.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // root reads anything: nothing to test then.
    if fs::File::open(p.join("share/tool/data.txt")).is_ok() {
        return;
    }
    let err = pack::pack(&p, p.to_str().unwrap(), ZSTD, Vec::new()).unwrap_err();
    assert!(matches!(err, PackError::Io { .. }), "{err}");
    assert!(err.to_string().contains("share/tool/data.txt"), "{err}");
}

#[test]
fn bad_embedded_prefixes_and_plain_directories_are_refused() {
    let (_root, p) = long_prefix();
    for bad in ["relative/path", "/", ""] {
        let err = pack::pack(&p, bad, ZSTD, Vec::new()).unwrap_err();
        assert!(
            matches!(err, PackError::InvalidPrefix { .. }),
            "{bad}: {err}"
        );
    }
    let err = pack::pack(&p, p.to_str().unwrap(), GZIP_TOO_HIGH, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("gzip level"), "{err}");

    let plain = tempfile::tempdir().unwrap();
    let err = pack::unpack(plain.path()).unwrap_err();
    assert!(matches!(err, PackError::NoManifest { .. }), "{err}");
}

#[test]
fn output_write_errors_are_reported_as_such() {
    struct Failing;
    impl std::io::Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (_root, p) = long_prefix();
    let err = pack::pack(&p, p.to_str().unwrap(), GZIP, Failing).unwrap_err();
    assert!(matches!(err, PackError::Write { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
}

fn pack_cached(
    p: &Path,
    compression: Compression,
    cache: &pack::SegmentCache,
) -> (Vec<u8>, pack::PackSummary) {
    let mut out = Vec::new();
    let summary =
        pack::pack_with_cache(p, p.to_str().unwrap(), compression, Some(cache), &mut out).unwrap();
    (out, summary)
}

/// The segment files the cache holds.
fn cached_segments(cache: &pack::SegmentCache) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for shard in fs::read_dir(cache.dir().join("segments")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            files.extend(fs::read_dir(&shard).unwrap().map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    files
}

#[test]
fn a_segment_cache_changes_no_byte_and_serves_the_next_environment() {
    let (root, p) = long_prefix();
    let cache = pack::SegmentCache::new(root.path().join("cache")).unwrap();
    // A second environment with the same package file, linked as the install links it.
    let other = root.path().join("other-env");
    make_prefix(&other);
    fs::remove_file(other.join("share/tool/data.txt")).unwrap();
    fs::hard_link(
        p.join("share/tool/data.txt"),
        other.join("share/tool/data.txt"),
    )
    .unwrap();
    for compression in [ZSTD, GZIP] {
        let (plain, plain_summary) = pack_to_vec(&p, compression);
        assert_eq!(plain_summary.reused_segments, 0);
        let (first, summary) = pack_cached(&p, compression, &cache);
        assert!(
            first == plain,
            "{compression:?}: the cache changed the archive"
        );
        assert_eq!(summary.reused_segments, 0);
        let (second, summary) = pack_cached(&p, compression, &cache);
        assert!(
            second == plain,
            "{compression:?}: a reused segment changed the archive"
        );
        assert_eq!(summary.reused_segments, 1, "the package's segment");
        assert_eq!(
            summary.segments, 4,
            "directories, package, the rest, generated"
        );

        let (other_plain, _) = pack_to_vec(&other, compression);
        let (other_cached, summary) = pack_cached(&other, compression, &cache);
        assert_eq!(
            summary.reused_segments, 1,
            "shared with the first environment"
        );
        assert!(other_cached == other_plain);
        let new = root.path().join(format!("x-{}", compression.extension()));
        extract(&other_cached, compression, &new);
        assert_eq!(
            fs::read_to_string(new.join("share/tool/data.txt")).unwrap(),
            DATA
        );
    }
    assert_eq!(cached_segments(&cache).len(), 2, "one per compression");
}

#[test]
fn a_damaged_cached_segment_is_compressed_again_not_shipped() {
    let (root, p) = long_prefix();
    let cache = pack::SegmentCache::new(root.path().join("cache")).unwrap();
    let (plain, _) = pack_to_vec(&p, ZSTD);
    pack_cached(&p, ZSTD, &cache);
    let [segment] = cached_segments(&cache).try_into().unwrap();
    let good = fs::read(&segment).unwrap();
    for damage in [good[..good.len() / 2].to_vec(), Vec::new(), {
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        flipped
    }] {
        fs::write(&segment, damage).unwrap();
        let (archive, summary) = pack_cached(&p, ZSTD, &cache);
        assert_eq!(summary.reused_segments, 0);
        assert!(archive == plain, "a damaged segment reached the archive");
        assert_eq!(
            fs::read(&segment).unwrap(),
            good,
            "compressed again and kept"
        );
    }
}

#[test]
fn a_changed_file_is_not_taken_for_its_cached_segment() {
    let (root, p) = long_prefix();
    let cache = pack::SegmentCache::new(root.path().join("cache")).unwrap();
    pack_cached(&p, ZSTD, &cache);
    // Same size, rewritten in place: only the time (to the nanosecond) tells.
    let changed = "SOME DATA\n";
    assert_eq!(changed.len(), DATA.len());
    fs::write(p.join("share/tool/data.txt"), changed).unwrap();
    let (archive, summary) = pack_cached(&p, ZSTD, &cache);
    assert_eq!(summary.reused_segments, 0);
    let new = root.path().join("n");
    extract(&archive, ZSTD, &new);
    assert_eq!(
        fs::read_to_string(new.join("share/tool/data.txt")).unwrap(),
        changed
    );
}

#[test]
fn prune_removes_segments_unused_for_the_maximum_age() {
    let (root, p) = long_prefix();
    let day = std::time::Duration::from_secs(24 * 3600);
    let cache = pack::SegmentCache::new(root.path().join("cache"))
        .unwrap()
        .with_max_age(7 * day);
    pack_cached(&p, ZSTD, &cache);
    pack_cached(&p, GZIP, &cache);
    let segments = cached_segments(&cache);
    assert_eq!(segments.len(), 2);
    let old = std::time::SystemTime::now() - 8 * day;
    let age = |path: &Path| {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    age(&segments[0]);
    // A temporary file a stopped pack left behind, and one being written now.
    let abandoned = cache.dir().join(".segment-abandoned");
    fs::write(&abandoned, "x").unwrap();
    age(&abandoned);
    let writing = cache.dir().join(".segment-writing");
    fs::write(&writing, "x").unwrap();
    let summary = cache.prune().unwrap();
    assert_eq!((summary.removed, summary.kept), (2, 1));
    assert_eq!(cached_segments(&cache), [segments[1].clone()]);
    assert!(!abandoned.exists() && writing.exists());
    // Using a segment marks it: the next prune keeps it.
    pack_cached(&p, GZIP, &cache);
    assert_eq!(cache.prune().unwrap().removed, 0);
}

#[test]
fn a_file_larger_than_a_segment_packs_the_same_with_any_thread_count() {
    let (root, p) = long_prefix();
    // Past the size where all threads compress one segment together.
    let big = fs::File::create(p.join("share/tool/big.bin")).unwrap();
    big.set_len(65 << 20).unwrap();
    let record = p.join("conda-meta/tool-1.0-0.json");
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    json["files"]
        .as_array_mut()
        .unwrap()
        .push("share/tool/big.bin".into());
    fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    let with = |threads| pack_to_vec(&p, Compression::Zstd { level: 3, threads });
    let (one, summary) = with(1);
    assert_eq!(summary.files, 5);
    assert!(one == with(3).0, "output depends on the thread count");
    let new = root.path().join("n");
    extract(&one, ZSTD, &new);
    assert_eq!(
        fs::metadata(new.join("share/tool/big.bin")).unwrap().len(),
        65 << 20
    );
}

/// Throughput on a real prefix, not run by default:
/// `PACK_BENCH_PREFIX=/path/to/prefix cargo test --release -p conda-store-engine --test pack
/// -- --ignored --nocapture throughput`. Writes to files in the system temp directory. Each
/// compression is timed without a cache, then again with the segment cache the first packed
/// into (the figures of a rebuild of the same packages).
#[test]
#[ignore]
fn throughput() {
    let Some(prefix) = std::env::var_os("PACK_BENCH_PREFIX") else {
        panic!("set PACK_BENCH_PREFIX to an installed prefix");
    };
    let prefix = PathBuf::from(prefix);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let segments = tempfile::tempdir().unwrap();
    for compression in [
        Compression::Zstd { level: 3, threads },
        Compression::Gzip { level: 6 },
    ] {
        let cache = pack::SegmentCache::new(segments.path()).unwrap();
        for cached in [None, Some(&cache), Some(&cache)] {
            let out = tempfile::NamedTempFile::new().unwrap();
            let start = std::time::Instant::now();
            let file = std::io::BufWriter::new(out.reopen().unwrap());
            let s =
                pack::pack_with_cache(&prefix, prefix.to_str().unwrap(), compression, cached, file)
                    .unwrap();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{compression:?} {}: {} files, {:.1} MB in, {:.1} MB out, {secs:.2} s, {:.0} MB/s, \
                 {} of {} segments reused",
                if cached.is_some() {
                    "cache"
                } else {
                    "no cache"
                },
                s.files,
                s.bytes_in as f64 / 1e6,
                s.bytes_out as f64 / 1e6,
                s.bytes_in as f64 / 1e6 / secs,
                s.reused_segments,
                s.segments,
            );
        }
    }
}
