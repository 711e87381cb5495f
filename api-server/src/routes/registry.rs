//! The OCI registry, pull side (distribution spec): the images the build step wrote, as
//! `<host>/<namespace>/<environment>:<build id | latest>`, names being the Kubernetes object
//! names (registry names are lowercase). Blobs are the content-addressed `blobs/sha256/<hex>`
//! objects every build shares; manifests are served as stored (OCI) or, to a client that asks
//! for Docker's schema 2 only, converted (same blobs, its own digest).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE,
    WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use conda_store_crds::{ArtifactKind, Build, BuildPhase, Environment};
use conda_store_storage::{ByteRange, Key};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AppState, STREAM_CHUNK};
use crate::app::App;
use crate::auth::{Caller, Permission};
use crate::query::Params;
use crate::views;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An error in the distribution spec's format.
pub struct RegistryError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<String>,
}

impl RegistryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(WWW_AUTHENTICATE, c);
        }
        resp
    }
}

type RegResult<T> = Result<T, RegistryError>;

/// The token endpoint's URL for the challenge, from the request's Host (only host and port
/// characters pass; anything else would let a caller write into the header) and the scheme a
/// TLS-terminating proxy says it used.
fn realm(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .map(|p| {
            p.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        }) {
        Some(p) if p == "https" => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/v2/token")
}

fn unauthorized(headers: &HeaderMap, scope: Option<&str>, message: &str) -> RegistryError {
    let mut challenge = format!(
        "Bearer realm=\"{}\",service=\"conda-store\"",
        realm(headers)
    );
    if let Some(s) = scope {
        challenge.push_str(&format!(",scope=\"{s}\""));
    }
    RegistryError {
        challenge: Some(challenge),
        ..RegistryError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
}

/// The caller, or a 401 with the token challenge for credentials that are not valid.
async fn caller(app: &App, headers: &HeaderMap) -> RegResult<Caller> {
    app.auth
        .caller(headers)
        .await
        .map_err(|e| unauthorized(headers, None, &e.message))
}

fn valid_name(segment: &str) -> bool {
    conda_store_crds::naming::is_rfc1123_label(segment, 63)
}

/// The Environment `<ns>/<env>` (object names) the caller may pull from.
fn repository(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    ns: &str,
    env: &str,
) -> RegResult<Arc<Environment>> {
    if !valid_name(ns) || !valid_name(env) {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("{ns}/{env} is not a repository name here (lowercase namespace/environment)"),
        ));
    }
    let scope = format!("repository:{ns}/{env}:pull");
    let found = app.environments.get(&ObjectRef::new(env).within(ns));
    let env_name = found.as_ref().map(|e| views::environment_name(e));
    let allowed = app.may(
        caller,
        Permission::EnvironmentRead,
        ns,
        Some(env_name.as_deref().unwrap_or(env)),
    );
    match (found, allowed) {
        (Some(e), true) => Ok(e),
        (None, true) => Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {ns}/{env} is not known"),
        )),
        (_, false) if !caller.authenticated() => Err(unauthorized(
            headers,
            Some(&scope),
            "authentication required",
        )),
        (_, false) => Err(RegistryError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("{} may not pull {ns}/{env}", caller.entity()),
        )),
    }
}

/// Builds of the environment that have an image, by id.
fn imaged_builds(app: &App, env: &Environment) -> Vec<(i64, Arc<Build>)> {
    let ns = env.namespace().unwrap_or_default();
    let mut out: Vec<(i64, Arc<Build>)> = app
        .builds
        .state()
        .into_iter()
        .filter(|b| {
            b.namespace().as_deref() == Some(ns.as_str()) && b.spec.environment == env.name_any()
        })
        .filter(|b| views::build_phase(b) == BuildPhase::Completed)
        .filter_map(|b| {
            let id = b.status.as_ref()?.id?;
            image_digest(&b).map(|_| (id, b))
        })
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

fn image_digest(b: &Build) -> Option<String> {
    b.status
        .as_ref()?
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::Image)?
        .digest
        .clone()
}

/// `sha256:<64 hex>`, or an error in the registry's format.
fn parse_digest(d: &str, code: &'static str) -> RegResult<String> {
    let hex = d.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(hex.to_string())
    } else {
        Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("{d:?} is not a sha256 digest"),
        ))
    }
}

