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

/// A 2048-bit RSA key `openssl` generates (as an identity provider's signing key).
#[allow(dead_code)]
pub fn rsa_key(dir: &std::path::Path, name: &str) -> ring::signature::RsaKeyPair {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs")
            .status
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&["genrsa", "-out", pem.to_str().unwrap(), "2048"]);
    // PKCS#1 DER, which ring reads.
    run(&[
        "rsa",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "DER",
        "-traditional",
        "-out",
        der.to_str().unwrap(),
    ]);
    ring::signature::RsaKeyPair::from_der(&std::fs::read(der).unwrap()).unwrap()
}

/// An RS256 JWT of `claims` signed with `key` under `kid`.
#[allow(dead_code)]
pub fn sign(key: &ring::signature::RsaKeyPair, kid: &str, claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let h = b64.encode(serde_json::to_vec(&header).unwrap());
    let b = b64.encode(serde_json::to_vec(claims).unwrap());
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        format!("{h}.{b}").as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{h}.{b}.{}", b64.encode(sig))
}
