//! One team against another, in process: what a caller of one namespace tries against the
//! other's environments, builds and images through the REST API and the registry.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::auth::jwt::Claims;
use conda_store_crds::{
    Artifact, ArtifactKind, Build, BuildPhase, BuildSpec, BuildStatus, Environment,
    EnvironmentSpec, EnvironmentStatus, Namespace, NamespaceSpec,
};
use conda_store_storage::Key;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Team {
    /// Hex digests of the image's manifest, config and layer.
    manifest: String,
    config: String,
    layer: String,
}

struct Fixture {
    app: Arc<App>,
    a: Team,
    b: Team,
    _dir: tempfile::TempDir,
}

async fn put(app: &App, bytes: Vec<u8>) -> String {
    let hex = hex::encode(Sha256::digest(&bytes));
    app.storage
        .put_bytes(
            &Key::new(&format!("blobs/sha256/{hex}")).unwrap(),
            bytes.into(),
        )
        .await
        .unwrap();
    hex
}

/// An image in storage: a layer and a config of `team`'s own bytes, and the manifest naming them.
async fn image(app: &App, team: &str) -> Team {
    let layer = put(app, format!("layer of {team}").into_bytes()).await;
    let config = put(app, format!("{{\"config of\":\"{team}\"}}").into_bytes()).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config}"), "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{layer}"), "size": 1}],
    }))
    .unwrap();
    let manifest = put(app, manifest).await;
    Team {
        manifest,
        config,
        layer,
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut w) = support::gateway(dir.path(), &[]).await;
    let a = image(&app, "team-a").await;
    let b = image(&app, "team-b").await;
    for (i, (ns, env, team)) in [("team-a", "env", &a), ("team-b", "secret", &b)]
        .into_iter()
        .enumerate()
    {
        let id = i as i64 + 1;
        let mut n = Namespace::new(ns, NamespaceSpec::default());
        n.metadata.uid = Some(format!("{ns}-uid"));
        let mut e = Environment::new(env, EnvironmentSpec::default());
        e.metadata.namespace = Some(ns.into());
        e.metadata.uid = Some(format!("{env}-uid"));
        e.status = Some(EnvironmentStatus {
            current_build: Some(id),
            ..Default::default()
        });
        let name = format!("{env}-1234abcd-1");
        let mut bld = Build::new(
            &name,
            BuildSpec {
                environment: env.into(),
                specification: "spec-1234abcd".into(),
                cancel: false,
            },
        );
        bld.metadata.namespace = Some(ns.into());
        bld.status = Some(BuildStatus {
            id: Some(id),
            phase: Some(BuildPhase::Completed),
            artifacts: vec![Artifact {
                kind: ArtifactKind::Image,
                key: format!("builds/{ns}/{name}/image.json"),
                size: None,
                digest: Some(format!("sha256:{}", team.manifest)),
            }],
            ..Default::default()
        });
        w.namespaces.apply_watcher_event(&Event::Apply(n));
        w.environments.apply_watcher_event(&Event::Apply(e));
        w.builds.apply_watcher_event(&Event::Apply(bld));
    }
    // A build of team-a's still running.
    let mut running = Build::new(
        "env-1234abcd-2",
        BuildSpec {
            environment: "env".into(),
            specification: "spec-1234abcd".into(),
            cancel: false,
        },
    );
    running.metadata.namespace = Some("team-a".into());
    running.status = Some(BuildStatus {
        id: Some(3),
        phase: Some(BuildPhase::Building),
        ..Default::default()
    });
    w.builds.apply_watcher_event(&Event::Apply(running));
    app.sync_index().await.unwrap();
    app.changed_now();
    Fixture {
        app,
        a,
        b,
        _dir: dir,
    }
}

/// An API token of someone holding `role` on team-a only.
fn team_a(app: &App, role: &str) -> String {
    let claims = Claims {
        sub: Some("alice".into()),
        exp: jiff::Timestamp::now().as_second() + 600,
        primary_namespace: "team-a".into(),
        role_bindings: BTreeMap::from([("team-a/*".to_string(), vec![role.to_string()])]),
        ..Default::default()
    };
    format!("Bearer {}", app.auth.signer.sign(&claims))
}

async fn call(app: &Arc<App>, method: &str, path: &str, auth: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", auth)
        .body(Body::empty())
        .unwrap();
    support::respond(app, req).await
}

