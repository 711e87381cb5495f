//! The pip benchmark: a 33-package pip section (flask, requests, jsonschema, pandas, pyyaml,
//! httpx, tornado, nbformat and their closure; numpy and pandas are binary wheels) resolved and
//! installed from a PEP 503 index of real PyPI wheels served on loopback, into a prefix whose
//! python is the test channel's, with uv's cache warm. Ours is what a build does
//! (`pip::resolve`: stub wheels for the conda packages, two `uv pip compile` runs for the lock's
//! URLs and edges; `pip::install`: the locked URLs by hash), and, separately, the scratch
//! interpreter the solve step installs first. The baseline is uv run by hand on the same index,
//! prefix and cache: `uv pip compile` then `uv pip install -r`, in every other run compiled with
//! another python than the prefix's (as a build's solve and install pods do: uv then queries
//! the install's interpreter, which it had not seen). Runs alternate; medians.
//! Run it through `scripts/bench-pip.sh`, which makes the channel and the index.
//!
//! Environment: `BENCH_CHANNEL` (a channel with python), `BENCH_INDEX` (the index directory),
//! `CONDA_STORE_UV`, `BENCH_RUNS` (default 7).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use conda_store_engine::install::install_records;
use conda_store_engine::pip::{self, PipConfig};
use conda_store_engine::solve::{SolveRequest, solve};
use conda_store_engine::static_http::StaticServer;

type Error = Box<dyn std::error::Error>;

const REQUIREMENTS: &[&str] = &[
    "flask",
    "requests",
    "jsonschema",
    "pandas",
    "pyyaml",
    "httpx",
    "tornado",
    "nbformat",
];

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_path(name: &str) -> Result<PathBuf, Error> {
    Ok(PathBuf::from(std::env::var_os(name).ok_or(format!(
        "{name} is not set (run scripts/bench-pip.sh)"
    ))?))
}

fn uv(uv: &Path, cache: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(uv)
        .args(args)
        .env_clear()
        .env("UV_CACHE_DIR", cache)
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()?;
    if !out.status.success() {
        return Err(format!("uv {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let channel = env_path("BENCH_CHANNEL")?;
    let index_dir = env_path("BENCH_INDEX")?;
    let uv_bin = env_path("CONDA_STORE_UV")?;
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let server = StaticServer::start(&index_dir, "max-age=0").await?;
    let index = format!("{}simple", server.url());
    let work = tempfile::tempdir()?;
    let w = work.path();
    let pkgs = w.join("pkgs");
    let uv_cache = w.join("uv-cache");

    let conda = solve(&SolveRequest {
        channels: vec![channel.to_string_lossy().into_owned()],
        specs: vec!["python".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await?;
    let records = conda.platforms["linux-64"].clone();
    let target = pip::target_for("linux-64", &records)?;
    let fresh_prefix = |name: String| {
        let records = records.clone();
        let (pkgs, prefix) = (pkgs.clone(), w.join(name));
        async move {
            let _ = std::fs::remove_dir_all(&prefix);
            install_records(records, "linux-64", &prefix, &pkgs)
                .await
                .map(|_| prefix)
        }
    };
    let mut cfg = PipConfig::new(&uv_bin);
    cfg.index_url = Some(index.clone());
    cfg.cache_dir = Some(uv_cache.clone());
    let requirements: Vec<String> = REQUIREMENTS.iter().map(|s| s.to_string()).collect();
    let req_in = w.join("requirements.in");
    std::fs::write(&req_in, REQUIREMENTS.join("\n") + "\n")?;

    // Warm uv's cache (both paths share it) and check the section's size.
    let prefix = fresh_prefix("warm".into()).await?;
    let interp = prefix.join("bin/python");
    let locked = pip::resolve(&cfg, &requirements, &interp, &target, Some("2.28")).await?;
    pip::install(&cfg, &prefix, &locked).await?;
    println!(
        "pip section: {} requirements, {} packages",
        REQUIREMENTS.len(),
        locked.len()
    );

    let (mut ours, mut ours_interp, mut by_hand) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_resolve, mut hand_compile, mut by_hand_split) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Ours: the scratch interpreter (as the solve step makes it), then resolve and install.
        let t = Instant::now();
        let scratch = fresh_prefix(format!("scratch-{i}")).await?;
        let interp_s = t.elapsed().as_secs_f64();
        let prefix = fresh_prefix(format!("ours-{i}")).await?;
        let t = Instant::now();
        let locked = pip::resolve(
            &cfg,
            &requirements,
            &scratch.join("bin/python"),
            &target,
            Some("2.28"),
        )
        .await?;
        ours_resolve.push(t.elapsed().as_secs_f64());
        pip::install(&cfg, &prefix, &locked).await?;
        ours.push(t.elapsed().as_secs_f64());
        ours_interp.push(interp_s);

        // By hand: uv pip compile, then uv pip install -r, on one prefix's python (`split`:
        // compiled with another python, as a build's solve and install pods must).
        let split = i % 2 == 1;
        let prefix = fresh_prefix(format!("hand-{i}")).await?;
        let python = prefix.join("bin/python");
        let compile_python = if split {
            fresh_prefix(format!("hand-scratch-{i}"))
                .await?
                .join("bin/python")
        } else {
            python.clone()
        };
        let out = w.join(format!("hand-{i}.txt"));
        let t = Instant::now();
        uv(
            &uv_bin,
            &uv_cache,
            &[
                "pip",
                "compile",
                req_in.to_str().unwrap_or_default(),
                "--python",
                compile_python.to_str().unwrap_or_default(),
                "--python-version",
                &target.version,
                "--python-platform",
                "x86_64-manylinux_2_28",
                "--index-url",
                &index,
                "--no-build",
                "--quiet",
                "-o",
                out.to_str().unwrap_or_default(),
            ],
        )?;
        hand_compile.push(t.elapsed().as_secs_f64());
        uv(
            &uv_bin,
            &uv_cache,
            &[
                "pip",
                "install",
                "--python",
                python.to_str().unwrap_or_default(),
                "--index-url",
                &index,
                "--no-build",
                "--quiet",
                "-r",
                out.to_str().unwrap_or_default(),
            ],
        )?;
        if split {
            by_hand_split.push(t.elapsed().as_secs_f64());
        } else {
            by_hand.push(t.elapsed().as_secs_f64());
        }
    }
    let (o, h, i) = (median(&ours), median(&by_hand), median(&ours_interp));
    println!("| measurement (median of {runs}) | seconds |");
    println!("|---|---|");
    println!("| ours: resolve + install | {o:.3} |");
    println!(
        "| ours: resolve (of which) | {:.3} |",
        median(&ours_resolve)
    );
    println!(
        "| ours: the scratch interpreter (a solve with a python not seen before; kept after) | {i:.3} |"
    );
    println!("| uv by hand: compile + install | {h:.3} |");
    println!(
        "| uv by hand: compile (of which) | {:.3} |",
        median(&hand_compile)
    );
    let hs = median(&by_hand_split);
    println!("| uv by hand, compiled with another python (as solve and install pods) | {hs:.3} |");
    println!("| ratio ours / by hand | {:.2}x |", o / h);
    println!(
        "| ratio ours with the interpreter / by hand | {:.2}x |",
        (o + i) / h
    );
    println!(
        "{}",
        serde_json::json!({"bench": "pip", "packages": locked.len(), "ours_s": o,
            "interpreter_s": i, "by_hand_s": h, "by_hand_split_s": hs, "ratio": o / h,
            "ratio_with_interpreter": (o + i) / h, "ratio_split": o / hs})
    );
    Ok(())
}
