//! The REST API in process: caches filled directly (as the watches would), a real SQLite index
//! and local storage, a Kubernetes client that reaches nothing (writes answer 503 once allowed).
//! A table walks every endpoint with every role and checks allow and deny.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::auth::jwt::Claims;
use conda_store_crds::rbac::Role;
use conda_store_crds::{
    Artifact, ArtifactKind, Build, BuildPhase, BuildSpec, BuildStatus, Environment,
    EnvironmentSpec, EnvironmentStatus, Namespace, NamespaceSpec, RoleBinding,
};
use kube::runtime::watcher::Event;
use serde_json::Value;

const LOCK: &str = "version: 1
metadata:
  content_hash: {linux-64: x}
  channels: [{url: 'http://127.0.0.1/channel', used_env_vars: []}]
  platforms: [linux-64]
  sources: [environment.yaml]
package:
- name: liba
  version: '2.0'
  manager: conda
  platform: linux-64
  dependencies: {}
  url: http://127.0.0.1/channel/linux-64/liba-2.0-h1_0.conda
  hash: {md5: 0123456789abcdef0123456789abcdef, sha256: abababababababababababababababababababababababababababababababab}
  category: main
  optional: false
";

struct Fixture {
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut w) = support::gateway(dir.path(), &[]).await;
    let lock_key = "builds/team/env-1234abcd-1/conda-lock.yaml";
    app.storage
        .put_bytes(
            &conda_store_storage::Key::new(lock_key).unwrap(),
            LOCK.as_bytes().to_vec().into(),
        )
        .await
        .unwrap();

    let mut ns = Namespace::new(
        "team",
        NamespaceSpec {
            role_bindings: vec![RoleBinding {
                entity: "team/*".into(),
                role: Role::Editor,
            }],
            ..Default::default()
        },
    );
    ns.metadata.uid = Some("ns-uid".into());
    let mut env = Environment::new("env", EnvironmentSpec::default());
    env.metadata.namespace = Some("team".into());
    env.metadata.uid = Some("env-uid".into());
    env.status = Some(EnvironmentStatus {
        current_build: Some(1),
        ..Default::default()
    });
    let mut b = Build::new(
        "env-1234abcd-1",
        BuildSpec {
            environment: "env".into(),
            specification: "spec-1234abcd".into(),
            cancel: false,
        },
    );
    b.metadata.namespace = Some("team".into());
    b.status = Some(BuildStatus {
        id: Some(1),
        phase: Some(BuildPhase::Completed),
        size: Some(10),
        artifacts: vec![Artifact {
            kind: ArtifactKind::Lockfile,
            key: lock_key.into(),
            size: None,
            digest: None,
        }],
        ..Default::default()
    });
    w.namespaces.apply_watcher_event(&Event::Apply(ns));
    w.environments.apply_watcher_event(&Event::Apply(env));
    w.builds.apply_watcher_event(&Event::Apply(b));
    app.sync_index().await.unwrap();
    app.changed_now();
    Fixture { app, _dir: dir }
}

async fn call(
    app: &Arc<App>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let req = req
        .body(Body::from(body.unwrap_or_default().to_string()))
        .unwrap();
    support::respond(app, req).await
}

fn token(app: &App, bindings: &[(&str, &str)]) -> String {
    let claims = Claims {
        sub: Some("t".into()),
        exp: jiff::Timestamp::now().as_second() + 600,
        primary_namespace: "someone".into(),
        role_bindings: bindings
            .iter()
            .map(|(p, r)| (p.to_string(), vec![r.to_string()]))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };
    format!("Bearer {}", app.auth.signer.sign(&claims))
}

