//! pip sections against real parts: the uv binary (scripts/install-uv.sh, `CONDA_STORE_UV`), a
//! conda channel whose python is the host's CPython (tests/support/real_channel.py), and a PEP
//! 503 index of real PyPI wheels (tests/support/pypi_index.py) served over HTTP. Solve → lockfile
//! (read back, and by conda-lock's own parser) → install → run → pack → unpack elsewhere → run;
//! and each bad input with the error a person sees.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use conda_store_engine::install::install_lockfile;
use conda_store_engine::lockfile::{lockfile_pip, write_lockfile};
use conda_store_engine::pack::{self, Compression};
use conda_store_engine::pip::{self, PipConfig};
use conda_store_engine::prefix::{FileMode, Manager, read_installed};
use conda_store_engine::solve::{Solution, SolveRequest, solve};
use conda_store_engine::static_http::StaticServer;

const INDEX_WHEELS: &[&str] = &[
    "flask==3.1.3",
    "werkzeug==3.1.9",
    "jinja2==3.1.6",
    "itsdangerous==2.2.0",
    "click==8.5.1",
    "click==7.1.2",
    "blinker==1.9.0",
    "markupsafe==3.0.4",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cache() -> PathBuf {
    std::env::var_os("CONDA_STORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/conda-store-k8s")
        })
}

fn uv() -> PathBuf {
    let uv = std::env::var_os("CONDA_STORE_UV")
        .map(PathBuf::from)
        .expect("CONDA_STORE_UV is not set: eval \"$(bash scripts/install-test-deps.sh)\" first");
    assert!(uv.is_file(), "{} is not a file", uv.display());
    uv
}

fn python_script(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The channel (python and a conda `click`) and the index directory, made once per run.
fn fixtures() -> &'static (PathBuf, PathBuf) {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let c = cache().join("test-data");
        let channel = c.join("pip-test-channel");
        let support = root().join("tests/support");
        python_script(&[
            support.join("real_channel.py").to_str().unwrap(),
            channel.to_str().unwrap(),
            "--wheels",
            c.join("pip-test-channel-wheels").to_str().unwrap(),
            "click==8.5.1",
        ]);
        let index = c.join("pip-test-index");
        let mut args = vec![
            support.join("pypi_index.py").to_str().unwrap().to_string(),
            index.to_str().unwrap().to_string(),
            "--wheels".into(),
            c.join("pip-test-index-wheels")
                .to_str()
                .unwrap()
                .to_string(),
            "--sdist".into(),
            "onlysource==1.0".into(),
        ];
        args.extend(INDEX_WHEELS.iter().map(|s| s.to_string()));
        python_script(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (channel, index)
    })
}

struct Setup {
    channel: PathBuf,
    index: StaticServer,
    cfg: PipConfig,
    _tmp: tempfile::TempDir,
    tmp: PathBuf,
}

async fn setup() -> Setup {
    let (channel, index_dir) = fixtures();
    let index = StaticServer::start(index_dir, "max-age=0").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = PipConfig::new(uv());
    cfg.index_url = Some(format!("{}simple", index.url()));
    cfg.cache_dir = Some(tmp.path().join("uv-cache"));
    Setup {
        channel: channel.clone(),
        index,
        cfg,
        tmp: tmp.path().to_path_buf(),
        _tmp: tmp,
    }
}

impl Setup {
    fn request(&self, specs: &[&str], pip: &[&str]) -> SolveRequest {
        SolveRequest {
            channels: vec![self.channel.to_str().unwrap().to_string()],
            specs: specs.iter().map(|s| s.to_string()).collect(),
            pip: pip.iter().map(|s| s.to_string()).collect(),
            pip_config: Some(self.cfg.clone()),
            package_cache: Some(self.tmp.join("pkgs")),
            platforms: vec!["linux-64".into()],
            ..Default::default()
        }
    }

    async fn solve(&self, specs: &[&str], pip: &[&str]) -> Result<Solution, String> {
        solve(&self.request(specs, pip))
            .await
            .map_err(|e| e.to_string())
    }

