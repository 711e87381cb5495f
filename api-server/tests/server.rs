//! The server itself against clients that misbehave: slow headers, idle keep-alive connections
//! and a flood of connections are bounded; cookies are Secure behind TLS; the registry's
//! challenge never echoes a forged Host.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Starts the gateway on a loopback port with `extra` flags; the port.
async fn start(dir: &std::path::Path, extra: &[&str]) -> u16 {
    let (app, _w) = support::gateway(dir, extra).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(conda_store_api_server::routes::serve(
        listener,
        app,
        std::future::pending(),
    ));
    port
}

/// Reads until the server closes the connection (or `limit` passes): whether it closed, and
/// what it sent.
fn closed_within(mut s: TcpStream, limit: Duration) -> (bool, String) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (true, String::from_utf8_lossy(&buf).into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&buf).into());
            }
            Err(_) => return (false, String::from_utf8_lossy(&buf).into()),
        }
        if start.elapsed() > limit {
            return (false, String::from_utf8_lossy(&buf).into());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_closed_and_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let port = start(
        dir.path(),
        &["--header-timeout-seconds", "1", "--max-connections", "3"],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    tokio::task::spawn_blocking(move || {
        // Headers that never finish.
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let (closed, _) = closed_within(slow, Duration::from_secs(10));
        assert!(closed, "a connection with unfinished headers stayed open");
        // A finished request, then silence: answered, then closed.
        let mut idle = TcpStream::connect(&addr).unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (closed, sent) = closed_within(idle, Duration::from_secs(10));
        assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
        assert!(closed, "an idle kept-alive connection stayed open");
        // Three held connections fill the slots: a fourth is closed at once, unanswered.
        let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(&addr).unwrap();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let (closed, sent) = closed_within(extra, Duration::from_secs(1));
        assert!(closed && sent.is_empty(), "{closed} {sent:?}");
        drop(held);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cookies_are_secure_behind_tls_and_the_challenge_escapes_nothing() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::{Layer, ServiceExt};
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        format!(
            "users:\n  - username: alice\n    password: \"{}\"\n",
            conda_store_api_server::auth::users::hash_password("pw")
        ),
    )
    .unwrap();
    let (app, _w) = support::gateway(dir.path(), &["--users-file", users.to_str().unwrap()]).await;
    let svc = tower::util::MapRequestLayer::new(conda_store_api_server::routes::normalize)
        .layer(conda_store_api_server::routes::router(app.clone()));
    let login = |proto: Option<&str>| {
        let mut r = Request::post("/conda-store/login/").header("content-type", "application/json");
        if let Some(p) = proto {
            r = r.header("x-forwarded-proto", p);
        }
        r.body(Body::from(r#"{"username":"alice","password":"pw"}"#))
            .unwrap()
    };
    let cookie = |resp: &axum::response::Response| {
        resp.headers()["set-cookie"].to_str().unwrap().to_string()
    };
    let tls = svc.clone().oneshot(login(Some("https"))).await.unwrap();
    assert!(cookie(&tls).contains("; Secure"), "{}", cookie(&tls));
    assert!(cookie(&tls).contains("HttpOnly") && cookie(&tls).contains("SameSite=Lax"));
    let plain = svc.clone().oneshot(login(None)).await.unwrap();
    assert!(!cookie(&plain).contains("Secure"), "{}", cookie(&plain));

    // The challenge's realm: a Host with quotes or spaces is not echoed; https when forwarded.
    let challenge = |host: &str, proto: Option<&str>| {
        let mut r = Request::get("/v2/").header("host", host);
        if let Some(p) = proto {
            r = r.header("x-forwarded-proto", p);
        }
        r.body(Body::empty()).unwrap()
    };
    let resp = svc
        .clone()
        .oneshot(challenge("evil\",error=\"x", None))
        .await
        .unwrap();
    let h = resp.headers()["www-authenticate"].to_str().unwrap();
    assert_eq!(
        h,
        "Bearer realm=\"http://localhost/v2/token\",service=\"conda-store\""
    );
    let resp = svc
        .oneshot(challenge("store.example.com:8443", Some("https")))
        .await
        .unwrap();
    let h = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        h.starts_with("Bearer realm=\"https://store.example.com:8443/v2/token\""),
        "{h}"
    );
}
