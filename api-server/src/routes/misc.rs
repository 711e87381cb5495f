//! The API root, the caller's permissions, tokens, login, usage, the package catalog,
//! health and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use conda_store_crds::BuildPhase;
use conda_store_crds::rbac::{Role, validate_pattern};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{Answers, PageParams};
use super::{AppState, json_body};
use crate::app::App;
use crate::auth::jwt::Claims;
use crate::auth::login::COOKIE_NAME;
use crate::auth::{Caller, Permission, covers, permissions};
use crate::error::{ApiError, ApiResult, ok, page};
use crate::query::{Paging, Params};
use crate::views;

/// The conda-store version this server is compatible with.
pub const CONDA_STORE_API_VERSION: &str = "2025.2.2";

#[utoipa::path(
    get,
    path = "/api/v1",
    tag = "root",
    summary = "The API version",
    responses(Answers)
)]
pub async fn root() -> Response {
    ok(json!({"version": CONDA_STORE_API_VERSION}))
}

pub async fn readyz(State(app): AppState) -> Response {
    if app.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches filling").into_response()
    }
}

pub async fn metrics(State(app): AppState) -> Response {
    let mut text = app.metrics.render();
    text.push_str(&conda_store_metrics(&app));
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// conda-store's own metric lines (`conda_store_<name> <value>`, as its `/metrics` writes them),
/// with what is true here: the artifact directory's disk (local storage only: an S3 bucket has
/// no disk to report), the bytes of the builds' artifacts, builds by state, environments.
pub fn conda_store_metrics(app: &App) -> String {
    let mut out = String::new();
    if let Some(dir) = &app.storage_dir
        && let Ok(fs) = rustix::fs::statvfs(dir)
    {
        let block = fs.f_frsize.max(1);
        out.push_str(&format!("conda_store_disk_free {}\n", fs.f_bavail * block));
        out.push_str(&format!("conda_store_disk_total {}\n", fs.f_blocks * block));
    }
    let builds = app.builds.state();
    let usage: u64 = builds
        .iter()
        .filter_map(|b| b.status.as_ref().and_then(|s| s.size))
        .sum();
    out.push_str(&format!("conda_store_disk_usage {usage}\n"));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &builds {
        *counts
            .entry(views::build_phase(b).conda_store_name())
            .or_default() += 1;
    }
    for (state, n) in counts {
        out.push_str(&format!(
            "conda_store_build_{} {n}\n",
            state.to_ascii_lowercase()
        ));
    }
    out.push_str(&format!(
        "conda_store_environments {}\n",
        app.environments.state().len()
    ));
    out
}

/// conda-store's worker-status endpoint (`{prefix}celery`), in its shape, with what is true of
/// this deployment's workers, the operator's build Jobs: builds running and waiting, by id and
/// step (no environment names: the endpoint is open, as conda-store's is).
pub async fn celery(State(app): AppState) -> Response {
    let mut active = Vec::new();
    let mut scheduled = Vec::new();
    for b in app.builds.state() {
        let Some(id) = b.status.as_ref().and_then(|s| s.id) else {
            continue;
        };
        let jobs: Vec<&str> = b
            .status
            .as_ref()
            .map(|s| s.jobs.iter().map(|j| j.step.as_str()).collect())
            .unwrap_or_default();
        match views::build_phase(&b) {
            BuildPhase::Building => active.push(json!({"build_id": id, "steps": jobs})),
            BuildPhase::Queued => scheduled.push(json!({"build_id": id})),
            _ => {}
        }
    }
    active.sort_by_key(|v| v["build_id"].as_i64());
    scheduled.sort_by_key(|v| v["build_id"].as_i64());
    let worker = "conda-store-operator";
    axum::Json(json!({
        "availability": {worker: {"ok": "pong"}},
        "stats": {worker: {"active_builds": active.len(), "queued_builds": scheduled.len()}},
        "registered_tasks": {worker: ["solve", "install", "pack", "image"]},
        "active_tasks": {worker: active},
        "scheduled_tasks": {worker: scheduled},
    }))
    .into_response()
}

fn expiration(exp: Option<i64>) -> Value {
    match exp.and_then(|e| jiff::Timestamp::from_second(e).ok()) {
        Some(t) => json!(t.to_string()),
        None => Value::Null,
    }
}

/// The caller's bindings over every Namespace, as `pattern → roles`.
fn effective(app: &crate::app::App, caller: &Caller) -> BTreeMap<String, Role> {
    let namespaces = app.namespaces.state();
    let names: Vec<(String, Vec<conda_store_crds::RoleBinding>)> = namespaces
        .iter()
        .map(|ns| (views::namespace_name(ns), ns.spec.role_bindings.clone()))
        .collect();
    caller.effective_bindings(names.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
}

#[utoipa::path(
    get,
    path = "/api/v1/permission",
    tag = "auth",
    summary = "The caller's roles and permissions",
    responses(Answers)
)]
pub async fn permission(State(app): AppState, caller: Caller) -> Response {
    let bindings = effective(&app, &caller);
    let mut entity_roles = serde_json::Map::new();
    let mut entity_permissions = serde_json::Map::new();
    for (pattern, role) in &bindings {
        // The CLI splits keys at '/': every key names `namespace/environment`.
        let key = if pattern.contains('/') {
            pattern.clone()
        } else {
            format!("{pattern}/*")
        };
        entity_roles.insert(key.clone(), json!([role.as_str()]));
        // Sorted by name, as conda-store lists them.
        let mut perms: Vec<&str> = permissions(*role).iter().map(|p| p.as_str()).collect();
        perms.sort_unstable();
        entity_permissions.insert(key, json!(perms));
    }
    ok(json!({
        "authenticated": caller.authenticated(),
        "primary_namespace": caller.primary_namespace,
        "entity_permissions": entity_permissions,
        "entity_roles": entity_roles,
        "expiration": expiration(caller.expires),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TokenRequest {
    #[serde(default)]
    primary_namespace: Option<String>,
    #[serde(default)]
    role_bindings: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    expiration: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
}

/// Reads an expiry given as seconds since the epoch or a date-time (`T` or space separated).
fn parse_expiry(v: &Value) -> ApiResult<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("expiration must be whole seconds")),
        Value::String(s) => {
            let t = s.trim().replacen(' ', "T", 1);
            if let Ok(ts) = t.parse::<jiff::Timestamp>() {
                return Ok(Some(ts.as_second()));
            }
            // A date-time without offset is UTC.
            t.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| Some(z.timestamp().as_second()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("expiration {s:?} is not a date-time"))
                })
        }
        _ => Err(ApiError::bad_request(
            "expiration must be a date-time or seconds",
        )),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/token",
    tag = "auth",
    summary = "Revokes the presented token (or login session) at once, before it expires",
    responses(Answers)
)]
pub async fn revoke_token(State(app): AppState, headers: HeaderMap) -> ApiResult<Response> {
    let claims = app.auth.presented_claims(&headers).ok_or_else(|| {
        ApiError::bad_request("present the token to revoke (Bearer or the login cookie)")
    })?;
    let jti = claims.jti.ok_or_else(|| {
        ApiError::bad_request("this token carries no id; it expires at its own time")
    })?;
    app.revoke(&jti, claims.exp).await?;
    Ok(crate::error::ack("the token is revoked"))
}