    /// Installs the lockfile's conda and pip packages into `prefix`.
    async fn install(&self, lock: &str, prefix: &Path) -> Result<(), String> {
        install_lockfile(lock, "linux-64", prefix, &self.tmp.join("pkgs"))
            .await
            .map_err(|e| e.to_string())?;
        let pip = lockfile_pip(lock, "linux-64").map_err(|e| e.to_string())?;
        pip::install(&self.cfg, prefix, &pip)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (exists: {})", program.display(), program.exists()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pip_section_is_locked_installed_packed_and_runs_after_unpacking() {
    let s = setup().await;
    let solution = s.solve(&["python", "click"], &["flask"]).await.unwrap();
    let pip = &solution.pip["linux-64"];
    let names: Vec<&str> = pip.iter().map(|p| p.name.as_str()).collect();
    // click comes from conda: pip neither replaces nor duplicates it.
    assert_eq!(
        names,
        [
            "blinker",
            "flask",
            "itsdangerous",
            "jinja2",
            "markupsafe",
            "werkzeug"
        ]
    );
    let flask = pip.iter().find(|p| p.name == "flask").unwrap();
    assert_eq!(flask.version, "3.1.3");
    assert!(flask.url.starts_with(&s.index.url()), "{}", flask.url);
    assert!(
        flask.dependencies.contains_key("werkzeug"),
        "{:?}",
        flask.dependencies
    );
    let markupsafe = pip.iter().find(|p| p.name == "markupsafe").unwrap();
    assert!(
        markupsafe.url.contains("cp311-cp311-manylinux"),
        "a binary wheel: {}",
        markupsafe.url
    );
    // The sha256 is the served file's.
    let file = fixtures()
        .1
        .join("files")
        .join(markupsafe.url.rsplit('/').next().unwrap());
    let digest = sha256_hex(&std::fs::read(file).unwrap());
    assert_eq!(markupsafe.sha256, digest);

    let lock = write_lockfile(&solution).unwrap();
    assert!(lock.contains("manager: pip"), "{lock}");
    assert_eq!(&lockfile_pip(&lock, "linux-64").unwrap(), pip);
    conda_lock_reads(&lock, &s.tmp);

    let prefix = s.tmp.join("env");
    s.install(&lock, &prefix).await.unwrap();
    let python = prefix.join("bin/python");
    let version = run(
        &python,
        &[
            "-c",
            "import flask, markupsafe._speedups, click; print(click.__file__)",
        ],
    );
    assert!(version.contains("site-packages/click"), "{version}");
    let flask_cli = prefix.join("bin/flask");
    let shebang = std::fs::read_to_string(&flask_cli).unwrap();
    assert!(
        shebang.starts_with(&format!("#!{}", prefix.display())),
        "the entry point runs the environment's python: {}",
        shebang.lines().next().unwrap_or_default()
    );
    assert!(run(&flask_cli, &["--version"]).contains("Flask 3.1.3"));
    let site = prefix.join("lib/python3.11/site-packages");
    assert_eq!(
        std::fs::read_to_string(site.join("flask-3.1.3.dist-info/INSTALLER"))
            .unwrap()
            .trim(),
        "uv"
    );
    assert!(site.join("flask-3.1.3.dist-info/RECORD").is_file());
    // conda-meta knows only the conda packages; the pip ones are read from their RECORDs.
    let installed = read_installed(&prefix).unwrap();
    let conda: Vec<&str> = installed
        .iter()
        .filter(|p| p.manager == Manager::Conda)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(conda, ["click", "python"]);
    let flask_pkg = installed.iter().find(|p| p.name == "flask").unwrap();
    assert_eq!(flask_pkg.manager, Manager::Pip);
    assert!(flask_pkg.files.contains(&"bin/flask".to_string()));
    assert_eq!(flask_pkg.prefix_files.len(), 1);
    assert_eq!(flask_pkg.prefix_files[0].mode, FileMode::Text);
    // Installing again changes nothing.
    let before = std::fs::metadata(&flask_cli).unwrap().modified().unwrap();
    s.install(&lock, &prefix).await.unwrap();
    assert_eq!(
        std::fs::metadata(&flask_cli).unwrap().modified().unwrap(),
        before
    );

    // Packed, unpacked at another path, relocated by conda-unpack: the entry point runs there.
    let mut archive = Vec::new();
    let summary = pack::pack(
        &prefix,
        prefix.to_str().unwrap(),
        Compression::Gzip { level: 1 },
        &mut archive,
    )
    .unwrap();
    assert!(summary.prefix_files >= 1);
    let moved = s.tmp.join("elsewhere/a longer path/env");
    std::fs::create_dir_all(&moved).unwrap();
    let tar = s.tmp.join("env.tar.gz");
    std::fs::write(&tar, &archive).unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&tar)
        .arg("-C")
        .arg(&moved)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::remove_dir_all(&prefix).unwrap();
    let out = Command::new(moved.join("bin/conda-unpack"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A path with a space cannot be in a shebang: as conda does, the script asks env for the
    // python of the activated environment (its bin/ first on PATH).
    let script = std::fs::read_to_string(moved.join("bin/flask")).unwrap();
    assert!(script.starts_with("#!/usr/bin/env python"), "{script}");
    let out = Command::new(moved.join("bin/flask"))
        .arg("--version")
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", moved.join("bin").display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Flask 3.1.3"));
    assert!(
        run(
            &moved.join("bin/python"),
            &["-c", "import flask, markupsafe._speedups"]
        )
        .is_empty()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// conda-lock's own parser (PyPI conda-lock, `CONDA_STORE_COMPAT_VENV`) reads the lockfile's pip
/// entries.
fn conda_lock_reads(lock: &str, tmp: &Path) {
    let venv = std::env::var_os("CONDA_STORE_COMPAT_VENV")
        .map(PathBuf::from)
        .expect("CONDA_STORE_COMPAT_VENV is not set: eval \"$(bash scripts/install-test-deps.sh)\" first");
    let path = tmp.join("conda-lock.yml");
    std::fs::write(&path, lock).unwrap();
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys, pathlib\n\
             from conda_lock.lockfile import parse_conda_lock_file\n\
             lock = parse_conda_lock_file(pathlib.Path(sys.argv[1]))\n\
             pip = sorted(p.name for p in lock.package if p.manager == 'pip')\n\
             assert all(p.hash.sha256 for p in lock.package if p.manager == 'pip')\n\
             print(','.join(pip))",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "conda-lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "blinker,flask,itsdangerous,jinja2,markupsafe,werkzeug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pip_input_is_refused_naming_the_requirement() {
    let s = setup().await;
    let cases: &[(&[&str], &[&str])] = &[
        (&["nosuchproject"], &["nosuchproject"]),
        (&["flask>=99"], &["flask"]),
        (&["onlysource"], &["onlysource", "only wheels"]),
        // conda installs click 8.5.1; the index has click 7.1.2 too, which pip may not take.
        (
            &["click<8"],
            &[
                "click",
                "conda packages of this environment install click 8.5.1",
            ],
        ),
        (&["-e ./mypackage"], &["-e ./mypackage", "editable"]),
        (
            &["mypkg @ file:///srv/mypkg.whl"],
            &["mypkg @ file:///srv/mypkg.whl", "not supported"],
        ),
    ];
    for (pip, expect) in cases {
        let err = s.solve(&["python", "click"], pip).await.unwrap_err();
        for e in *expect {
            assert!(err.contains(e), "{pip:?}: expected {e:?} in: {err}");
        }
    }
    // No python in the conda part: a clear error, before anything runs.
    let err = s.solve(&[], &["flask"]).await.unwrap_err();
    assert!(err.contains("needs python"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_index_fails_after_bounded_retries() {
    let mut s = setup().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    s.cfg.index_url = Some(format!("http://127.0.0.1:{port}/simple"));
    s.cfg.http_timeout = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = s.solve(&["python"], &["flask"]).await.unwrap_err();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lockfile_whose_hash_does_not_match_installs_nothing_of_pip() {
    let s = setup().await;
    let solution = s.solve(&["python"], &["itsdangerous"]).await.unwrap();
    let lock = write_lockfile(&solution).unwrap();
    let good = &solution.pip["linux-64"][0].sha256;
    let forged = lock.replace(good.as_str(), &"0".repeat(64));
    assert_ne!(lock, forged);
    let prefix = s.tmp.join("forged");
    let err = s.install(&forged, &prefix).await.unwrap_err();
    assert!(err.contains("itsdangerous"), "{err}");
    assert!(err.to_ascii_lowercase().contains("hash"), "{err}");
    assert!(
        !prefix
            .join("lib/python3.11/site-packages/itsdangerous")
            .exists(),
        "nothing of the package was installed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_resolvers_interpreter_is_kept_for_the_next_solve() {
    let s = setup().await;
    let shared = s.tmp.join("interpreters");
    let mut request = s.request(&["python"], &["itsdangerous"]);
    request.pip_interpreters = Some(shared.clone());
    // Two solves at once share one interpreter; neither sees half of one.
    let (a, b) = tokio::join!(solve(&request), solve(&request));
    assert_eq!(a.unwrap().pip, b.unwrap().pip);
    let entries = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&shared)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(!first[0].starts_with(".new-"));
    let python = shared.join(&first[0]).join("bin/python");
    let before = std::fs::metadata(&python).unwrap().modified().unwrap();
    solve(&request).await.unwrap();
    assert_eq!(entries(), first);
    assert_eq!(
        std::fs::metadata(&python).unwrap().modified().unwrap(),
        before
    );
}
