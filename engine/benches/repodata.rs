//! The repodata benchmark: a conda-forge-sized synthetic channel (`engine::forge`, about
//! 520,000 records in `linux-64` and `noarch`) served over HTTP on loopback by the engine's
//! static server (`Cache-Control: max-age=0`, so every warm solve revalidates its cache
//! first), and a twenty-spec request of the tail solved as the solve Job does (`solve::solve`
//! with a fresh gateway and the shared repodata cache), cold (empty cache) and warm, from
//! each form a channel serves: CEP-16 shards, `repodata.json.zst`, plain `repodata.json`.
//! The baseline is py-rattler solving the same request from the same server with its own
//! persistent cache, in the same run. Run it through `scripts/bench-repodata.sh`.
//!
//! Environment: `BENCH_QUICK=1` (a channel of about 70,000 records, fewer runs);
//! `BENCH_PYTHON` (a Python with py-rattler; the baseline is skipped without it);
//! `BENCH_SCRIPTS` (default `scripts/bench`); `BENCH_DATA` (where the channel is kept between
//! runs); `BENCH_RUNS` (runs per figure, median).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use conda_store_engine::forge::{ForgeChannel, ForgeSize, write_forge_channel};
use conda_store_engine::solve::{SolveRequest, solve};
use conda_store_engine::static_http::StaticServer;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The channel, generated once per size into `data`.
fn channel(data: &Path, size: ForgeSize) -> Result<ForgeChannel, Error> {
    let dir = data.join(format!(
        "forge-{}-{}-{}",
        size.linux_names, size.noarch_names, size.seed
    ));
    let marker = dir.join(".complete");
    if !marker.exists() {
        let start = Instant::now();
        let c = write_forge_channel(&dir, size)?;
        std::fs::write(&marker, serde_json::to_vec(&c.request)?)?;
        println!(
            "generated {} records in {:.1} s",
            c.records,
            start.elapsed().as_secs_f64()
        );
    }
    let request: Vec<String> = serde_json::from_slice(&std::fs::read(&marker)?)?;
    Ok(ForgeChannel {
        records: (size.linux_names + size.noarch_names) * 10,
        root: dir.canonicalize()?,
        request,
    })
}

/// A view of the channel with only `files` of each subdir (symbolic links), so the server
/// offers one form of repodata.
fn view(root: &Path, name: &str, files: &[&str]) -> Result<PathBuf, Error> {
    let dir = root.with_extension(name);
    let _ = std::fs::remove_dir_all(&dir);
    for subdir in ["linux-64", "noarch"] {
        std::fs::create_dir_all(dir.join(subdir))?;
        for f in files {
            std::os::unix::fs::symlink(root.join(subdir).join(f), dir.join(subdir).join(f))?;
        }
    }
    Ok(dir)
}

struct Figures {
    cold: f64,
    warm: f64,
    packages: usize,
}

fn ours(
    rt: &tokio::runtime::Runtime,
    url: &str,
    specs: &[String],
    runs: usize,
    scratch: &Path,
) -> Result<Figures, Error> {
    let request = |cache: &Path| SolveRequest {
        channels: vec![url.to_string()],
        specs: specs.to_vec(),
        platforms: vec!["linux-64".into()],
        repodata_cache: Some(cache.to_path_buf()),
        ..Default::default()
    };
    let (mut cold, mut warm, mut packages) = (Vec::new(), Vec::new(), 0);
    let mut cache = PathBuf::new();
    for _ in 0..runs {
        cache = tempfile::tempdir_in(scratch)?.keep();
        let start = Instant::now();
        let s = rt.block_on(solve(&request(&cache)))?;
        cold.push(start.elapsed().as_secs_f64());
        packages = s.platforms["linux-64"].len();
    }
    for _ in 0..runs {
        let start = Instant::now();
        rt.block_on(solve(&request(&cache)))?;
        warm.push(start.elapsed().as_secs_f64());
    }
    Ok(Figures {
        cold: median(&cold),
        warm: median(&warm),
        packages,
    })
}

