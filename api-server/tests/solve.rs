//! `GET /api/v1/specification/` (`conda-store solve`): solved in process from a real channel,
//! under the global policy, fetching only the channels the configuration names.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;

async fn get(
    app: &std::sync::Arc<conda_store_api_server::app::App>,
    query: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(format!("/conda-store/api/v1/specification/?{query}"))
        .body(Body::empty())
        .unwrap();
    support::respond(app, req).await
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn solves_from_the_configured_channels_only() {
    let dir = tempfile::tempdir().unwrap();
    let channel =
        conda_store_engine::channel::write_test_channel(&dir.path().join("channel")).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "allowedChannels: [\"{}\"]\ndefaultPackages: [libb]\n",
            channel.url
        ),
    )
    .unwrap();
    let (app, _w) = support::gateway(dir.path(), &["--policy", policy.to_str().unwrap()]).await;

    // As the published client asks: `channels` (conda-store itself reads `channel`).
    let (s, v) = get(&app, &format!("channels={}&conda=tool", q(&channel.url))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut names: Vec<&str> = v["solve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["liba", "libb", "tool"]);
    let tool = v["solve"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tool")
        .unwrap();
    assert_eq!(tool["version"], "1.0");
    assert!(tool["size"].as_u64().unwrap() > 0, "{tool}");
    assert_eq!(tool["sha256"].as_str().unwrap().len(), 64);

    // The policy applies as to a build: its default package is added.
    let (s, v) = get(&app, &format!("channel={}&conda=liba", q(&channel.url))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["solve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["liba", "libb"]);

    // A channel outside the allowlist is refused, as for a build.
    let (s, v) = get(
        &app,
        "channels=http%3A%2F%2F127.0.0.1%3A1%2Finternal&conda=tool",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not allowed"),
        "{v}"
    );

    // Unsolvable and invalid specs are 400s saying why.
    let (s, v) = get(
        &app,
        &format!("channels={}&conda=nosuchpackage", q(&channel.url)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nosuchpackage"),
        "{v}"
    );
    let (s, v) = get(
        &app,
        &format!("channels={}&conda=%3E%3D%3D", q(&channel.url)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn without_configured_channels_nothing_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _w) = support::gateway(dir.path(), &[]).await;
    let (s, v) = get(
        &app,
        "channels=https%3A%2F%2Fconda.anaconda.org%2Fconda-forge&conda=numpy",
    )
    .await;
    // Without an allowlist a build could use that channel, but the gateway never fetches a
    // channel its configuration does not name: a tenant's URL could point anywhere inside the
    // cluster.
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("configuration names"),
        "{v}"
    );
    // An empty environment needs no channel.
    let (s, v) = get(&app, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["solve"], serde_json::json!([]));
}