#[tokio::test]
async fn every_endpoint_with_every_role() {
    let f = fixture().await;
    let app = &f.app;
    let p = "/conda-store/api/v1";
    let spec =
        r#"{"namespace":"team","environment_name":"env","specification":"dependencies: [liba]\n"}"#;
    // (method, path, body, least role)
    let table: Vec<(&str, String, Option<&str>, Role)> = vec![
        ("GET", format!("{p}/namespace/team/"), None, Role::Viewer),
        (
            "GET",
            format!("{p}/namespace/team/roles"),
            None,
            Role::Viewer,
        ),
        (
            "GET",
            format!("{p}/environment/team/env/"),
            None,
            Role::Viewer,
        ),
        (
            "GET",
            format!("{p}/environment/team/env/lockfile/"),
            None,
            Role::Viewer,
        ),
        (
            "GET",
            format!("{p}/environment/team/env/conda-lock.yml"),
            None,
            Role::Viewer,
        ),
        ("GET", format!("{p}/build/1/"), None, Role::Viewer),
        ("GET", format!("{p}/build/1/lockfile/"), None, Role::Viewer),
        (
            "GET",
            format!("{p}/build/1/conda-lock.yaml"),
            None,
            Role::Viewer,
        ),
        ("GET", format!("{p}/build/1/packages/"), None, Role::Viewer),
        ("GET", format!("{p}/build/1/logs/"), None, Role::Viewer),
        ("GET", format!("{p}/build/1/yaml/"), None, Role::Viewer),
        ("PUT", format!("{p}/build/1/cancel/"), None, Role::Editor),
        ("PUT", format!("{p}/build/1/"), None, Role::Editor),
        (
            "PUT",
            format!("{p}/environment/team/env/"),
            Some(r#"{"description":"x"}"#),
            Role::Editor,
        ),
        (
            "POST",
            format!("{p}/specification/"),
            Some(spec),
            Role::Editor,
        ),
        ("DELETE", format!("{p}/build/1/"), None, Role::Admin),
        (
            "DELETE",
            format!("{p}/environment/team/env/"),
            None,
            Role::Admin,
        ),
        (
            "PUT",
            format!("{p}/namespace/team/"),
            Some(r#"{"metadata":{"description":"x"}}"#),
            Role::Admin,
        ),
        (
            "PUT",
            format!("{p}/namespace/team/metadata"),
            Some(r#"{"description":"x"}"#),
            Role::Admin,
        ),
        (
            "POST",
            format!("{p}/namespace/team/role"),
            Some(r#"{"other_namespace":"x","role":"viewer"}"#),
            Role::Admin,
        ),
        (
            "DELETE",
            format!("{p}/namespace/team/roles"),
            None,
            Role::Admin,
        ),
        ("GET", format!("{p}/setting/team/"), None, Role::Editor),
        ("GET", format!("{p}/setting/team/env/"), None, Role::Editor),
        (
            "PUT",
            format!("{p}/setting/team/"),
            Some(r#"{"conda_allowed_channels":["x"]}"#),
            Role::Admin,
        ),
        (
            "PUT",
            format!("{p}/setting/team/env/"),
            Some(r#"{"conda_default_channels":["x"]}"#),
            Role::Admin,
        ),
        ("DELETE", format!("{p}/namespace/team/"), None, Role::Admin),
    ];
    let callers: Vec<(&str, Option<String>, Option<Role>)> = vec![
        ("anonymous", None, None),
        ("outsider", Some(token(app, &[("other/*", "admin")])), None),
        (
            "viewer",
            Some(token(app, &[("team/*", "viewer")])),
            Some(Role::Viewer),
        ),
        (
            "editor",
            Some(token(app, &[("team/*", "editor")])),
            Some(Role::Editor),
        ),
        (
            "admin",
            Some(token(app, &[("team/*", "admin")])),
            Some(Role::Admin),
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, least) in &table {
        for (who, auth, role) in &callers {
            let (status, json) = call(app, method, path, auth.as_deref(), *body).await;
            let allowed = role.is_some_and(|r| r >= *least);
            // A build found by id that the caller may not read answers as one that does not
            // exist: ids are guessable and must not reveal whose builds they are.
            let hidden = path.contains("/build/") && role.is_none();
            let denied = status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
                || (hidden && status == StatusCode::NOT_FOUND);
            // conda-store answers 403 to anonymous callers as to anyone without the permission.
            let expected_denial = if hidden {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            if hidden && !allowed {
                let text = json.to_string();
                assert!(
                    !text.contains("team") && !text.contains("env"),
                    "{method} {path} as {who} names what it hides: {text}"
                );
            }
            if allowed == denied || (!allowed && status != expected_denial) {
                wrong.push(format!("{method} {path} as {who}: {status} {json}"));
            }
            // Whatever the answer, it is conda-store's envelope (or an artifact).
            if status.is_client_error() {
                assert_eq!(json["status"], "error", "{method} {path} as {who}");
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn lists_show_what_the_caller_may_read() {
    let f = fixture().await;
    let app = &f.app;
    let viewer = token(app, &[("team/*", "viewer")]);
    let outsider = token(app, &[("other/*", "admin")]);
    for (path, key) in [
        ("/conda-store/api/v1/environment/", "name"),
        ("/conda-store/api/v1/build/", "id"),
        ("/conda-store/api/v1/namespace/", "name"),
    ] {
        let (s, v) = call(app, "GET", path, Some(&viewer), None).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(v["count"], 1, "{path}: {v}");
        assert_eq!(v["size"], 100);
        assert!(v["data"][0][key].is_string() || v["data"][0][key].is_number());
        for auth in [Some(outsider.as_str()), None] {
            let (s, v) = call(app, "GET", path, auth, None).await;
            assert_eq!(s, 200);
            assert_eq!(v["count"], 0, "{path} {auth:?}: {v}");
        }
    }
    // Filters, and the CLI's stray slash after the query.
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/build?status=COMPLETED&packages=liba/",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(v["count"], 1, "{v}");
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/build?status=FAILED/",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(v["count"], 0);
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/environment?packages=nothere",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(v["count"], 0);
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/build/1/",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(v["data"]["status"], "COMPLETED");
    assert_eq!(v["data"]["build_artifacts"][0]["artifact_type"], "LOCKFILE");
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_message() {
    let f = fixture().await;
    let app = &f.app;
    let admin = token(app, &[("*/*", "admin")]);
    let p = "/conda-store/api/v1";
    let big = format!(r#"{{"specification":"{}"}}"#, "a".repeat(20_000));
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("POST", format!("{p}/specification/"), Some("{nope"), 400),
        (
            "POST",
            format!("{p}/specification/"),
            Some(
                r#"{"namespace":"team","environment_name":"e","specification":"dependencies: {a: 1}\n"}"#,
            ),
            400,
        ),
        (
            "POST",
            format!("{p}/specification/"),
            Some(
                r#"{"namespace":"a/b","environment_name":"e","specification":"dependencies: [a]\n"}"#,
            ),
            400,
        ),
        ("POST", format!("{p}/specification/"), Some(&big), 413),
        ("GET", format!("{p}/build/abc/"), None, 400),
        ("GET", format!("{p}/build/-1/"), None, 400),
        (
            "GET",
            format!("{p}/build/99999999999999999999999/"),
            None,
            400,
        ),
        ("GET", format!("{p}/build/424242/"), None, 404),
        ("GET", format!("{p}/environment/team/nope/"), None, 404),
        ("GET", format!("{p}/environment/..%2F../x/"), None, 400),
        ("GET", format!("{p}/namespace/..%2Fetc/"), None, 400),
        ("GET", format!("{p}/build/?page=0"), None, 400),
        ("GET", format!("{p}/build/?status=DONE"), None, 400),
        ("GET", format!("{p}/build/1/installer/"), None, 404),
        ("PUT", format!("{p}/build/1/cancel/"), None, 400),
        ("DELETE", format!("{p}/build/1/"), None, 400),
        (
            "PUT",
            format!("{p}/environment/team/env/"),
            Some(r#"{"build_id": 77}"#),
            400,
        ),
        (
            "POST",
            format!("{p}/token/"),
            Some(r#"{"expiration": "yesterday"}"#),
            400,
        ),
        (
            "POST",
            format!("{p}/token/"),
            Some(r#"{"role_bindings": {"a/b/c": ["admin"]}}"#),
            400,
        ),
        ("GET", format!("{p}/nothing/"), None, 404),
    ];
    for (method, path, body, want) in cases {
        let (s, v) = call(app, method, &path, Some(&admin), body).await;
        assert_eq!(s.as_u16(), want, "{method} {path}: {v}");
        assert_eq!(v["status"], "error", "{method} {path}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn tokens_never_exceed_their_holder() {
    let f = fixture().await;
    let app = &f.app;
    let editor = token(app, &[("team/*", "editor")]);
    let p = "/conda-store/api/v1/token/";
    let (s, v) = call(
        app,
        "POST",
        p,
        Some(&editor),
        Some(r#"{"role_bindings": {"team/env": ["viewer"]}}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let narrower = format!("Bearer {}", v["data"]["token"].as_str().unwrap());
    let (s, _) = call(
        app,
        "GET",
        "/conda-store/api/v1/environment/team/env/",
        Some(&narrower),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        app,
        "PUT",
        "/conda-store/api/v1/build/1/",
        Some(&narrower),
        None,
    )
    .await;
    assert_eq!(s, 403);
    for body in [
        r#"{"role_bindings": {"team/*": ["admin"]}}"#,
        r#"{"role_bindings": {"*/*": ["viewer"]}}"#,
        r#"{"role_bindings": {"other/env": ["viewer"]}}"#,
        r#"{"expiration": "2999-01-01T00:00:00Z"}"#,
    ] {
        let (s, v) = call(app, "POST", p, Some(&editor), Some(body)).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    // An anonymous caller gets a token holding what anonymous callers may do: nothing here.
    let (s, v) = call(app, "POST", p, None, Some("{}")).await;
    assert_eq!(s, 200, "{v}");
    let anon = format!("Bearer {}", v["data"]["token"].as_str().unwrap());
    let (s, _) = call(
        app,
        "GET",
        "/conda-store/api/v1/environment/team/env/",
        Some(&anon),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        app,
        "POST",
        p,
        None,
        Some(r#"{"role_bindings": {"team/*": ["viewer"]}}"#),
    )
    .await;
    assert_eq!(s, 400, "an anonymous token cannot claim more");
    // The permission endpoint shows what a holder may do, keys `namespace/environment`.
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/permission/",
        Some(&editor),
        None,
    )
    .await;
    assert_eq!(v["data"]["authenticated"], true);
    assert!(
        v["data"]["entity_permissions"]["team/*"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "build::cancel")
    );
    // conda-store's table: an admin holds its 17 permissions, sorted by name.
    let admin = token(app, &[("team/*", "admin")]);
    let (_, v) = call(
        app,
        "GET",
        "/conda-store/api/v1/permission/",
        Some(&admin),
        None,
    )
    .await;
    let perms: Vec<&str> = v["data"]["entity_permissions"]["team/*"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        perms,
        [
            "build::cancel",
            "build::delete",
            "environment::delete",
            "environment::read",
            "environment::solve",
            "environment::update",
            "environment:create",
            "namespace-role-mapping::create",
            "namespace-role-mapping::delete",
            "namespace-role-mapping::read",
            "namespace-role-mapping::update",
            "namespace::create",
            "namespace::delete",
            "namespace::read",
            "namespace::update",
            "setting::read",
            "setting::update",
        ]
    );
}

#[tokio::test]
async fn root_health_and_unknown_paths() {
    let f = fixture().await;
    let (s, v) = call(&f.app, "GET", "/conda-store/api/v1/", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["data"]["version"], "2025.2.2");
    let (s, _) = call(&f.app, "GET", "/healthz", None, None).await;
    assert_eq!(s, 200);
    let (s, v) = call(&f.app, "GET", "/nope", None, None).await;
    assert_eq!(s, 404);
    assert_eq!(v["status"], "error");
    let viewer = token(&f.app, &[("team/*", "viewer")]);
    // conda-store 2025.2.2 serves the conda-lock document (as JSON) at lockfile/: the same
    // document as the YAML at conda-lock.yaml.
    let (s, v) = call(
        &f.app,
        "GET",
        "/conda-store/api/v1/build/1/lockfile/",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let yaml: Value = serde_yaml::from_str(LOCK).unwrap();
    assert_eq!(v, yaml);
    assert_eq!(v["version"], 1);
    let (s, v2) = call(
        &f.app,
        "GET",
        "/conda-store/api/v1/environment/team/env/lockfile/",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!((s, &v2), (StatusCode::OK, &v));
    // conda's explicit list has its own path.
    let req = Request::builder()
        .uri("/conda-store/api/v1/build/1/explicit/")
        .header("Authorization", &viewer)
        .body(Body::empty())
        .unwrap();
    let (s, text) = support::respond_bytes(&f.app, req).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("@EXPLICIT\n"), "{text}");
}

/// The /api paths of conda-store 2025.2.2's OpenAPI document.
const CONDA_STORE_PATHS: &[&str] = &[
    "/api/v1/",
    "/api/v1/build/",
    "/api/v1/build/{build_id}/",
    "/api/v1/build/{build_id}/archive/",
    "/api/v1/build/{build_id}/cancel/",
    "/api/v1/build/{build_id}/conda-lock.yaml",
    "/api/v1/build/{build_id}/conda-lock.yml",
    "/api/v1/build/{build_id}/docker/",
    "/api/v1/build/{build_id}/installer/",
    "/api/v1/build/{build_id}/lockfile/",
    "/api/v1/build/{build_id}/logs/",
    "/api/v1/build/{build_id}/packages/",
    "/api/v1/build/{build_id}/yaml/",
    "/api/v1/channel/",
    "/api/v1/environment/",
    "/api/v1/environment/{namespace}/{environment_name}/",
    "/api/v1/environment/{namespace}/{environment_name}/conda-lock.yaml",
    "/api/v1/environment/{namespace}/{environment_name}/conda-lock.yml",
    "/api/v1/environment/{namespace}/{environment_name}/lockfile/",
    "/api/v1/environment/{namespace}/{name}/",
    "/api/v1/namespace/",
    "/api/v1/namespace/{namespace}/",
    "/api/v1/namespace/{namespace}/metadata",
    "/api/v1/namespace/{namespace}/role",
    "/api/v1/namespace/{namespace}/roles",
    "/api/v1/package/",
    "/api/v1/permission/",
    "/api/v1/setting/",
    "/api/v1/setting/{namespace}/",
    "/api/v1/setting/{namespace}/{environment_name}/",
    "/api/v1/specification/",
    "/api/v1/token/",
    "/api/v1/usage/",
    "/api/v2/environment/",
];

#[tokio::test]
async fn the_openapi_document_lists_conda_stores_endpoints() {
    let f = fixture().await;
    let (s, doc) = call(&f.app, "GET", "/conda-store/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["servers"][0]["url"], "/conda-store");
    let served: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    // Every /api path of conda-store's own document is served, by the same name.
    let wanted: Vec<String> = CONDA_STORE_PATHS.iter().map(|p| p.to_string()).collect();
    assert!(!wanted.is_empty());
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|p| {
            // conda-store names path parameters differently in places ({name} vs
            // {environment_name}, {id} vs {build_id}): compare shapes.
            let shape = |s: &str| {
                s.split('/')
                    .map(|seg| if seg.starts_with('{') { "{}" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            !served.iter().any(|s| {
                shape(s) == shape(p)
                    || (shape(p).ends_with(".yml") || shape(p).ends_with(".yaml"))
                        && shape(s).ends_with("/{}")
                        && shape(s).split('/').count() == shape(p).split('/').count()
            })
        })
        .collect();
    assert!(missing.is_empty(), "not served: {missing:?}");
}

#[tokio::test]
async fn dynamic_image_names_reach_the_dynamic_route() {
    let f = fixture().await;
    let admin = token(&f.app, &[("*/*", "admin")]);
    let (s, v) = call(
        &f.app,
        "GET",
        "/v2/conda-store-dynamic/liba.ge.2/tool/manifests/latest",
        Some(&admin),
        None,
    )
    .await;
    // No conda-store-dynamic Namespace here: the route says so rather than "unknown name".
    assert_eq!(s, 404, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{v}"
    );
}

/// conda-store's `/metrics` lines and `/celery` status, under the prefix as conda-store serves
/// them (and the metrics at the root too), with this deployment's figures.
#[tokio::test]
async fn conda_store_metrics_and_worker_status_under_the_prefix() {
    let f = fixture().await;
    for path in ["/conda-store/metrics", "/metrics"] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let svc = tower::util::MapRequestLayer::new(conda_store_api_server::routes::normalize)
            .layer(conda_store_api_server::routes::router(f.app.clone()));
        use tower::{Layer, ServiceExt};
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = String::from_utf8(
            axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let value = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
        };
        assert_eq!(value("conda_store_environments"), Some(1), "{text}");
        assert_eq!(value("conda_store_build_completed"), Some(1), "{text}");
        assert_eq!(value("conda_store_disk_usage"), Some(10), "{text}");
        let total = value("conda_store_disk_total").expect("local storage has a disk");
        assert!(value("conda_store_disk_free").unwrap() <= total);
    }
    let (s, v) = call(&f.app, "GET", "/conda-store/celery", None, None).await;
    assert_eq!(s, 200);
    for key in [
        "availability",
        "stats",
        "registered_tasks",
        "active_tasks",
        "scheduled_tasks",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(
        v["active_tasks"]["conda-store-operator"],
        serde_json::json!([])
    );
}
