//! OpenID Connect ID tokens against a real (small) issuer on loopback: discovery document and
//! JWKS served over HTTP, tokens signed RS256 with a key `openssl` generates.

mod support;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use clap::Parser;
use conda_store_api_server::app::App;
use conda_store_api_server::build_app;
use conda_store_api_server::config::ServeArgs;
use ring::rsa::PublicKeyComponents;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

async fn call(app: &Arc<App>, token: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri("/conda-store/api/v1/permission/")
        .header("Authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    support::respond(app, req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_of_the_issuer_log_people_in() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key = support::rsa_key(dir.path(), "issuer");
    let stranger = support::rsa_key(dir.path(), "stranger");
    let public: PublicKeyComponents<Vec<u8>> = key.public().into();

    // The issuer: discovery and keys.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": B64.encode(&public.n), "e": B64.encode(&public.e)}]});
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
    let idp = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/keys", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, idp).await.unwrap() });

    let args = Args::parse_from([
        "t",
        "--database-url",
        &format!("sqlite://{}", dir.path().join("index.db").display()),
        "--storage-dir",
        dir.path().join("artifacts").to_str().unwrap(),
        "--oidc-issuer",
        &issuer,
        "--oidc-client-id",
        "conda-store",
    ]);
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let (app, _w) = build_app(&args.serve, client).await.unwrap();

    let now = jiff::Timestamp::now().as_second();
    let claims = |aud: &str, exp: i64| {
        json!({"iss": issuer, "aud": aud, "exp": exp, "iat": now, "sub": "1234",
               "preferred_username": "carol"})
    };
    let (s, v) = call(
        &app,
        &support::sign(&key, "k1", &claims("conda-store", now + 300)),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["authenticated"], true);
    assert_eq!(v["data"]["primary_namespace"], "carol");
    assert!(
        v["data"]["entity_roles"]["carol/*"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "admin")
    );

    for (what, token) in [
        (
            "another audience",
            support::sign(&key, "k1", &claims("other-app", now + 300)),
        ),
        (
            "expired",
            support::sign(&key, "k1", &claims("conda-store", now - 10)),
        ),
        (
            "an unpublished key",
            support::sign(&stranger, "k1", &claims("conda-store", now + 300)),
        ),
        (
            "an unknown kid",
            support::sign(&stranger, "k9", &claims("conda-store", now + 300)),
        ),
    ] {
        let (s, v) = call(&app, &token).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(v["status"], "error");
    }
    // A changed claim breaks the signature.
    let good = support::sign(&key, "k1", &claims("conda-store", now + 300));
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims("conda-store", now + 300);
    forged["preferred_username"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&forged).unwrap()),
        parts[2]
    );
    let (s, _) = call(&app, &forged).await;
    assert_eq!(s, 401);
}
