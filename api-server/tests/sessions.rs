//! Sessions and tokens never outlive their source: a user removed from the users file is
//! refused at once (their login cookie and their API tokens too), the registry's token
//! endpoint hands a session back unextended, tokens and sessions can be revoked, and password
//! guessing is throttled.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::auth::users::hash_password;
use serde_json::Value;

struct Fixture {
    app: Arc<App>,
    users: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn user(name: &str, pw: &str) -> String {
    format!(
        "  - username: {name}\n    password: \"{}\"\n",
        hash_password(pw)
    )
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        format!("users:\n{}{}", user("alice", "pw-a"), user("bob", "pw-b")),
    )
    .unwrap();
    let path = users.to_str().unwrap().to_string();
    let (app, _w) = support::gateway(dir.path(), &["--users-file", &path]).await;
    Fixture {
        app,
        users,
        _dir: dir,
    }
}

/// Rewrites the users file with a later modification time, then waits for the re-check.
fn rewrite(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
}

async fn send(
    app: &Arc<App>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value, Vec<String>) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let svc = tower::util::MapRequestLayer::new(conda_store_api_server::routes::normalize)
        .layer(conda_store_api_server::routes::router(app.clone()));
    use tower::{Layer, ServiceExt};
    let resp = svc
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        cookies,
    )
}

/// Logs in with a password: the `conda-store-auth=...` cookie pair.
async fn login(app: &Arc<App>, name: &str, pw: &str) -> String {
    let (s, v, cookies) = send(
        app,
        "POST",
        "/conda-store/login/",
        &[("content-type", "application/json")],
        &format!(r#"{{"username":"{name}","password":"{pw}"}}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    cookies[0].split(';').next().unwrap().to_string()
}

async fn authenticated(app: &Arc<App>, headers: &[(&str, &str)]) -> (StatusCode, bool) {
    let (s, v, _) = send(app, "GET", "/conda-store/api/v1/permission/", headers, "").await;
    (s, v["data"]["authenticated"] == true)
}

async fn api_token(app: &Arc<App>, cookie: &str) -> String {
    let (s, v, _) = send(
        app,
        "POST",
        "/conda-store/api/v1/token/",
        &[("cookie", cookie)],
        "{}",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    format!("Bearer {}", v["data"]["token"].as_str().unwrap())
}

#[tokio::test]
async fn a_removed_user_is_refused_at_once_with_every_session_and_token() {
    let f = fixture().await;
    let cookie = login(&f.app, "alice", "pw-a").await;
    let token = api_token(&f.app, &cookie).await;
    let basic = "Basic YWxpY2U6cHctYQ=="; // alice:pw-a
    assert_eq!(
        authenticated(&f.app, &[("cookie", &cookie)]).await,
        (StatusCode::OK, true)
    );
    assert!(authenticated(&f.app, &[("authorization", &token)]).await.1);
    assert!(authenticated(&f.app, &[("authorization", basic)]).await.1);

    rewrite(&f.users, &format!("users:\n{}", user("bob", "pw-b")));

    // The cookie now counts for nothing; the token and the password are refused.
    assert_eq!(
        authenticated(&f.app, &[("cookie", &cookie)]).await,
        (StatusCode::OK, false)
    );
    assert_eq!(
        authenticated(&f.app, &[("authorization", &token)]).await.0,
        401
    );
    assert_eq!(
        authenticated(&f.app, &[("authorization", basic)]).await.0,
        401
    );
    // Bob is unaffected.
    let bob = login(&f.app, "bob", "pw-b").await;
    assert!(authenticated(&f.app, &[("cookie", &bob)]).await.1);
}

#[tokio::test]
async fn the_registry_token_endpoint_never_extends_a_session() {
    let f = fixture().await;
    let cookie = login(&f.app, "alice", "pw-a").await;
    let session = cookie.split_once('=').unwrap().1.to_string();
    // From the session (as cookie, and as bearer): the same token comes back, not a new one.
    let bearer = format!("Bearer {session}");
    for h in [
        ("cookie", cookie.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let (s, v, _) = send(&f.app, "GET", "/v2/token", &[h], "").await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["token"], session.as_str(), "{h:?}");
        assert!(v["expires_in"].as_i64().unwrap() <= 24 * 3600);
    }
    // An API token comes back as it is too.
    let token = api_token(&f.app, &cookie).await;
    let (_, v, _) = send(&f.app, "GET", "/v2/token", &[("authorization", &token)], "").await;
    assert_eq!(format!("Bearer {}", v["token"].as_str().unwrap()), token);
}

#[tokio::test]
async fn tokens_and_sessions_can_be_revoked() {
    let f = fixture().await;
    let cookie = login(&f.app, "alice", "pw-a").await;
    let token = api_token(&f.app, &cookie).await;
    let other = api_token(&f.app, &cookie).await;
    let (s, v, _) = send(
        &f.app,
        "DELETE",
        "/conda-store/api/v1/token/",
        &[("authorization", &token)],
        "",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        authenticated(&f.app, &[("authorization", &token)]).await.0,
        401
    );
    // Only that one.
    assert!(authenticated(&f.app, &[("authorization", &other)]).await.1);
    // Logging out ends the session wherever its cookie was copied.
    let (s, _, _) = send(
        &f.app,
        "POST",
        "/conda-store/logout/",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert!(!authenticated(&f.app, &[("cookie", &cookie)]).await.1);
    // Revocations are kept in the index, where other replicas read them.
    let revoked = f
        .app
        .index
        .revoked_tokens(jiff::Timestamp::now().as_second())
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2);
}

#[tokio::test]
async fn password_guessing_is_throttled_per_user_name() {
    let f = fixture().await;
    let wrong = "Basic YWxpY2U6bm9wZQ=="; // alice:nope
    for _ in 0..5 {
        assert_eq!(
            authenticated(&f.app, &[("authorization", wrong)]).await.0,
            401
        );
    }
    // Now even the right password waits.
    let right = "Basic YWxpY2U6cHctYQ=="; // alice:pw-a
    assert_eq!(
        authenticated(&f.app, &[("authorization", right)]).await.0,
        429
    );
    let (s, _, _) = send(
        &f.app,
        "POST",
        "/conda-store/login/",
        &[("content-type", "application/json")],
        r#"{"username":"alice","password":"pw-a"}"#,
    )
    .await;
    assert_eq!(s, 429);
    // Another name is not held back.
    let bob = "Basic Ym9iOnB3LWI="; // bob:pw-b
    assert!(authenticated(&f.app, &[("authorization", bob)]).await.1);
}