async fn read_blob(app: &App, hex: &str) -> RegResult<Option<bytes::Bytes>> {
    let key = Key::new(&format!("blobs/sha256/{hex}")).map_err(|e| {
        RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
    })?;
    match app.storage.get_bytes(&key).await {
        Ok(b) => Ok(Some(b)),
        Err(conda_store_storage::StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(RegistryError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        )),
    }
}

/// Docker's schema 2 form of an OCI manifest: the same config and layers.
pub fn to_docker(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    m["mediaType"] = json!(DOCKER_MANIFEST);
    if let Some(c) = m.get_mut("config") {
        c["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
    }
    if let Some(layers) = m.get_mut("layers").and_then(Value::as_array_mut) {
        for l in layers {
            let gz = l["mediaType"]
                .as_str()
                .is_some_and(|t| t.ends_with("+gzip"));
            l["mediaType"] = json!(if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            });
        }
    }
    if let Some(o) = m.as_object_mut() {
        o.remove("annotations");
        o.remove("artifactType");
    }
    m
}

/// Whether the client takes OCI manifests (no Accept counts as yes).
fn accepts_oci(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .collect();
    accept.is_empty()
        || accept.iter().any(|a| *a == OCI_MANIFEST || *a == "*/*")
        || !accept.contains(&DOCKER_MANIFEST)
}

fn registry_headers(resp: &mut Response) {
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
}

pub async fn base(State(app): AppState, headers: HeaderMap) -> Response {
    match app.auth.caller(&headers).await {
        Ok(c) if c.authenticated() => {
            let mut r = axum::Json(json!({})).into_response();
            registry_headers(&mut r);
            r
        }
        Ok(_) => unauthorized(&headers, None, "authentication required").into_response(),
        Err(e) => unauthorized(&headers, None, &e.message).into_response(),
    }
}

/// The token endpoint of the token auth flow: credentials in, a bearer token out that the
/// registry accepts. It never extends a credential: a gateway token or login session comes
/// back as it is (with its own expiry), a Kubernetes or OpenID Connect token too (each pull
/// checks it again), and only a password login makes a new session.
pub async fn token(State(app): AppState, headers: HeaderMap) -> Response {
    match app.auth.caller(&headers).await {
        Ok(c) if c.authenticated() => {
            let now = jiff::Timestamp::now().as_second();
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string())
                .or_else(|| {
                    crate::auth::login::cookie(&headers, crate::auth::login::COOKIE_NAME)
                        .map(str::to_string)
                });
            let (token, expires) = match (c.via, presented) {
                (crate::auth::Via::Login, None) => (
                    app.auth.session_token(
                        c.username.as_deref().unwrap_or_default(),
                        &c.primary_namespace,
                        now,
                        None,
                    ),
                    now + app.auth.session_seconds,
                ),
                (_, Some(t)) => (t, c.expires.unwrap_or(now + app.auth.session_seconds)),
                (_, None) => {
                    return unauthorized(&headers, None, "present a token or a password")
                        .into_response();
                }
            };
            axum::Json(json!({
                "token": token,
                "access_token": token,
                "expires_in": (expires - now).max(0),
                "issued_at": jiff::Timestamp::now().to_string(),
            }))
            .into_response()
        }
        // No credentials: an anonymous token is an empty one (anonymous pulls need none).
        Ok(_) => axum::Json(json!({"token": "", "access_token": ""})).into_response(),
        Err(e) => unauthorized(&headers, None, &e.message).into_response(),
    }
}

pub async fn tags(
    State(app): AppState,
    headers: HeaderMap,
    Path((ns, env)): Path<(String, String)>,
    params: Params,
) -> RegResult<Response> {
    let caller = caller(&app, &headers).await?;
    let e = repository(&app, &caller, &headers, &ns, &env)?;
    serve_tags(&app, &e, &format!("{ns}/{env}"), &params)
}

