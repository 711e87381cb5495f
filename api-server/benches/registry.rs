//! The registry's blob throughput: a 1 GiB layer pulled through the gateway (`curl` on
//! loopback) from the local and the S3 backend (moto), each against reading the same object
//! directly from storage in the same run, with the gateway's peak RSS growth during the pull.
//!
//!   bash scripts/bench-registry.sh       # BENCH_BLOB_MIB=1024
//!
//! S3 blobs are answered with a redirect (307) to a presigned URL: the pull then reads from the
//! S3 server itself, and the figure includes the redirect.

mod support;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use conda_store_api_server::config::ServeArgs;
use conda_store_api_server::{build_app, routes};
use conda_store_crds::{Environment, EnvironmentSpec, Namespace, NamespaceSpec};
use conda_store_storage::Key;
use conda_store_storage::testing::S3Server;
use kube::runtime::watcher::Event;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `mib` MiB of incompressible bytes; returns the hex sha256.
fn make_blob(path: &std::path::Path, mib: usize) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&chunk);
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
    hex::encode(hasher.finalize())
}

struct Row {
    backend: &'static str,
    direct: f64,
    gateway: f64,
    rss_growth_mib: f64,
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mib: usize = std::env::var("BENCH_BLOB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("layer");
    eprintln!("writing a {mib} MiB blob");
    let hex = make_blob(&blob, mib);
    let bytes = (mib as f64) * 1024.0 * 1024.0;
    let s3 = S3Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for backend in ["local", "s3"] {
        let row = rt.block_on(async {
            let db = format!(
                "sqlite://{}",
                dir.path().join(format!("{backend}.db")).display()
            );
            let storage_dir = dir.path().join("artifacts");
            let endpoint = format!("http://127.0.0.1:{}", s3.port);
            let mut argv = vec![
                "bench".to_string(),
                "--database-url".into(),
                db,
                "--secret-key".into(),
                "bench-secret-bench-secret-bench-secret".into(),
            ];
            if backend == "local" {
                argv.extend(["--storage-dir".into(), storage_dir.display().to_string()]);
            } else {
                // SAFETY: set before any other thread reads the environment for credentials.
                unsafe {
                    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
                    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
                    std::env::remove_var("AWS_CA_BUNDLE");
                }
                argv.extend([
                    "--storage".into(),
                    "s3".into(),
                    "--s3-endpoint".into(),
                    endpoint,
                    "--s3-bucket".into(),
                    "bench".into(),
                ]);
            }
            let args = Args::parse_from(argv);
            let client =
                kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                    .unwrap();
            let (app, mut w) = build_app(&args.serve, client).await.unwrap();
            if backend == "s3" {
                conda_store_storage::S3Store::new(&args.serve.storage.s3_config())
                    .ensure_bucket()
                    .await
                    .unwrap();
            }
            let key = Key::new(&format!("blobs/sha256/{hex}")).unwrap();
            eprintln!("{backend}: storing the blob");
            app.storage.put_file(&key, &blob).await.unwrap();

            // Direct: the storage client reads the object to the end.
            let t = Instant::now();
            let mut read = app.storage.get(&key, None).await.unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                let k = read.body.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            assert_eq!(n as f64, bytes);
            let direct = bytes / t.elapsed().as_secs_f64() / 1e6;

            let ns = Namespace::new("bench", NamespaceSpec::default());
            let mut env = Environment::new("env", EnvironmentSpec::default());
            env.metadata.namespace = Some("bench".into());
            w.namespaces.apply_watcher_event(&Event::Apply(ns));
            w.environments.apply_watcher_event(&Event::Apply(env));
            app.changed_now();
            let token = support::admin_token(&app);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app: Arc<_> = app;
            tokio::spawn(routes::serve(listener, app, std::future::pending()));

            // Through the gateway, sampling this process's RSS (the gateway runs in it).
            let base = rss_kib();
            let peak = Arc::new(AtomicU64::new(base));
            let done = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (peak, done) = (peak.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_kib(), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            };
            let url = format!("http://{addr}/v2/bench/env/blobs/sha256:{hex}");
            let t = Instant::now();
            let out = tokio::task::spawn_blocking(move || {
                // Authorization goes to the gateway only; a redirect is followed without it.
                let first = Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code} %{redirect_url}",
                    ])
                    .args(["-H", &format!("Authorization: Bearer {token}")])
                    .arg(&url)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&first.stdout).to_string();
                let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
                if code == "307" {
                    let second = Command::new("curl")
                        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                        .arg(location)
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&second.stdout).to_string()
                } else {
                    code.to_string()
                }
            })
            .await
            .unwrap();
            let gateway = bytes / t.elapsed().as_secs_f64() / 1e6;
            done.store(true, Ordering::Relaxed);
            sampler.join().unwrap();
            assert_eq!(out, "200", "the pull did not succeed");
            Row {
                backend: if backend == "local" {
                    "local directory"
                } else {
                    "S3 (moto, 307 to a presigned URL)"
                },
                direct,
                gateway,
                rss_growth_mib: (peak.load(Ordering::Relaxed).saturating_sub(base)) as f64 / 1024.0,
            }
        });
        rows.push(row);
    }
    println!("blob of {mib} MiB, curl on loopback (2 cores shared)");
    println!(
        "{:<38} {:>12} {:>12} {:>8} {:>16}",
        "backend", "direct MB/s", "gateway MB/s", "ratio", "RSS growth MiB"
    );
    for r in &rows {
        println!(
            "{:<38} {:>12.0} {:>12.0} {:>7.2}x {:>16.1}",
            r.backend,
            r.direct,
            r.gateway,
            r.gateway / r.direct,
            r.rss_growth_mib
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| format!("{{\"backend\":\"{}\",\"direct_mbps\":{:.0},\"gateway_mbps\":{:.0},\"rss_growth_mib\":{:.1}}}", r.backend, r.direct, r.gateway, r.rss_growth_mib))
        .collect();
    println!("[{}]", json.join(","));
}
