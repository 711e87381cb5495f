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

mod blob;
mod dynamic;
mod manifest;

pub use blob::blob;
use blob::serve_blob;
pub use dynamic::dynamic;
pub use manifest::manifest;
use manifest::serve_manifest;

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
    use super::blob::parse_range;
    use super::manifest::{accepts_oci, to_docker};
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