fn serve_tags(app: &App, e: &Environment, name: &str, params: &Params) -> RegResult<Response> {
    let mut tags: Vec<String> = imaged_builds(app, e)
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let current = e.status.as_ref().and_then(|s| s.current_build);
    if current.is_some_and(|c| tags.contains(&c.to_string())) {
        tags.push("latest".into());
    }
    tags.sort();
    if let Some(last) = params.get("last") {
        tags.retain(|t| t.as_str() > last);
    }
    let n = match params.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                "n must be a number",
            )
        })?),
        None => None,
    };
    let more = n.is_some_and(|n| tags.len() > n);
    if let Some(n) = n {
        tags.truncate(n);
    }
    let mut resp = axum::Json(json!({"name": name, "tags": tags})).into_response();
    if more && let Some(last) = tags.last() {
        let link = format!(
            "</v2/{name}/tags/list?n={}&last={last}>; rel=\"next\"",
            n.unwrap_or(0)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert("Link", v);
        }
    }
    registry_headers(&mut resp);
    Ok(resp)
}

pub async fn manifest(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path((ns, env, reference)): Path<(String, String, String)>,
) -> RegResult<Response> {
    let caller = caller(&app, &headers).await?;
    let e = repository(&app, &caller, &headers, &ns, &env)?;
    serve_manifest(
        &app,
        &method,
        &headers,
        &e,
        &format!("{ns}/{env}"),
        &reference,
    )
    .await
}

async fn serve_manifest(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    e: &Environment,
    name: &str,
    reference: &str,
) -> RegResult<Response> {
    let builds = imaged_builds(app, e);
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("{name} has no image {reference}"),
        )
    };
    let stored_digest = if reference == "latest" {
        let current = e
            .status
            .as_ref()
            .and_then(|s| s.current_build)
            .ok_or_else(unknown)?;
        builds
            .iter()
            .find(|(id, _)| *id == current)
            .and_then(|(_, b)| image_digest(b))
            .ok_or_else(unknown)?
    } else if reference.starts_with("sha256:") {
        parse_digest(reference, "MANIFEST_INVALID")?;
        // A digest of one of this repository's images, in either form.
        let mut found = None;
        for (_, b) in &builds {
            let d = image_digest(b).unwrap_or_default();
            if d == reference {
                found = Some(d);
                break;
            }
            if let Some(bytes) = read_blob(app, d.trim_start_matches("sha256:")).await?
                && let Ok(m) = serde_json::from_slice::<Value>(&bytes)
            {
                let docker = serde_json::to_vec(&to_docker(&m)).unwrap_or_default();
                if format!("sha256:{}", hex::encode(Sha256::digest(&docker))) == reference {
                    found = Some(d);
                    break;
                }
            }
        }
        found.ok_or_else(unknown)?
    } else {
        let id: i64 = reference.parse().map_err(|_| unknown())?;
        builds
            .iter()
            .find(|(bid, _)| *bid == id)
            .and_then(|(_, b)| image_digest(b))
            .ok_or_else(unknown)?
    };
    let hex = parse_digest(&stored_digest, "MANIFEST_INVALID")?;
    let stored = read_blob(app, &hex).await?.ok_or_else(unknown)?;
    // Verified on the way out: the stored bytes are what the build recorded.
    if hex::encode(Sha256::digest(&stored)) != hex {
        return Err(RegistryError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MANIFEST_INVALID",
            "the stored manifest does not match its digest",
        ));
    }
    let wants_docker =
        !accepts_oci(headers) || (reference.starts_with("sha256:") && reference != stored_digest);
    let (body, media_type) = if wants_docker {
        let m: Value = serde_json::from_slice(&stored).map_err(|_| unknown())?;
        (
            bytes::Bytes::from(serde_json::to_vec(&to_docker(&m)).unwrap_or_default()),
            DOCKER_MANIFEST,
        )
    } else {
        (stored, OCI_MANIFEST)
    };
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    let len = body.len();
    let mut resp = if *method == Method::HEAD {
        Body::empty().into_response()
    } else {
        Body::from(body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(CONTENT_LENGTH, len.into());
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(&digest).expect("ascii"),
    );
    registry_headers(&mut resp);
    Ok(resp)
}

/// Parses `bytes=START-[END]`.
fn parse_range(v: &str) -> Option<ByteRange> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRange { start, end })
}

