//! The build engine's benchmark: solve, install, pack and image figures, each next to a baseline
//! measured in the same run (py-rattler for the solve; conda-pack and GNU `tar | zstd` for the
//! pack). Run it through
//! `scripts/bench.sh`, which installs the baselines; see that script for the options.
//!
//! Environment:
//! - `BENCH_QUICK=1`: only the 20k-record solve, fewer runs.
//! - `BENCH_PYTHON`: a Python with py-rattler (solve baseline; skipped when unset).
//! - `BENCH_CONDA_PACK`: the `conda-pack` executable (pack baseline; skipped when unset).
//! - `BENCH_SCRIPTS`: the directory of the baseline scripts (default `scripts/bench`).
//! - `BENCH_DATA`: where generated channels are kept between runs (default: a temporary dir).
//! - `BENCH_WORKDIR`: where prefixes and archives are written (default: the system temp dir).
//! - `BENCH_SOLVE_RUNS`, `BENCH_INSTALL_RUNS`, `BENCH_PACK_RUNS`: runs per figure (median).
//! - `BENCH_PACKAGES`, `BENCH_FILES`, `BENCH_FILE_BYTES`: the install channel's shape
//!   (packages, files per package, mean file size).
//! - `BENCH_MIXED_FILES`: files per package (4 packages) of the mixed-size pack prefix.
//! - `BENCH_SOLVE_SIZES`: comma-separated record counts (default `20000,200000`).

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    time::{Duration, Instant},
};

use conda_store_engine::{
    channel::{SplitMix, index_channel, write_synthetic_repodata},
    image::{ImageOptions, LayerCache, build_image},
    install::install_lockfile,
    lockfile::write_lockfile,
    pack::{Compression, SegmentCache, pack, pack_with_cache},
    solve::{SolveRequest, solve},
};
use rattler_conda_types::{
    NoArchType, PackageName, VersionWithSource,
    compression_level::CompressionLevel,
    package::{
        BuildString, FileMode, IndexJson, PathType, PathsEntry, PathsJson, PrefixPlaceholder,
    },
};
use rattler_digest::Sha256;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

/// The virtual packages of every solve, ours and the baseline's.
const VIRTUAL_PACKAGES: &[&str] = &["__unix=0=0", "__linux=5.10=0", "__glibc=2.28=0"];
/// The placeholder written in one text file per install package.
const PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3/placeholder_placeholder_placeholder";
const MB: f64 = 1_000_000.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One line of the table.
struct Row {
    figure: String,
    ours: String,
    baseline: String,
    ratio: String,
    goal: String,
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3} {unit}"))
}

fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let solve_runs = env_usize("BENCH_SOLVE_RUNS", if quick { 3 } else { 5 });
    let install_runs = env_usize("BENCH_INSTALL_RUNS", if quick { 3 } else { 5 });
    let pack_runs = env_usize("BENCH_PACK_RUNS", if quick { 1 } else { 3 });
    let sizes: Vec<usize> = match std::env::var("BENCH_SOLVE_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if quick => vec![20_000],
        Err(_) => vec![20_000, 200_000],
    };
    let packages = env_usize("BENCH_PACKAGES", 20);
    let files = env_usize("BENCH_FILES", 2_500);
    let file_bytes = env_usize("BENCH_FILE_BYTES", 5_000);
    let python = std::env::var_os("BENCH_PYTHON").map(PathBuf::from);
    let conda_pack = std::env::var_os("BENCH_CONDA_PACK").map(PathBuf::from);
    let scripts = std::env::var_os("BENCH_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench"));
    let work = match std::env::var_os("BENCH_WORKDIR") {
        Some(d) => {
            fs::create_dir_all(&d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let data = std::env::var_os("BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().join("data"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "engine benchmark: quick={quick}, {threads} cores, solve runs {solve_runs}, install runs \
         {install_runs}, pack runs {pack_runs}"
    );

    let mut rows = Vec::new();
    let mut report = serde_json::Map::new();

    // 1. Solve.
    let mut solves = Vec::new();
    for &records in &sizes {
        let dir = data.join(format!("synthetic-{records}"));
        let channel = write_synthetic_repodata(&dir, records, 42)?;
        let request = SolveRequest {
            channels: vec![channel.url.clone()],
            specs: channel.suggested_specs.clone(),
            platforms: vec!["linux-64".into()],
            virtual_packages: BTreeMap::from([(
                "linux-64".to_string(),
                VIRTUAL_PACKAGES.iter().map(|s| s.to_string()).collect(),
            )]),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut solved = 0;
        for _ in 0..solve_runs {
            let start = Instant::now();
            let solution = rt.block_on(solve(&request))?;
            times.push(secs(start.elapsed()));
            solved = solution.platforms["linux-64"].len();
        }
        let ours = median(&times);
        let (baseline, baseline_packages, note) = match &python {
            None => (None, None, Some("BENCH_PYTHON unset".to_string())),
            Some(py) => {
                let mut cmd = Command::new(py);
                cmd.arg(scripts.join("solve_py_rattler.py"))
                    .args(["--channel", &channel.url, "--platform", "linux-64"])
                    .args(["--runs", &solve_runs.to_string()]);
                for v in VIRTUAL_PACKAGES {
                    cmd.args(["--virtual-package", v]);
                }
                cmd.args(&channel.suggested_specs);
                match run_json(&mut cmd) {
                    Ok(v) => {
                        let t: Vec<f64> = v["seconds"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_f64).collect())
                            .unwrap_or_default();
                        (
                            Some(median(&t)),
                            v["packages"].as_u64(),
                            v["version"].as_str().map(|s| format!("py-rattler {s}")),
                        )
                    }
                    Err(e) => (None, None, Some(format!("py-rattler failed: {e}"))),
                }
            }
        };
        let ratio = baseline.map(|b| ours / b);
        println!(
            "solve {records} records (specs {:?}): ours {ours:.3}s ({solved} packages), \
             baseline {} ({} packages){}",
            channel.suggested_specs,
            fmt_opt(baseline, "s"),
            baseline_packages.map_or("?".into(), |p| p.to_string()),
            note.as_ref().map_or(String::new(), |n| format!(" [{n}]")),
        );
        rows.push(Row {
            figure: format!("solve {}k records (median of {solve_runs})", records / 1000),
            ours: format!("{ours:.3} s"),
            baseline: format!(
                "{} {}",
                fmt_opt(baseline, "s"),
                note.clone().unwrap_or_default()
            ),
            ratio: ratio.map_or("n/a".into(), |r| format!("{r:.2}x time")),
            goal: "ours/baseline <= 1.2".into(),
        });
        solves.push(json!({
            "records": channel.records,
            "specs": channel.suggested_specs,
            "runs": solve_runs,
            "ours_seconds": ours,
            "ours_packages": solved,
            "baseline": note,
            "baseline_seconds": baseline,
            "baseline_packages": baseline_packages,
            "ratio": ratio,
        }));
    }
    report.insert("solve".into(), Value::Array(solves));

    // 2. Install from a warm package cache.
    let start = Instant::now();
    let (channel_url, payload_files) = install_channel(
        &data.join(format!("files-{packages}x{files}x{file_bytes}")),
        packages,
        files,
        Sizes::Uniform { mean: file_bytes },
    )?;
    println!(
        "install channel: {packages} packages x {files} files (~{file_bytes} B), ready in {:.1}s",
        secs(start.elapsed())
    );
    let solution = rt.block_on(solve(&SolveRequest {
        channels: vec![channel_url],
        specs: vec!["bench-all".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    }))?;
    let lock = write_lockfile(&solution)?;
    let cache = work.path().join("pkgs");
    let warm_prefix = work.path().join("prefix-warm");
    let start = Instant::now();
    rt.block_on(install_lockfile(&lock, "linux-64", &warm_prefix, &cache))?;
    let cold = secs(start.elapsed());
    let mut times = Vec::new();
    for i in 0..install_runs {
        let prefix = work.path().join(format!("prefix-{i}"));
        let start = Instant::now();
        rt.block_on(install_lockfile(&lock, "linux-64", &prefix, &cache))?;
        times.push(secs(start.elapsed()));
        fs::remove_dir_all(&prefix)?;
    }
    let install = median(&times);
    let files_per_s = payload_files as f64 / install;
    // The floor on this disk: `cp -al` of an installed prefix, hard-linking the same files.
    let mut floor_times = Vec::new();
    for i in 0..install_runs {
        let dest = work.path().join(format!("prefix-cp-{i}"));
        let start = Instant::now();
        let status = Command::new("cp")
            .arg("-al")
            .arg(&warm_prefix)
            .arg(&dest)
            .status()?;
        floor_times.push(secs(start.elapsed()));
        if !status.success() {
            return Err("cp -al failed".into());
        }
        fs::remove_dir_all(&dest)?;
    }
    let floor = median(&floor_times);
    println!(
        "install {payload_files} files: cold cache {cold:.2}s, warm median {install:.3}s = {files_per_s:.0} files/s; cp -al {floor:.3}s"
    );
    rows.push(Row {
        figure: format!("install {payload_files} files, warm cache (median of {install_runs})"),
        ours: format!("{files_per_s:.0} files/s ({install:.3} s; cold cache {cold:.2} s)"),
        baseline: format!("`cp -al` of the installed prefix {floor:.3} s"),
        ratio: format!("{:.2}× time", install / floor),
        goal: "<= 1.5".into(),
    });
    report.insert(
        "install".into(),
        json!({"files": payload_files, "packages": packages + 1, "runs": install_runs,
               "warm_seconds": install, "files_per_second": files_per_s, "cold_seconds": cold,
               "cp_al_seconds": floor}),
    );

    // 3. Pack: the installed small-file prefix, then a prefix with a realistic spread of sizes.
    let out = work.path().join("out");
    fs::create_dir_all(&out)?;
    let (prefix_bytes, _) = tree_size(&warm_prefix)?;
    let mut packs = Vec::new();
    // The next environment of the same packages (a rebuild): installed from the same cache.
    let rebuild = work.path().join("prefix-rebuild");
    rt.block_on(install_lockfile(&lock, "linux-64", &rebuild, &cache))?;
    packs.push(bench_pack(
        &warm_prefix,
        &rebuild,
        "small files",
        &out,
        pack_runs,
        conda_pack.as_deref(),
        &mut rows,
    )?);
    let mixed_files = env_usize("BENCH_MIXED_FILES", 5_000);
    let (mixed_url, _) = install_channel(
        &data.join(format!("mixed-4x{mixed_files}")),
        4,
        mixed_files,
        Sizes::LogNormal {
            median: 4096.0,
            sigma: 1.9,
        },
    )?;
    let mixed_lock = write_lockfile(&rt.block_on(solve(&SolveRequest {
        channels: vec![mixed_url],
        specs: vec!["bench-all".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    }))?)?;
    let mixed_prefix = work.path().join("prefix-mixed");
    rt.block_on(install_lockfile(
        &mixed_lock,
        "linux-64",
        &mixed_prefix,
        &cache,
    ))?;
    let mixed_rebuild = work.path().join("prefix-mixed-rebuild");
    rt.block_on(install_lockfile(
        &mixed_lock,
        "linux-64",
        &mixed_rebuild,
        &cache,
    ))?;
    packs.push(bench_pack(
        &mixed_prefix,
        &mixed_rebuild,
        "mixed sizes",
        &out,
        pack_runs,
        conda_pack.as_deref(),
        &mut rows,
    )?);
    fs::remove_dir_all(&mixed_prefix)?;
    fs::remove_dir_all(&mixed_rebuild)?;
    report.insert("pack".into(), Value::Array(packs));

    // 4. Image build of the same prefix.
    let mut times = Vec::new();
    let mut image_size = 0;
    let mut layers = 0;
    for i in 0..pack_runs {
        let layout = out.join(format!("layout-{i}"));
        let start = Instant::now();
        let summary = build_image(
            &warm_prefix,
            "/opt/conda/envs/bench",
            &layout,
            &ImageOptions::new("bench"),
        )?;
        times.push(secs(start.elapsed()));
        image_size = summary.total_size;
        layers = summary.layers.len();
        fs::remove_dir_all(&layout)?;
    }
    let t = median(&times);
    let image_mbs = prefix_bytes as f64 / MB / t;
    println!(
        "image: {layers} layers, {:.1} MB in {t:.2}s = {image_mbs:.0} MB/s",
        image_size as f64 / MB
    );
    rows.push(Row {
        figure: format!("image (gzip-3, {layers} layers)"),
        ours: format!("{image_mbs:.1} MB/s"),
        baseline: String::new(),
        ratio: String::new(),
        goal: String::new(),
    });
    // The rebuild's image, with the layer cache the first prefix's image filled (afresh for
    // each run, so no run finds the layers of the rebuild itself).
    let mut rebuild_times = Vec::new();
    let mut reused = 0;
    for i in 0..pack_runs {
        let dir = out.join("layer-cache");
        let mut cached = ImageOptions::new("bench");
        cached.layer_cache = Some(LayerCache::new(&dir)?);
        let fill = out.join("layout-fill");
        build_image(&warm_prefix, "/opt/conda/envs/bench", &fill, &cached)?;
        fs::remove_dir_all(&fill)?;
        let layout = out.join(format!("layout-rebuild-{i}"));
        let start = Instant::now();
        let summary = build_image(&rebuild, "/opt/conda/envs/bench", &layout, &cached)?;
        rebuild_times.push(secs(start.elapsed()));
        reused = summary.reused_layers;
        fs::remove_dir_all(&layout)?;
        fs::remove_dir_all(&dir)?;
    }
    fs::remove_dir_all(&rebuild)?;
    let rebuild_t = median(&rebuild_times);
    let rebuild_mbs = prefix_bytes as f64 / MB / rebuild_t;
    println!(
        "image of a rebuild, layer cache filled: {reused} of {layers} layers reused, {rebuild_t:.2}s = \
         {rebuild_mbs:.0} MB/s"
    );
    rows.push(Row {
        figure: "image: a rebuild, packages imaged before".into(),
        ours: format!("{rebuild_mbs:.1} MB/s"),
        baseline: format!("{image_mbs:.1} MB/s (first image)"),
        ratio: format!("{:.1}x speed", rebuild_mbs / image_mbs),
        goal: String::new(),
    });
    report.insert(
        "image".into(),
        json!({"seconds": t, "mb_per_second": image_mbs, "bytes": image_size, "layers": layers,
               "rebuild_seconds": rebuild_t, "rebuild_mb_per_second": rebuild_mbs,
               "reused_layers": reused}),
    );

    print_table(&rows);
    report.insert("quick".into(), Value::Bool(quick));
    report.insert("cores".into(), json!(threads));
    println!("{}", Value::Object(report));
    Ok(())
}

/// Packs `prefix` with zstd and gzip, ours and conda-pack's, adding a table row per format;
/// then packs `rebuild` (the same packages installed again from the same package cache) with
/// the segment cache the first pack filled. Returns the figures as JSON.
fn bench_pack(
    prefix: &Path,
    rebuild: &Path,
    name: &str,
    out: &Path,
    pack_runs: usize,
    conda_pack: Option<&Path>,
    rows: &mut Vec<Row>,
) -> Result<Value, Error> {
    let (prefix_bytes, prefix_files) = tree_size(prefix)?;
    let embedded = prefix.to_str().ok_or("non-UTF-8 work dir")?.to_string();
    let mut pack_figures = serde_json::Map::new();
    let mut zstd_mbs = None;
    let mut gzip_mbs = None;
    for (label, compression) in [
        ("zstd", Compression::default()),
        ("gzip-4", Compression::Gzip { level: 4 }),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..pack_runs {
            let path = out.join(format!("ours.{}", compression.extension()));
            let start = Instant::now();
            let file = BufWriter::new(fs::File::create(&path)?);
            let summary = pack(prefix, &embedded, compression, file)?;
            times.push(secs(start.elapsed()));
            size = summary.bytes_out;
        }
        let t = median(&times);
        let mbs = prefix_bytes as f64 / MB / t;
        println!(
            "pack {name} ({label}): {:.0} MB in {t:.2}s = {mbs:.0} MB/s, archive {:.1} MB",
            prefix_bytes as f64 / MB,
            size as f64 / MB
        );
        if label == "zstd" {
            zstd_mbs = Some(mbs);
        } else {
            gzip_mbs = Some(mbs);
        }
        pack_figures.insert(
            label.into(),
            json!({"seconds": t, "mb_per_second": mbs, "archive_bytes": size}),
        );
    }
    for (label, compression) in [
        ("zstd", Compression::default()),
        ("gzip-4", Compression::Gzip { level: 4 }),
    ] {
        let dir = out.join(format!("segments-{label}"));
        let cache = SegmentCache::new(&dir)?;
        let rebuild_embedded = rebuild.to_str().ok_or("non-UTF-8 work dir")?;
        let first = pack_with_cache(prefix, &embedded, compression, Some(&cache), io::sink())?;
        let mut times = Vec::new();
        let mut summary = None;
        for _ in 0..pack_runs {
            let path = out.join(format!("rebuild.{}", compression.extension()));
            let start = Instant::now();
            let file = BufWriter::new(fs::File::create(&path)?);
            let s = pack_with_cache(rebuild, rebuild_embedded, compression, Some(&cache), file)?;
            times.push(secs(start.elapsed()));
            summary = Some(s);
        }
        fs::remove_dir_all(&dir)?;
        let summary = summary.ok_or("BENCH_PACK_RUNS is 0")?;
        let t = median(&times);
        let mbs = prefix_bytes as f64 / MB / t;
        let cold = if label == "zstd" { zstd_mbs } else { gzip_mbs };
        println!(
            "pack {name} ({label}) of a rebuild, segment cache filled: {t:.2}s = {mbs:.0} MB/s, \
             {} of {} segments reused, archive {:.1} MB (first pack {:.1} MB)",
            summary.reused_segments,
            summary.segments,
            summary.bytes_out as f64 / MB,
            first.bytes_out as f64 / MB,
        );
        rows.push(Row {
            figure: format!("pack {label}, {name}: a rebuild, packages packed before"),
            ours: format!("{mbs:.1} MB/s"),
            baseline: fmt_opt(cold, "MB/s (first pack)"),
            ratio: cold.map_or("n/a".into(), |c| format!("{:.1}x speed", mbs / c)),
            goal: if label == "zstd" {
                ">= 300 MB/s".into()
            } else {
                String::new()
            },
        });
        pack_figures.insert(
            format!("{label}_rebuild"),
            json!({"seconds": t, "mb_per_second": mbs, "segments": summary.segments,
                   "reused_segments": summary.reused_segments}),
        );
    }
    let mut baselines = serde_json::Map::new();
    for (label, ext) in [("zstd", "tar.zst"), ("gzip-4", "tar.gz")] {
        let result = match conda_pack {
            None => Err("BENCH_CONDA_PACK unset".to_string()),
            Some(exe) => {
                let mut times = Vec::new();
                let mut result = Ok(());
                let path = out.join(format!("conda-pack.{ext}"));
                for _ in 0..pack_runs {
                    let _ = fs::remove_file(&path);
                    let start = Instant::now();
                    let output = Command::new(exe)
                        .arg("-p")
                        .arg(prefix)
                        .arg("-o")
                        .arg(&path)
                        .args(["--n-threads", "-1", "--quiet", "--force"])
                        .output();
                    let elapsed = secs(start.elapsed());
                    match output {
                        Ok(o) if o.status.success() => times.push(elapsed),
                        Ok(o) => {
                            result = Err(format!(
                                "conda-pack failed: {}",
                                String::from_utf8_lossy(&o.stderr).trim()
                            ));
                            break;
                        }
                        Err(e) => {
                            result = Err(format!("conda-pack did not run: {e}"));
                            break;
                        }
                    }
                }
                result.map(|()| {
                    let size = fs::metadata(&path).map_or(0, |m| m.len());
                    (median(&times), size)
                })
            }
        };
        let ours = if label == "zstd" { zstd_mbs } else { gzip_mbs };
        match result {
            Ok((t, size)) => {
                let mbs = prefix_bytes as f64 / MB / t;
                let ratio = ours.map(|o| o / mbs);
                println!(
                    "conda-pack {name} ({label}): {t:.2}s = {mbs:.0} MB/s, archive {:.1} MB",
                    size as f64 / MB
                );
                rows.push(Row {
                    figure: format!(
                        "pack {label}, {name} ({:.0} MB, {prefix_files} files)",
                        prefix_bytes as f64 / MB
                    ),
                    ours: fmt_opt(ours, "MB/s"),
                    baseline: format!("{mbs:.1} MB/s (conda-pack)"),
                    ratio: ratio.map_or("n/a".into(), |r| format!("{r:.1}x speed")),
                    goal: if label == "zstd" {
                        ">= 300 MB/s".into()
                    } else {
                        String::new()
                    },
                });
                baselines.insert(
                    label.into(),
                    json!({"seconds": t, "mb_per_second": mbs, "archive_bytes": size, "ratio": ratio}),
                );
            }
            Err(reason) => {
                println!("conda-pack {name} ({label}): {reason}");
                rows.push(Row {
                    figure: format!(
                        "pack {label}, {name} ({:.0} MB, {prefix_files} files)",
                        prefix_bytes as f64 / MB
                    ),
                    ours: fmt_opt(ours, "MB/s"),
                    baseline: format!("n/a: {}", reason.lines().last().unwrap_or("")),
                    ratio: "n/a".into(),
                    goal: if label == "zstd" {
                        ">= 300 MB/s".into()
                    } else {
                        String::new()
                    },
                });
                baselines.insert(label.into(), json!({"error": reason}));
            }
        }
    }
    // The compressor's own ceiling on this machine: GNU tar piped into the zstd CLI at the same
    // level, one thread per core, which walks and compresses the same files.
    let tar_zstd = {
        let mut times = Vec::new();
        let mut result = Ok(());
        for _ in 0..pack_runs {
            let start = Instant::now();
            let status = Command::new("sh")
                .arg("-c")
                .arg("tar -C \"$1\" -cf - . | zstd -q -3 -T0 -c > /dev/null")
                .arg("sh")
                .arg(prefix)
                .status();
            match status {
                Ok(s) if s.success() => times.push(secs(start.elapsed())),
                Ok(s) => {
                    result = Err(format!("tar | zstd exited with {s}"));
                    break;
                }
                Err(e) => {
                    result = Err(format!("tar | zstd did not run: {e}"));
                    break;
                }
            }
        }
        result.map(|()| median(&times))
    };
    let tar_zstd_json = match tar_zstd {
        Ok(t) => {
            let mbs = prefix_bytes as f64 / MB / t;
            let ratio = zstd_mbs.map(|o| o / mbs);
            println!("tar | zstd -3 -T0 {name}: {t:.2}s = {mbs:.0} MB/s");
            rows.push(Row {
                figure: format!("pack zstd, {name}: vs GNU tar | zstd -3 -T0"),
                ours: fmt_opt(zstd_mbs, "MB/s"),
                baseline: format!("{mbs:.1} MB/s (tar | zstd)"),
                ratio: ratio.map_or("n/a".into(), |r| format!("{r:.2}x speed")),
                goal: String::new(),
            });
            json!({"seconds": t, "mb_per_second": mbs, "ratio": ratio})
        }
        Err(reason) => {
            println!("tar | zstd {name}: {reason}");
            json!({"error": reason})
        }
    };
    Ok(
        json!({"prefix": name, "prefix_bytes": prefix_bytes, "prefix_files": prefix_files,
              "runs": pack_runs, "ours": pack_figures, "conda_pack": baselines,
              "tar_zstd": tar_zstd_json}),
    )
}

fn run_json(cmd: &mut Command) -> Result<Value, String> {
    let output = cmd.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("{e}: {stdout}"))
}

fn print_table(rows: &[Row]) {
    let header = ["figure", "ours", "baseline", "ratio", "goal"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.as_str(),
                r.ours.as_str(),
                r.baseline.as_str(),
                r.ratio.as_str(),
                r.goal.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[&str; 5]| {
        let cols: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", cols.join(" | "));
    };
    println!();
    line(&header);
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", sep.join("-|-"));
    for row in &cells {
        line(row);
    }
    println!();
}

/// Total bytes of regular files (and their count) under `dir`.
fn tree_size(dir: &Path) -> Result<(u64, u64), Error> {
    let mut bytes = 0;
    let mut count = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            bytes += entry.metadata()?.len();
            count += 1;
        }
    }
    Ok((bytes, count))
}

/// Text-like content of about `len` bytes: lines of words from a small vocabulary and hex
/// numbers, so it compresses like source code (about 3x with zstd), not like zeros.
fn file_content(rng: &mut SplitMix, len: usize) -> String {
    const WORDS: &[&str] = &[
        "def", "return", "import", "self", "value", "for", "in", "if", "else", "None", "class",
        "lambda", "data", "index", "config", "prefix", "path", "yield", "with", "as",
    ];
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        let r = rng.next_u64();
        for k in 0..4 {
            s.push_str(WORDS[((r >> (k * 5)) & 0x1f) as usize % WORDS.len()]);
            s.push(' ');
        }
        s.push_str(&format!("{:x}\n", r >> 24));
    }
    s
}

/// A channel of `packages` noarch packages with `files` files each (plus `bench-all`, which
/// depends on all of them), written once into `dir` (kept: a later run reuses it). Returns its
/// URL and the number of payload files `bench-all` installs.
fn install_channel(
    dir: &Path,
    packages: usize,
    files: usize,
    sizes: Sizes,
) -> Result<(String, usize), Error> {
    let done = dir.join(".complete");
    let total = packages * files;
    let url = |d: &Path| -> Result<String, Error> {
        Ok(url::Url::from_directory_path(d.canonicalize()?)
            .map_err(|()| "not absolute")?
            .to_string())
    };
    if done.is_file() {
        return Ok((url(dir)?, total));
    }
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let noarch = dir.join("noarch");
    fs::create_dir_all(&noarch)?;
    let names: Vec<String> = (0..packages)
        .map(|i| format!("bench-files-{i:03}"))
        .collect();
    let jobs: Vec<(String, Vec<String>, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), vec![], i))
        .chain(std::iter::once((
            "bench-all".to_string(),
            names.clone(),
            usize::MAX,
        )))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|s| -> Result<(), String> {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|batch| {
                let noarch = &noarch;
                s.spawn(move || -> Result<(), String> {
                    for (name, depends, seed) in batch {
                        let n = if *seed == usize::MAX { 0 } else { files };
                        write_package(noarch, name, depends, n, sizes, *seed as u64)
                            .map_err(|e| format!("{name}: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "writer panicked".to_string())??;
        }
        Ok(())
    })?;
    index_channel(dir)?;
    fs::write(&done, b"")?;
    Ok((url(dir)?, total))
}

/// How big the payload files of a bench package are.
#[derive(Clone, Copy)]
enum Sizes {
    /// Uniform between `mean / 2` and `mean * 3 / 2`.
    Uniform { mean: usize },
    /// Log-normal, capped at 16 MiB. A real environment (Python, NumPy, SciPy) has a median file
    /// of a few kB (sources, metadata) and a long tail of shared libraries that makes the mean
    /// several times larger: median 4 kB with sigma 1.9 gives a mean of about 24 kB.
    LogNormal { median: f64, sigma: f64 },
}

impl Sizes {
    fn draw(self, rng: &mut SplitMix) -> usize {
        match self {
            Sizes::Uniform { mean } => mean / 2 + (rng.next_u64() as usize % mean.max(1)),
            Sizes::LogNormal { median, sigma } => {
                // Box-Muller from two uniforms in (0, 1].
                let u =
                    |r: &mut SplitMix| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                let (u1, u2) = (u(rng), u(rng));
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                ((median * (sigma * z).exp()) as usize).clamp(1, 16 << 20)
            }
        }
    }
}

/// Write `noarch/<name>-1.0-0.conda` with `files` payload files of sizes drawn from `sizes`
/// (the first is a text file holding the prefix placeholder) spread over 50 directories.
fn write_package(
    out_dir: &Path,
    name: &str,
    depends: &[String],
    files: usize,
    sizes: Sizes,
    seed: u64,
) -> Result<(), Error> {
    let staging = out_dir.join(format!(".staging-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let info = staging.join("info");
    fs::create_dir_all(&info)?;
    let mut rng = SplitMix(seed.wrapping_mul(7919).wrapping_add(1));
    let mut entries = Vec::new();
    let mut paths = Vec::new();
    for f in 0..files {
        let rel = format!("lib/{name}/d{:02}/f{f:05}.py", f % 50);
        let len = sizes.draw(&mut rng);
        let mut content = file_content(&mut rng, len);
        let has_prefix = f == 0;
        if has_prefix {
            content = format!("PREFIX = \"{PLACEHOLDER}\"\n{content}");
        }
        let path = staging.join(&rel);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        fs::write(&path, &content)?;
        entries.push(PathsEntry {
            relative_path: PathBuf::from(&rel),
            no_link: false,
            path_type: PathType::HardLink,
            prefix_placeholder: has_prefix.then(|| PrefixPlaceholder {
                file_mode: FileMode::Text,
                placeholder: PLACEHOLDER.to_string(),
                experimental_offsets: None,
            }),
            sha256: Some(rattler_digest::compute_bytes_digest::<Sha256>(
                content.as_bytes(),
            )),
            size_in_bytes: Some(content.len() as u64),
        });
        paths.push(path);
    }
    entries.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    let files_list: String = entries
        .iter()
        .map(|e| format!("{}\n", e.relative_path.display()))
        .collect();
    let timestamp = jiff::Timestamp::from_second(1_700_000_000)?;
    let index = IndexJson {
        arch: None,
        build: BuildString::from_str("0")?,
        build_number: 0,
        constrains: vec![],
        depends: depends.to_vec(),
        extra_depends: Default::default(),
        features: None,
        flags: vec![],
        license: Some("BSD-3-Clause".into()),
        license_family: None,
        name: PackageName::from_str(name)?,
        noarch: NoArchType::generic(),
        platform: None,
        purls: None,
        python_site_packages_path: None,
        repodata_revision: None,
        subdir: Some("noarch".into()),
        timestamp: Some(timestamp.into()),
        track_features: vec![],
        version: VersionWithSource::from_str("1.0")?,
    };
    let paths_json = PathsJson {
        paths: entries,
        paths_version: 1,
    };
    for (file, text) in [
        ("paths.json", serde_json::to_string(&paths_json)?),
        ("index.json", serde_json::to_string(&index)?),
        ("files", files_list),
    ] {
        let p = info.join(file);
        fs::write(&p, text)?;
        paths.push(p);
    }
    if files > 0 {
        let p = info.join("has_prefix");
        fs::write(&p, format!("{PLACEHOLDER} text lib/{name}/d00/f00000.py\n"))?;
        paths.push(p);
    }
    paths.sort();
    let stem = format!("{name}-1.0-0");
    let out = fs::File::create(out_dir.join(format!("{stem}.conda")))?;
    rattler_package_streaming::write::write_conda_package(
        std::io::BufWriter::new(out),
        &staging,
        &paths,
        CompressionLevel::Numeric(3),
        Some(1),
        &stem,
        Some(&timestamp),
        None,
    )?;
    fs::remove_dir_all(&staging)?;
    let _ = std::io::stdout().flush();
    Ok(())
}