#[utoipa::path(
    post,
    path = "/api/v1/token",
    tag = "auth",
    summary = "A token holding at most the caller's rights",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(Answers)
)]
pub async fn token(State(app): AppState, caller: Caller, body: Body) -> ApiResult<Response> {
    let req: TokenRequest = json_body(&app, body).await?;
    // Anonymous callers get a token too, as from conda-store: it holds what anonymous callers
    // may do, and nothing more.
    let now = jiff::Timestamp::now().as_second();
    let held = effective(&app, &caller);
    let bindings: BTreeMap<String, Vec<String>> = match req.role_bindings {
        None => held
            .iter()
            .map(|(p, r)| (p.clone(), vec![r.as_str().to_string()]))
            .collect(),
        Some(wanted) => {
            let mut out = BTreeMap::new();
            for (pattern, roles) in wanted {
                validate_pattern(&pattern).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let mut names = Vec::new();
                for r in roles {
                    let role: Role = r
                        .parse()
                        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
                    if !held.iter().any(|(p, h)| covers((p, *h), (&pattern, role))) {
                        return Err(ApiError::bad_request(format!(
                            "the requested role {role} on {pattern} exceeds the caller's rights"
                        )));
                    }
                    names.push(role.as_str().to_string());
                }
                out.insert(pattern, names);
            }
            out
        }
    };
    let limit = caller.expires.unwrap_or(now + app.auth.session_seconds);
    let wanted = match req.expiration.as_ref().or(req.exp.as_ref()) {
        Some(v) => parse_expiry(v)?,
        None => None,
    };
    let exp = wanted.unwrap_or(limit);
    if exp <= now {
        return Err(ApiError::bad_request(
            "the requested expiration is in the past",
        ));
    }
    if exp > limit {
        return Err(ApiError::bad_request(
            "the requested expiration is later than the caller's own credentials allow",
        ));
    }
    let primary = req
        .primary_namespace
        .unwrap_or_else(|| caller.primary_namespace.clone());
    conda_store_crds::naming::validate_conda_name(&primary)
        .map_err(|e| ApiError::bad_request(format!("primary_namespace: {e}")))?;
    let token = app.auth.signer.sign(&Claims {
        sub: caller.username.clone(),
        exp,
        primary_namespace: primary,
        role_bindings: bindings,
        session: false,
        src: crate::auth::login::Authenticator::source_of(&caller),
        jti: Some(crate::auth::login::new_token_id()),
        groups: Vec::new(),
    });
    Ok(ok(json!({"token": token})))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

pub async fn login(State(app): AppState, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        // The sign-in page's form: CSRF-checked, answered with a redirect (routes/ui.rs).
        return Ok(super::ui::login_form_post(&app, &headers, body).await);
    }
    let form: LoginForm = json_body(&app, body).await?;
    let caller = app.auth.password_login(&form.username, &form.password)?;
    let cookie = super::ui::session_cookie(&app, &caller, forwarded_https(&headers));
    let mut resp = ok(json!({"primary_namespace": caller.primary_namespace}));
    resp.headers_mut().insert(
        SET_COOKIE,
        cookie
            .parse()
            .map_err(|_| ApiError::bad_request("bad cookie"))?,
    );
    Ok(resp)
}