pub async fn blob(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path((ns, env, digest)): Path<(String, String, String)>,
) -> RegResult<Response> {
    let caller = caller(&app, &headers).await?;
    let e = repository(&app, &caller, &headers, &ns, &env)?;
    serve_blob(&app, &method, &headers, &e, &digest).await
}

/// Digest → the digests its manifest references (config and layers). Manifests are
/// content-addressed, so an entry never goes stale; the map is only bounded.
type ManifestRefs = std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<String>>>>;
static MANIFEST_REFS: std::sync::OnceLock<ManifestRefs> = std::sync::OnceLock::new();
const MANIFEST_REFS_MAX: usize = 4096;

/// The blobs (hex digests) the images of `env` are made of: each imaged build's manifest,
/// its config and its layers. Only these may be pulled through the repository: storage is
/// shared by every team, and a digest alone proves nothing about who may read it.
async fn repository_blobs(app: &App, env: &Environment) -> RegResult<Vec<String>> {
    let refs = MANIFEST_REFS.get_or_init(Default::default);
    let mut out = Vec::new();
    for (_, b) in imaged_builds(app, env) {
        let Some(d) = image_digest(&b) else { continue };
        let Ok(hex) = parse_digest(&d, "MANIFEST_INVALID") else {
            continue;
        };
        let known = refs.lock().expect("not poisoned").get(&hex).cloned();
        let listed = match known {
            Some(l) => l,
            None => {
                let Some(bytes) = read_blob(app, &hex).await? else {
                    continue;
                };
                if hex::encode(Sha256::digest(&bytes)) != hex {
                    continue;
                }
                let m: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut l: Vec<String> = Vec::new();
                let mut push = |v: &Value| {
                    if let Some(h) = v["digest"].as_str().and_then(|d| d.strip_prefix("sha256:")) {
                        l.push(h.to_string());
                    }
                };
                push(&m["config"]);
                m["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(&mut push);
                let l = Arc::new(l);
                let mut map = refs.lock().expect("not poisoned");
                if map.len() >= MANIFEST_REFS_MAX {
                    map.clear();
                }
                map.insert(hex.clone(), l.clone());
                l
            }
        };
        out.push(hex);
        out.extend(listed.iter().cloned());
    }
    Ok(out)
}

async fn serve_blob(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    env: &Environment,
    digest: &str,
) -> RegResult<Response> {
    let hex = parse_digest(digest, "DIGEST_INVALID")?;
    let key = Key::new(&format!("blobs/sha256/{hex}")).map_err(|e| {
        RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
    })?;
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not known"),
        )
    };
    // A blob no image of this repository references answers as a missing one (HEAD too), so
    // the registry is no oracle for what other teams' images hold.
    if !repository_blobs(app, env).await?.contains(&hex) {
        return Err(unknown());
    }
    let unavailable = |e: conda_store_storage::StorageError| match e {
        conda_store_storage::StorageError::NotFound(_) => unknown(),
        e => RegistryError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        ),
    };
    let info = app
        .storage
        .head(&key)
        .await
        .map_err(unavailable)?
        .ok_or_else(unknown)?;
    if let Some(url) = app
        .storage
        .presign_get(&key, std::time::Duration::from_secs(600))
        .await
        .map_err(unavailable)?
    {
        let mut resp = (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, url)]).into_response();
        resp.headers_mut().insert(
            "Docker-Content-Digest",
            HeaderValue::from_str(digest).expect("ascii"),
        );
        registry_headers(&mut resp);
        return Ok(resp);
    }
    let range = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => Some(parse_range(v).ok_or_else(|| {
            RegistryError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("range {v:?} is not valid"),
            )
        })?),
        None => None,
    };
    if let Some(r) = range
        && r.resolve(info.size).is_none()
    {
        let mut resp = RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            "range past the end",
        )
        .into_response();
        resp.headers_mut().insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{}", info.size)).expect("ascii"),
        );
        return Ok(resp);
    }
    let mut resp = if method == Method::HEAD {
        let mut r = Body::empty().into_response();
        r.headers_mut().insert(CONTENT_LENGTH, info.size.into());
        r
    } else {
        let read = app.storage.get(&key, range).await.map_err(unavailable)?;
        let len = read.len;
        let total = read.total;
        let mut r = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            read.body,
            STREAM_CHUNK,
        ))
        .into_response();
        r.headers_mut().insert(CONTENT_LENGTH, len.into());
        if let Some(rng) = range {
            let (s, e) = rng.resolve(total).expect("checked");
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{total}")).expect("ascii"),
            );
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "Docker-Content-Digest",
        HeaderValue::from_str(digest).expect("ascii"),
    );
    registry_headers(&mut resp);
    Ok(resp)
}

