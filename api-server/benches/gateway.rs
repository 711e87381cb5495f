//! The gateway under load: `GET /api/v1/environment/` and `GET /api/v1/build/` with N
//! environments (one completed build each) in the caches, measured with `wrk` on loopback, each
//! against `GET /healthz` (the HTTP stack alone) measured in the same run.
//!
//!   bash scripts/bench-gateway.sh          # N=1000, 10 s per endpoint
//!
//! Environment: BENCH_ENVIRONMENTS (1000), BENCH_SECONDS (10), BENCH_CONNECTIONS (16).
//! The caches are filled directly, as the watches would fill them; every request is
//! authenticated (an admin token) and authorised per item.

mod support;

use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use conda_store_api_server::config::ServeArgs;
use conda_store_api_server::{build_app, routes};
use conda_store_crds::rbac::Role;
use conda_store_crds::{
    Artifact, ArtifactKind, Build, BuildPhase, BuildSpec, BuildStatus, Environment,
    EnvironmentSpec, EnvironmentStatus, Namespace, NamespaceSpec, RoleBinding,
};
use kube::runtime::watcher::Event;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Requests/s and p99 latency (ms) from wrk's output.
fn wrk(url: &str, token: &str, seconds: usize, connections: usize) -> (f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(["-H", &format!("Authorization: {token}")])
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_ms(v.trim()))
        .unwrap_or_else(|| panic!("no 99% latency in wrk's output:\n{text}"));
    let non2xx = text.lines().any(|l| l.contains("Non-2xx"));
    assert!(!non2xx, "errors under load:\n{text}");
    (rps, p99)
}

fn parse_ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn main() {
    let n = env_usize("BENCH_ENVIRONMENTS", 1000);
    let seconds = env_usize("BENCH_SECONDS", 10);
    let connections = env_usize("BENCH_CONNECTIONS", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, token) = rt.block_on(async {
        let args = Args::parse_from([
            "bench",
            "--database-url",
            &format!("sqlite://{}", dir.path().join("index.db").display()),
            "--storage-dir",
            dir.path().join("artifacts").to_str().unwrap(),
            "--secret-key",
            "bench-secret-bench-secret-bench-secret",
        ]);
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let (app, mut w) = build_app(&args.serve, client).await.unwrap();
        // Ten namespaces, N environments spread over them, one completed build each.
        for t in 0..10 {
            let ns = Namespace::new(
                &format!("team{t}"),
                NamespaceSpec {
                    role_bindings: vec![RoleBinding {
                        entity: "*/*".into(),
                        role: Role::Viewer,
                    }],
                    ..Default::default()
                },
            );
            w.namespaces.apply_watcher_event(&Event::Apply(ns));
        }
        for i in 0..n {
            let ns = format!("team{}", i % 10);
            let name = format!("env{i}");
            let mut env = Environment::new(&name, EnvironmentSpec::default());
            env.metadata.namespace = Some(ns.clone());
            env.status = Some(EnvironmentStatus {
                current_build: Some(i as i64 + 1),
                ..Default::default()
            });
            let bname = format!("{name}-1234abcd-1");
            let mut b = Build::new(
                &bname,
                BuildSpec {
                    environment: name.clone(),
                    specification: "spec-1234abcd".into(),
                    cancel: false,
                },
            );
            b.metadata.namespace = Some(ns.clone());
            b.status = Some(BuildStatus {
                id: Some(i as i64 + 1),
                phase: Some(BuildPhase::Completed),
                size: Some(1 << 20),
                artifacts: [
                    ArtifactKind::Lockfile,
                    ArtifactKind::Yaml,
                    ArtifactKind::Archive,
                ]
                .into_iter()
                .map(|kind| Artifact {
                    kind,
                    key: format!("builds/{ns}/{bname}/{kind:?}"),
                    size: Some(1),
                    digest: None,
                })
                .collect(),
                ..Default::default()
            });
            w.environments.apply_watcher_event(&Event::Apply(env));
            w.builds.apply_watcher_event(&Event::Apply(b));
        }
        app.sync_index().await.unwrap();
        app.changed_now();
        let token = format!("Bearer {}", support::admin_token(&app));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: Arc<_> = app;
        tokio::spawn(routes::serve(listener, app, std::future::pending()));
        (addr, token)
    });
    let base = format!("http://{addr}");
    // Each endpoint with one client (latency) and with many (throughput, queueing included).
    let mut rows = Vec::new();
    for c in [1, connections] {
        let (h_rps, h_p99) = wrk(&format!("{base}/healthz"), &token, seconds, c);
        rows.push((
            format!("GET /healthz (baseline), c={c}"),
            h_rps,
            h_p99,
            h_rps,
        ));
        for path in [
            "/conda-store/api/v1/environment/",
            "/conda-store/api/v1/build/",
        ] {
            let (rps, p99) = wrk(&format!("{base}{path}"), &token, seconds, c);
            rows.push((format!("GET {path}, c={c}"), rps, p99, h_rps));
        }
    }
    println!(
        "gateway with {n} environments (one build each), pages of 100, {seconds} s per row, wrk on loopback"
    );
    println!(
        "{:<50} {:>12} {:>10} {:>14}",
        "endpoint, connections", "requests/s", "p99 ms", "vs /healthz"
    );
    for (name, rps, p99, base_rps) in &rows {
        println!(
            "{name:<50} {rps:>12.0} {p99:>10.2} {:>13.3}x",
            rps / base_rps
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|(n, r, p, _)| format!("{{\"endpoint\":\"{n}\",\"rps\":{r:.0},\"p99_ms\":{p:.3}}}"))
        .collect();
    println!("[{}]", json.join(","));
    drop(dir);
}
