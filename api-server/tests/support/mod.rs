//! What the in-process tests share.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::routes;
use serde_json::Value;
use tower::{Layer, ServiceExt};

/// Serves `req` as the running gateway does (trailing-slash normalisation, then the router);
/// the status and the body as JSON (`Null` when it is not JSON).
#[allow(dead_code)]
pub async fn respond(app: &Arc<App>, req: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes) = respond_bytes(app, req).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// [`respond`] with the body as it came.
#[allow(dead_code)]
pub async fn respond_bytes(app: &Arc<App>, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let svc =
        tower::util::MapRequestLayer::new(routes::normalize).layer(routes::router(app.clone()));
    let resp = svc.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// A gateway as `serve` builds it, on a real SQLite index and local storage in `dir`, with a
/// Kubernetes client that reaches nothing (writes answer 503 once allowed); `extra` flags
/// are added to the defaults. The caches are filled through the returned writers.
#[allow(dead_code)]
pub async fn gateway(
    dir: &std::path::Path,
    extra: &[&str],
) -> (Arc<App>, conda_store_api_server::app::Writers) {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: conda_store_api_server::config::ServeArgs,
    }
    let db = format!("sqlite://{}", dir.join("index.db").display());
    let storage = dir.join("artifacts").display().to_string();
    let mut argv = vec![
        "t",
        "--database-url",
        &db,
        "--storage-dir",
        &storage,
        "--secret-key",
        "0123456789abcdef0123456789abcdef-test",
        "--max-body-bytes",
        "10000",
        "--build-wait-seconds",
        "1",
    ];
    argv.extend(extra);
    let args = Args::parse_from(argv);
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    conda_store_api_server::build_app(&args.serve, client)
        .await
        .unwrap()
}