/// Whether a TLS-terminating proxy says the client used https (`X-Forwarded-Proto`).
pub fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

pub async fn logout(State(app): AppState, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    // The session ends here, not only in this browser: a copied cookie stops working too.
    if let Some(c) = app.auth.presented_claims(&headers)
        && c.session
        && let Some(jti) = &c.jti
        && let Err(e) = app.revoke(jti, c.exp).await
    {
        return e.into_response();
    }
    // The sign-out page's form goes back to this site; the UI's fetch gets the JSON answer.
    let mut resp = super::ui::after_logout(&headers, &uri, &app.prefix)
        .unwrap_or_else(|| crate::error::ack("logged out"));
    resp.headers_mut().insert(
        SET_COOKIE,
        format!("{COOKIE_NAME}=; Path=/; HttpOnly; Max-Age=0")
            .parse()
            .expect("a valid header"),
    );
    resp
}

#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    summary = "Environments, builds and storage per namespace",
    responses(Answers)
)]
pub async fn usage(State(app): AppState, caller: Caller) -> ApiResult<Response> {
    let mut out = serde_json::Map::new();
    for ns in app.namespaces.state() {
        let obj = ns.name_any();
        if !app.may(&caller, Permission::NamespaceRead, &obj, None) {
            continue;
        }
        let envs = app
            .environments
            .state()
            .iter()
            .filter(|e| e.namespace().as_deref() == Some(obj.as_str()))
            .count();
        let builds: Vec<_> = app
            .builds
            .state()
            .into_iter()
            .filter(|b| b.namespace().as_deref() == Some(obj.as_str()))
            .collect();
        let storage: u64 = builds
            .iter()
            .filter_map(|b| b.status.as_ref().and_then(|s| s.size))
            .sum();
        out.insert(
            views::namespace_name(&ns),
            json!({
                "total_environments": envs,
                "total_builds": builds.len(),
                "total_completed_builds": builds.iter().filter(|b| views::build_phase(b) == conda_store_crds::BuildPhase::Completed).count(),
                "total_storage": storage,
            }),
        );
    }
    Ok(ok(Value::Object(out)))
}

#[utoipa::path(
    get,
    path = "/api/v1/channel",
    tag = "catalog",
    summary = "The indexed channels, and those of built packages",
    params(PageParams,),
    responses(Answers)
)]
pub async fn channels(State(app): AppState, params: Params) -> ApiResult<Response> {
    let paging = Paging::from(&params, &["name"])?;
    let mut rows = app.index.channels().await?;
    if paging.sort_by.iter().any(|s| s == "name") {
        rows.sort_by(|a, b| a.1.cmp(&b.1));
    }
    if paging.descending {
        rows.reverse();
    }
    let count = rows.len();
    let data = paging
        .slice(rows)
        .into_iter()
        .map(|(id, name, last)| json!({"id": id, "name": name, "last_update": last}))
        .collect();
    Ok(page(data, paging.page, paging.size, count))
}

#[utoipa::path(
    get,
    path = "/api/v1/package",
    tag = "catalog",
    summary = "Packages of the indexed channels and builds",
    params(
        ("search" = Option<String>, Query, description = "Substring of the package name"),
        ("exact" = Option<bool>, Query, description = "Match the name exactly"),
        ("build" = Option<String>, Query, description = "Build string"),
        ("distinct_on" = Option<Vec<String>>, Query, description = "name: one per package name"),
        PageParams,
    ),
    responses(Answers)
)]
pub async fn packages(State(app): AppState, params: Params) -> ApiResult<Response> {
    let paging = Paging::from(&params, &["name", "version"])?;
    let exact = params.bool("exact")?.unwrap_or(false);
    let distinct = match params.all("distinct_on").as_slice() {
        [] => false,
        ["name"] => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "distinct_on supports name only, not {other:?}"
            )));
        }
    };
    let filter = crate::index::PackageFilter {
        search: params.get("search"),
        exact,
        build: params.get("build"),
        distinct_names: distinct,
    };
    let (rows, count) = app
        .index
        .packages(
            &filter,
            (paging.page - 1).saturating_mul(paging.size),
            paging.size,
            paging.descending,
        )
        .await?;
    let data = rows.iter().map(|p| views::package(p, false)).collect();
    Ok(page(data, paging.page, paging.size, count))
}