#[tokio::test]
async fn registry_blobs_are_served_only_through_a_repository_whose_images_hold_them() {
    let f = fixture().await;
    let alice = team_a(&f.app, "viewer");
    let blob = |d: &str| format!("/v2/team-a/env/blobs/sha256:{d}");
    // Her own image's blobs, every one of them.
    for d in [&f.a.manifest, &f.a.config, &f.a.layer] {
        for method in ["GET", "HEAD"] {
            let (s, _) = call(&f.app, method, &blob(d), &alice).await;
            assert_eq!(s, 200, "{method} own blob {d}");
        }
    }
    // Team B's blobs through her repository: as unknown as a digest nobody stored.
    let nobody = "0".repeat(64);
    for d in [&f.b.manifest, &f.b.config, &f.b.layer, &nobody] {
        for method in ["GET", "HEAD"] {
            let (s, v) = call(&f.app, method, &blob(d), &alice).await;
            assert_eq!(s, 404, "{method} team B's blob {d}: {v}");
        }
        let (_, v) = call(&f.app, "GET", &blob(d), &alice).await;
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
    }
    // And through team B's repository she may not pull from at all.
    let (s, _) = call(
        &f.app,
        "GET",
        &format!("/v2/team-b/secret/blobs/sha256:{}", f.b.layer),
        &alice,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_build_id_tells_nothing_of_a_build_the_caller_may_not_read() {
    let f = fixture().await;
    let alice = team_a(&f.app, "admin");
    let p = "/conda-store/api/v1/build";
    for (method, path) in [
        ("GET", format!("{p}/2/")),
        ("GET", format!("{p}/2/logs/")),
        ("GET", format!("{p}/2/lockfile/")),
        ("GET", format!("{p}/2/yaml/")),
        ("GET", format!("{p}/2/archive/")),
        ("GET", format!("{p}/2/packages/")),
        ("PUT", format!("{p}/2/")),
        ("PUT", format!("{p}/2/cancel/")),
        ("DELETE", format!("{p}/2/")),
    ] {
        let (s, v) = call(&f.app, method, &path, &alice).await;
        let (s_none, v_none) = call(&f.app, method, &path.replace("/2/", "/99/"), &alice).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert_eq!(s, s_none, "{method} {path}: unlike a missing build");
        let text = v.to_string();
        assert!(
            !text.contains("team-b") && !text.contains("secret"),
            "{method} {path} names what it hides: {text}"
        );
        assert_eq!(
            text.replace('2', "99"),
            v_none.to_string(),
            "{method} {path}"
        );
    }
    // Her own build she reads.
    let (s, _) = call(&f.app, "GET", &format!("{p}/1/"), &alice).await;
    assert_eq!(s, 200);
}

/// As conda-store: a build still running is not deleted (cancel it first); 400, not a silent
/// removal of a build whose Jobs still run.
#[tokio::test]
async fn an_unfinished_build_is_not_deleted() {
    let f = fixture().await;
    let admin = team_a(&f.app, "admin");
    let (s, v) = call(&f.app, "DELETE", "/conda-store/api/v1/build/3/", &admin).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not finished"),
        "{v}"
    );
}

/// Creating a namespace is authorised before its existence is checked: a caller who may not
/// create it learns nothing from the answer (409 would say it exists).
#[tokio::test]
async fn creating_a_namespace_tells_nothing_of_one_that_exists() {
    let f = fixture().await;
    let admin = team_a(&f.app, "admin");
    let (s1, v1) = call(
        &f.app,
        "POST",
        "/conda-store/api/v1/namespace/team-b/",
        &admin,
    )
    .await;
    let (s2, _) = call(
        &f.app,
        "POST",
        "/conda-store/api/v1/namespace/team-zz/",
        &admin,
    )
    .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN),
        "{v1}"
    );
    assert!(!v1.to_string().contains("exists"), "{v1}");
}

/// A followed log is authorised as a plain one: another team's build is not found.
#[tokio::test]
async fn following_another_teams_log_is_a_404() {
    let f = fixture().await;
    let viewer = team_a(&f.app, "viewer");
    let (s, v) = call(
        &f.app,
        "GET",
        "/conda-store/api/v1/build/2/logs/?follow=true",
        &viewer,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = call(
        &f.app,
        "GET",
        "/conda-store/api/v1/build/99/logs/?follow=true",
        &viewer,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