/// Anything else under /v2/: the registry's NAME_UNKNOWN rather than the API's 404.
pub async fn unknown() -> RegistryError {
    RegistryError::new(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "no such repository or endpoint",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_form_of_an_oci_manifest() {
        let oci = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:aa", "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:bb", "size": 2}],
            "annotations": {"a": "b"}});
        let d = to_docker(&oci);
        assert_eq!(d["mediaType"], DOCKER_MANIFEST);
        assert_eq!(d["config"]["digest"], "sha256:aa");
        assert_eq!(
            d["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert!(d.get("annotations").is_none());
    }

    #[test]
    fn ranges_and_digests() {
        assert_eq!(
            parse_range("bytes=10-"),
            Some(ByteRange {
                start: 10,
                end: None
            })
        );
        assert_eq!(
            parse_range("bytes=0-9"),
            Some(ByteRange {
                start: 0,
                end: Some(9)
            })
        );
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64)), "X").is_ok());
        for bad in [
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "A".repeat(64)),
            "sha256:../../x",
        ] {
            assert!(parse_digest(bad, "X").is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        assert!(accepts_oci(&h));
        h.insert(ACCEPT, HeaderValue::from_static(DOCKER_MANIFEST));
        assert!(!accepts_oci(&h));
        h.insert(ACCEPT, HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"));
        assert!(accepts_oci(&h));
    }
}

/// The Namespace of dynamic images (`<host>/conda-store-dynamic/<spec>/<spec>...`).
pub const DYNAMIC_NAMESPACE: &str = "conda-store-dynamic";

/// The match specs a dynamic image name asks for: one per segment, with conda-store's
/// `.gt.` `.ge.` `.lt.` `.le.` `.eq.` for the operators (`numpy.ge.1.26` is `numpy>=1.26`),
/// canonical and sorted.
pub fn dynamic_specs(segments: &[&str]) -> Result<Vec<String>, String> {
    if segments.is_empty() {
        return Err("name at least one package".into());
    }
    let mut specs = Vec::new();
    for seg in segments {
        // Registry path components: lowercase letters, digits, `.`, `_`, `-`.
        if !seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            || !seg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(format!("{seg:?} is not a package spec of a registry name"));
        }
        let spec = seg
            .replacen(".ge.", ">=", 1)
            .replacen(".le.", "<=", 1)
            .replacen(".gt.", ">", 1)
            .replacen(".lt.", "<", 1)
            .replacen(".eq.", "==", 1);
        let canonical = conda_store_crds::spec::normalize::canonical_match_spec(&spec)
            .map_err(|e| format!("{seg:?}: {e}"))?;
        specs.push(canonical);
    }
    specs.sort();
    specs.dedup();
    Ok(specs)
}

/// The Environment object name of a dynamic image: the same specs, the same environment.
pub fn dynamic_name(specs: &[String]) -> String {
    format!(
        "dyn-{}",
        &hex::encode(Sha256::digest(specs.join("\n").as_bytes()))[..16]
    )
}