fn baseline(
    python: &str,
    scripts: &Path,
    url: &str,
    sharded: bool,
    specs: &[String],
    runs: usize,
    scratch: &Path,
) -> Result<(Figures, String), Error> {
    let mut cmd = Command::new(python);
    cmd.arg(scripts.join("repodata_py_rattler.py"))
        .args(["--channel", url, "--runs", &runs.to_string()])
        .arg("--cache-root")
        .arg(scratch);
    if sharded {
        cmd.arg("--sharded");
    }
    let out = cmd.args(specs).output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let times = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Ok((
        Figures {
            cold: median(&times("cold")),
            warm: median(&times("warm")),
            packages: v["packages"].as_u64().unwrap_or(0) as usize,
        },
        format!("py-rattler {}", v["version"].as_str().unwrap_or("?")),
    ))
}

fn main() -> Result<(), Error> {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 3 } else { 5 });
    let size = if quick {
        ForgeSize {
            linux_names: 6_000,
            noarch_names: 1_000,
            seed: 42,
        }
    } else {
        ForgeSize::CONDA_FORGE
    };
    let data = std::env::var("BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("conda-store-bench-data"));
    std::fs::create_dir_all(&data)?;
    let scripts = std::env::var("BENCH_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("scripts/bench"));
    let python = std::env::var("BENCH_PYTHON").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let channel = channel(&data, size)?;
    println!(
        "repodata benchmark: {} records, request of {} specs, {runs} runs per figure (median), \
         served over HTTP on loopback with max-age=0",
        channel.records,
        channel.request.len()
    );
    let scratch = tempfile::tempdir()?;
    let forms = [
        ("sharded", channel.root.clone(), true),
        (
            "zst",
            view(
                &channel.root,
                "zst",
                &["repodata.json", "repodata.json.zst"],
            )?,
            false,
        ),
        (
            "plain",
            view(&channel.root, "plain", &["repodata.json"])?,
            false,
        ),
    ];
    println!(
        "| form | ours cold | ours warm | baseline cold | baseline warm | warm ratio | cold ratio | packages |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut report = serde_json::Map::new();
    for (name, root, sharded) in forms {
        let server = rt.block_on(StaticServer::start(&root, "max-age=0"))?;
        let url = server.url();
        let ours = ours(&rt, &url, &channel.request, runs, scratch.path())?;
        let base = python.as_deref().map(|py| {
            baseline(
                py,
                &scripts,
                &url,
                sharded,
                &channel.request,
                runs,
                scratch.path(),
            )
        });
        let (b, who) = match base {
            Some(Ok((b, who))) => (Some(b), who),
            Some(Err(e)) => (None, format!("baseline failed: {e}")),
            None => (None, "BENCH_PYTHON unset".into()),
        };
        let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3} s"));
        let ratio =
            |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}×", a / b));
        println!(
            "| {name} | {:.3} s | {:.3} s | {} | {} | {} | {} | {}{} |",
            ours.cold,
            ours.warm,
            fmt(b.as_ref().map(|b| b.cold)),
            fmt(b.as_ref().map(|b| b.warm)),
            ratio(ours.warm, b.as_ref().map(|b| b.warm)),
            ratio(ours.cold, b.as_ref().map(|b| b.cold)),
            ours.packages,
            b.as_ref()
                .filter(|b| b.packages != ours.packages)
                .map(|b| format!(" (baseline {})", b.packages))
                .unwrap_or_default(),
        );
        report.insert(
            name.into(),
            json!({
                "cold_s": ours.cold, "warm_s": ours.warm, "packages": ours.packages,
                "baseline_cold_s": b.as_ref().map(|b| b.cold),
                "baseline_warm_s": b.as_ref().map(|b| b.warm),
                "baseline": who,
            }),
        );
    }
    report.insert("records".into(), json!(channel.records));
    println!("{}", Value::Object(report));
    Ok(())
}
