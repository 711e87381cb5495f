//! `/api/v1/setting/...`: conda-store's settings at three levels. Here the build policy: the
//! global level is the operator's `--policy` (given to the gateway too; read-only through the
//! API), a namespace's is
//! its Namespace's `policy`; environments take their namespace's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use conda_store_crds::{Namespace, Policy};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::namespaces::readable;
use super::{AppState, json_body};
use crate::app::App;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult, ack, ok};

/// conda-store's setting keys this server keeps, and the Policy field (camelCase) each is. The
/// two `pypi_*index*` keys are this server's: conda-store has no index policy.
const KEYS: [(&str, &str); 10] = [
    ("conda_allowed_channels", "allowedChannels"),
    ("conda_default_channels", "defaultChannels"),
    ("conda_default_packages", "defaultPackages"),
    ("conda_required_packages", "requiredPackages"),
    ("conda_channel_alias", "channelAlias"),
    ("pypi_default_packages", "pypiDefaultPackages"),
    ("pypi_included_packages", "pypiIncludedPackages"),
    ("pypi_required_packages", "pypiRequiredPackages"),
    ("pypi_index_url", "pypiIndexUrl"),
    ("pypi_allowed_indexes", "pypiAllowedIndexes"),
];

/// The Policy fields that are one string; the others are lists of strings.
const STRING_FIELDS: [&str; 2] = ["channelAlias", "pypiIndexUrl"];

fn view(p: &Policy) -> Value {
    let fields = serde_json::to_value(p).unwrap_or_default();
    let out: Map<String, Value> = KEYS
        .iter()
        .map(|(key, field)| {
            (
                key.to_string(),
                fields.get(field).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(out)
}

/// The Policy fields a settings body sets (camelCase, for a merge patch), refusing unknown
/// keys and wrong types.
fn patch_of(body: &Value) -> ApiResult<Map<String, Value>> {
    let body = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("settings must be a JSON object"))?;
    let mut out = Map::new();
    for (k, v) in body {
        let Some((_, field)) = KEYS.iter().find(|(key, _)| key == k) else {
            let settable: Vec<&str> = KEYS.iter().map(|(key, _)| *key).collect();
            return Err(ApiError::bad_request(format!(
                "unknown or global-only setting {k:?}; settable here: {}",
                settable.join(", ")
            )));
        };
        let string = STRING_FIELDS.contains(field);
        let ok_type = if string {
            v.is_string() || v.is_null()
        } else {
            v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        };
        if !ok_type {
            return Err(ApiError::bad_request(format!(
                "setting {k} must be {}",
                if string {
                    "a string"
                } else {
                    "a list of strings"
                }
            )));
        }
        out.insert(field.to_string(), v.clone());
    }
    Ok(out)
}

fn namespace(app: &App, caller: &Caller, name: &str, p: Permission) -> ApiResult<Arc<Namespace>> {
    readable(app, caller, name, p)
}

#[utoipa::path(
    get,
    path = "/api/v1/setting",
    tag = "setting",
    summary = "Global settings: the operator's build policy (its --policy), read-only here",
    responses((status = 200, description = "the settings"))
)]
pub async fn get_global(State(app): AppState) -> Response {
    ok(view(&app.policy))
}

#[utoipa::path(
    put,
    path = "/api/v1/setting",
    tag = "setting",
    summary = "Global settings are set in the operator's configuration",
    request_body(content = Object, content_type = "application/json"),
    responses((status = 400, description = "refused"))
)]
pub async fn put_global() -> ApiResult<Response> {
    Err(ApiError::bad_request(
        "global settings are the operator's configuration (--config); set a namespace's instead",
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/setting/{namespace}",
    tag = "setting",
    summary = "A namespace's build policy: the global policy overridden by the namespace's",
    params(("namespace" = String, Path, description = "Namespace name")),
    responses((status = 200, description = "the settings"), (status = 401, description = "credentials needed"), (status = 403, description = "not allowed"), (status = 404, description = "not found"))
)]
pub async fn get_namespace(
    State(app): AppState,
    caller: Caller,
    Path(ns): Path<String>,
) -> ApiResult<Response> {
    let n = namespace(&app, &caller, &ns, Permission::SettingRead)?;
    Ok(ok(view(&n.effective_policy(&app.policy, None))))
}

#[utoipa::path(
    put,
    path = "/api/v1/setting/{namespace}",
    tag = "setting",
    summary = "Change a namespace's build policy",
    params(("namespace" = String, Path, description = "Namespace name")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "changed"), (status = 400, description = "bad input"), (status = 401, description = "credentials needed"), (status = 403, description = "not allowed"), (status = 404, description = "not found"))
)]
pub async fn put_namespace(
    State(app): AppState,
    caller: Caller,
    Path(ns): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let patch = patch_of(&json_body(&app, body).await?)?;
    let n = namespace(&app, &caller, &ns, Permission::SettingUpdate)?;
    let api: Api<Namespace> = Api::all(app.client.clone());
    api.patch(
        &n.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"policy": patch}})),
    )
    .await?;
    Ok(ack(format!("settings of namespace {ns} changed")))
}

#[utoipa::path(
    get,
    path = "/api/v1/setting/{namespace}/{environment_name}",
    tag = "setting",
    summary = "An environment's build policy: the global policy, overridden by its namespace's, then by its own",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("environment_name" = String, Path, description = "Environment name"),
    ),
    responses((status = 200, description = "the settings"), (status = 401, description = "credentials needed"), (status = 403, description = "not allowed"), (status = 404, description = "not found"))
)]
pub async fn get_environment(
    State(app): AppState,
    caller: Caller,
    Path((ns, env)): Path<(String, String)>,
) -> ApiResult<Response> {
    let e = super::environments::find(&app, &caller, &ns, &env, Permission::SettingRead)?;
    let n = app
        .namespace_object(&e.namespace().unwrap_or_default())
        .ok_or_else(|| ApiError::not_found(format!("namespace {ns} does not exist")))?;
    Ok(ok(view(
        &n.effective_policy(&app.policy, Some(&e.conda_name())),
    )))
}

#[utoipa::path(
    put,
    path = "/api/v1/setting/{namespace}/{environment_name}",
    tag = "setting",
    summary = "Change an environment's build policy (kept in its Namespace's environmentPolicies)",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("environment_name" = String, Path, description = "Environment name"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "changed"), (status = 400, description = "bad input"), (status = 401, description = "credentials needed"), (status = 403, description = "not allowed"), (status = 404, description = "not found"))
)]
pub async fn put_environment(
    State(app): AppState,
    caller: Caller,
    Path((ns, env)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let patch = patch_of(&json_body(&app, body).await?)?;
    let e = super::environments::find(&app, &caller, &ns, &env, Permission::SettingUpdate)?;
    let k8s_ns = e.namespace().unwrap_or_default();
    let api: Api<Namespace> = Api::all(app.client.clone());
    api.patch(
        &k8s_ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"environmentPolicies": {e.conda_name(): patch}}})),
    )
    .await?;
    Ok(ack(format!("settings of environment {ns}/{env} changed")))
}