/// `GET /v2/conda-store-dynamic/<spec>/.../(manifests/<ref> | blobs/<digest> | tags/list)`:
/// creates (or reuses) the Environment of those packages in the `conda-store-dynamic`
/// Namespace and answers once its build has an image, waiting on changes for a bounded time.
pub async fn dynamic(
    State(app): AppState,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    params: Params,
) -> RegResult<Response> {
    enum Want {
        Manifest(String),
        Blob(String),
        Tags,
    }
    let (name, want) = if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, Want::Manifest(r.to_string()))
    } else if let Some((n, d)) = rest.rsplit_once("/blobs/") {
        (n, Want::Blob(d.to_string()))
    } else if let Some(n) = rest.strip_suffix("/tags/list") {
        (n, Want::Tags)
    } else {
        return Err(unknown().await);
    };
    let segments: Vec<&str> = name.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "empty or relative name segment",
        ));
    }
    let specs = dynamic_specs(&segments)
        .map_err(|e| RegistryError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e))?;
    let env_obj = dynamic_name(&specs);
    let repo = format!("{DYNAMIC_NAMESPACE}/{name}");
    let caller = caller(&app, &headers).await?;
    let ns = app.namespace(DYNAMIC_NAMESPACE).ok_or_else(|| {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "dynamic images are not enabled here: there is no Namespace {DYNAMIC_NAMESPACE}"
            ),
        )
    })?;
    let ns_obj = ns.name_any();
    let existing = app
        .environments
        .get(&ObjectRef::new(&env_obj).within(&ns_obj));
    let needed = if existing.is_some() {
        Permission::EnvironmentRead
    } else {
        Permission::EnvironmentCreate
    };
    if !app.may(&caller, needed, &ns_obj, Some(&env_obj)) {
        return Err(if caller.authenticated() {
            RegistryError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{} may not {} in {DYNAMIC_NAMESPACE}",
                    caller.entity(),
                    needed.as_str()
                ),
            )
        } else {
            unauthorized(
                &headers,
                Some(&format!("repository:{repo}:pull")),
                "authentication required",
            )
        });
    }
    if existing.is_none() {
        let api: kube::Api<Environment> = kube::Api::namespaced(app.client.clone(), &ns_obj);
        let patch = json!({
            "apiVersion": "conda.store/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": env_obj, "namespace": ns_obj},
            "spec": {
                "name": env_obj,
                "description": format!("dynamic image {repo}"),
                "dependencies": specs,
                "artifacts": ["lockfile", "image"],
            },
        });
        api.patch(
            &env_obj,
            &kube::api::PatchParams::apply(super::environments::FIELD_MANAGER),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            RegistryError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            )
        })?;
    }
    // Until its current build has an image, or it failed, or the wait is over.
    let answer = app
        .wait_for(app.dynamic_wait, || {
            let e = app
                .environments
                .get(&ObjectRef::new(&env_obj).within(&ns_obj))?;
            let status = e.status.clone().unwrap_or_default();
            if status.current_build.is_some() && !imaged_builds(&app, &e).is_empty() {
                return Some(Ok(e));
            }
            if matches!(
                status.phase,
                Some(
                    conda_store_crds::EnvironmentPhase::Failed
                        | conda_store_crds::EnvironmentPhase::Invalid
                )
            ) {
                let why = conda_store_crds::find_condition(
                    &status.conditions,
                    conda_store_crds::ConditionType::Failed,
                )
                .map(|c| c.message.clone())
                .unwrap_or_default();
                return Some(Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("the build of {repo} failed: {why}"),
                )));
            }
            None
        })
        .await;
    let env = match answer {
        Some(found) => found?,
        None => {
            return Err(RegistryError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!(
                    "{repo} is still building after {} s; pull again later",
                    app.dynamic_wait.as_secs()
                ),
            ));
        }
    };
    match want {
        Want::Manifest(reference) => {
            serve_manifest(&app, &method, &headers, &env, &repo, &reference).await
        }
        Want::Blob(digest) => serve_blob(&app, &method, &headers, &env, &digest).await,
        Want::Tags => serve_tags(&app, &env, &repo, &params),
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;

    #[test]
    fn names_become_specs_and_one_environment() {
        let a = dynamic_specs(&["numpy.ge.1.26", "pandas", "scipy.lt.2"]).unwrap();
        assert_eq!(a, ["numpy>=1.26", "pandas", "scipy<2"]);
        let b = dynamic_specs(&["pandas", "scipy.lt.2", "numpy.ge.1.26"]).unwrap();
        assert_eq!(dynamic_name(&a), dynamic_name(&b));
        assert!(dynamic_name(&a).len() <= 40);
        assert!(dynamic_specs(&[]).is_err());
        assert!(dynamic_specs(&["bad!!"]).is_err());
        assert!(dynamic_specs(&["Numpy"]).is_err());
    }
}
