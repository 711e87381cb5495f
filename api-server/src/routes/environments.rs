//! `/api/v1/environment/...` and `/api/v1/specification/`: Environments as resources.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use conda_store_crds::naming::{object_name, validate_conda_name};
use conda_store_crds::spec::raw::RawSpec;
use conda_store_crds::{Build, BuildPhase, Environment};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::filters::BuildFilter;
use super::namespaces::create_namespace;
use super::openapi::{Answers, PageParams};
use super::{AppState, json_body};
use crate::app::{App, ListAuthz, Rows, denied};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult, ack, ok, page};
use crate::query::{Paging, Params};
use crate::views;

/// Field manager of the gateway's writes.
pub const FIELD_MANAGER: &str = "conda-store-api-server";

/// The Environment `name` of namespace `ns` (conda names), checked for `permission`.
pub fn find(
    app: &App,
    caller: &Caller,
    ns: &str,
    name: &str,
    permission: Permission,
) -> ApiResult<Arc<Environment>> {
    validate_conda_name(ns).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    validate_conda_name(name).map_err(|e| ApiError::bad_request(format!("environment: {e}")))?;
    let Some(namespace) = app.namespace(ns) else {
        return Err(if caller.may(permission, &[], ns, Some(name)) {
            ApiError::not_found(format!("environment {ns}/{name} does not exist"))
        } else {
            denied(caller, permission, &format!("{ns}/{name}"))
        });
    };
    let obj = namespace.name_any();
    match app.environment(&obj, name) {
        Some(env) => {
            app.require(caller, permission, &obj, Some(name))?;
            Ok(env)
        }
        None if app.may(caller, Permission::EnvironmentRead, &obj, Some(name)) => Err(
            ApiError::not_found(format!("environment {ns}/{name} does not exist")),
        ),
        None => Err(denied(caller, permission, &format!("{ns}/{name}"))),
    }
}

/// The rows (indices into `rows.envs`) the caller may read, after the list filters.
async fn filtered(
    app: &App,
    caller: &Caller,
    params: &Params,
) -> ApiResult<(Arc<Rows>, Vec<usize>)> {
    let filter = BuildFilter::from(app, params).await?;
    let by_build = filter.is_set();
    let search = params.get("search").map(str::to_ascii_lowercase);
    let (ns_filter, name_filter) = (params.get("namespace"), params.get("name"));
    let rows = app.rows().await?;
    let mut out = Vec::new();
    {
        let mut authz = ListAuthz::new(caller, &rows);
        for (i, row) in rows.envs.iter().enumerate() {
            if ns_filter.is_some_and(|n| n != row.ns_name)
                || name_filter.is_some_and(|n| n != row.name)
                || search.as_ref().is_some_and(|s| {
                    !row.name.to_ascii_lowercase().contains(s)
                        && !row.ns_name.to_ascii_lowercase().contains(s)
                })
                || !authz.may(
                    Permission::EnvironmentRead,
                    &row.ns,
                    &row.ns_name,
                    &row.name,
                )
            {
                continue;
            }
            if by_build {
                let current = row
                    .env
                    .status
                    .as_ref()
                    .and_then(|s| s.current_build)
                    .and_then(|id| rows.build_index.get(&id))
                    .map(|&j| &rows.builds[j].build);
                if !current.is_some_and(|b| filter.accepts(b)) {
                    continue;
                }
            }
            out.push(i);
        }
    }
    Ok((rows, out))
}

fn views_of<'a>(rows: &'a Rows, picked: &[usize]) -> Vec<&'a views::EnvironmentView> {
    picked.iter().map(|&i| &rows.envs[i].view).collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/environment",
    tag = "environment",
    summary = "Environments the caller may read",
    params(
        ("namespace" = Option<String>, Query, description = "Namespace name"),
        ("name" = Option<String>, Query, description = "Environment name"),
        ("status" = Option<String>, Query, description = "Status of the current build"),
        ("artifact" = Option<String>, Query, description = "Artifact type the current build has"),
        ("packages" = Option<Vec<String>>, Query, description = "Package names the current build holds"),
        ("search" = Option<String>, Query, description = "Substring of the namespace or environment name"),
        PageParams,
    ),
    responses(Answers)
)]
pub async fn list(State(app): AppState, caller: Caller, params: Params) -> ApiResult<Response> {
    let paging = Paging::from(&params, &["namespace", "name"])?;
    let (rows, mut picked) = filtered(&app, &caller, &params).await?;
    sort(&rows, &mut picked, &paging.sort_by);
    if paging.descending {
        picked.reverse();
    }
    let count = picked.len();
    // Views only for the page.
    let data = views_of(&rows, &paging.slice(picked));
    Ok(page(data, paging.page, paging.size, count))
}

fn sort(rows: &Rows, picked: &mut [usize], by: &[String]) {
    if by.is_empty() {
        return; // rows are in id order
    }
    picked.sort_by(|&a, &b| {
        let (a, b) = (&rows.envs[a], &rows.envs[b]);
        for field in by {
            let o = match field.as_str() {
                "namespace" => a.ns_name.cmp(&b.ns_name),
                _ => a.name.cmp(&b.name),
            };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    });
}

/// Cursor pagination: the cursor is the last id of the previous page.
#[utoipa::path(
    get,
    path = "/api/v2/environment",
    tag = "environment",
    summary = "Environments, cursor-paged",
    params(
        ("namespace" = Option<String>, Query, description = "Namespace name"),
        ("name" = Option<String>, Query, description = "Environment name"),
        ("status" = Option<String>, Query, description = "Status of the current build"),
        ("artifact" = Option<String>, Query, description = "Artifact type the current build has"),
        ("packages" = Option<Vec<String>>, Query, description = "Package names the current build holds"),
        ("search" = Option<String>, Query, description = "Substring of the namespace or environment name"),
        ("limit" = Option<i64>, Query, description = "Items per page"),
        ("cursor" = Option<String>, Query, description = "The cursor of the previous page"),
    ),
    responses(Answers)
)]
pub async fn list_v2(State(app): AppState, caller: Caller, params: Params) -> ApiResult<Response> {
    let limit = params.int("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after = match params.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("cursor {c:?} is not one this server gave"))
        })?),
    };
    let (rows, picked) = filtered(&app, &caller, &params).await?;
    let count = picked.len();
    let rest: Vec<usize> = picked
        .into_iter()
        .filter(|&i| after.is_none_or(|a| rows.envs[i].id > a))
        .collect();
    let more = rest.len() > limit as usize;
    let page_envs: Vec<usize> = rest.into_iter().take(limit as usize).collect();
    let cursor = if more {
        page_envs.last().map(|&i| rows.envs[i].id.to_string())
    } else {
        None
    };
    let page_items = views_of(&rows, &page_envs);
    Ok(axum::Json(json!({
        "status": "ok",
        "data": page_items,
        "message": null,
        "count": count,
        "cursor": cursor,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/environment/{namespace}/{name}",
    tag = "environment",
    summary = "An environment with its current build",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("name" = String, Path, description = "Environment name"),
    ),
    responses(Answers)
)]
pub async fn get_one(
    State(app): AppState,
    caller: Caller,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let env = find(&app, &caller, &ns, &name, Permission::EnvironmentRead)?;
    Ok(ok(app.environment_view(&env, true).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct UpdateBody {
    #[serde(default)]
    build_id: Option<i64>,
    #[serde(default)]
    description: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/environment/{namespace}/{name}",
    tag = "environment",
    summary = "Make a build current (build_id) or change the description",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("name" = String, Path, description = "Environment name"),
    ),
    request_body(content = UpdateBody, content_type = "application/json"),
    responses(Answers)
)]
pub async fn update(
    State(app): AppState,
    caller: Caller,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let body: UpdateBody = json_body(&app, body).await?;
    let env = find(&app, &caller, &ns, &name, Permission::EnvironmentUpdate)?;
    let mut spec = serde_json::Map::new();
    if let Some(id) = body.build_id {
        let b = app
            .build(id)
            .filter(|b| b.namespace() == env.namespace() && b.spec.environment == env.name_any())
            .ok_or_else(|| {
                ApiError::bad_request(format!("build {id} is not a build of {ns}/{name}"))
            })?;
        if views::build_phase(&b) != BuildPhase::Completed {
            return Err(ApiError::bad_request(format!(
                "build {id} is {}; only a completed build can become current",
                views::build_phase(&b).conda_store_name()
            )));
        }
        spec.insert("pinnedBuild".into(), json!(id));
    }
    if let Some(d) = body.description {
        // A merge patch's null removes the field: an emptied description is none.
        let d = if d.is_empty() { Value::Null } else { json!(d) };
        spec.insert("description".into(), d);
    }
    if spec.is_empty() {
        return Err(ApiError::bad_request("give build_id or description"));
    }
    let api: Api<Environment> =
        Api::namespaced(app.client.clone(), &env.namespace().unwrap_or_default());
    api.patch(
        &env.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await?;
    Ok(ack(format!("environment {ns}/{name} updated")))
}

#[utoipa::path(
    delete,
    path = "/api/v1/environment/{namespace}/{name}",
    tag = "environment",
    summary = "Delete an environment, its builds and artifacts",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("name" = String, Path, description = "Environment name"),
    ),
    responses(Answers)
)]
pub async fn delete(
    State(app): AppState,
    caller: Caller,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let env = find(&app, &caller, &ns, &name, Permission::EnvironmentDelete)?;
    let api: Api<Environment> =
        Api::namespaced(app.client.clone(), &env.namespace().unwrap_or_default());
    api.delete(&env.name_any(), &DeleteParams::background())
        .await?;
    Ok(ack(format!("environment {ns}/{name} deleted")))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct SpecificationBody {
    #[serde(default)]
    specification: Value,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    environment_name: Option<String>,
    #[serde(default)]
    environment_description: Option<String>,
    #[serde(default)]
    is_lockfile: Option<bool>,
}

/// The Environment spec (as JSON) a POSTed specification gives, and the name it names.
fn environment_spec(body: &SpecificationBody) -> ApiResult<(Value, Option<String>)> {
    let text = match &body.specification {
        Value::String(s) => s.clone(),
        Value::Object(_) => serde_yaml::to_string(&body.specification)
            .map_err(|e| ApiError::bad_request(format!("specification: {e}")))?,
        Value::Null => return Err(ApiError::bad_request("specification is required")),
        _ => {
            return Err(ApiError::bad_request(
                "specification must be environment.yaml text",
            ));
        }
    };
    if body.is_lockfile.unwrap_or(false) {
        conda_store_crds::spec::lockfile::parse_lockfile(
            &text,
            &conda_store_crds::spec::error::Location::path("specification"),
        )
        .map_err(|e| ApiError::bad_request(format!("the lockfile is not valid: {e}")))?;
        return Ok((json!({"lockfile": text}), None));
    }
    RawSpec::from_yaml(&text)
        .map_err(|e| ApiError::bad_request(format!("the specification is not valid: {e}")))?;
    let value: Value = serde_yaml::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("the specification is not valid YAML: {e}")))?;
    let mut spec = serde_json::Map::new();
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    for field in [
        "channels",
        "dependencies",
        "variables",
        "platforms",
        "description",
    ] {
        // conda-store-ui's editor sends `description: ''` and `prefix: null`: empty means
        // none (and an empty string would reach the object as a null, which its schema refuses).
        if let Some(v) = value
            .get(field)
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
        {
            spec.insert(field.into(), v.clone());
        }
    }
    Ok((Value::Object(spec), name))
}

#[utoipa::path(
    post,
    path = "/api/v1/specification",
    tag = "specification",
    summary = "Create or update an environment; answers the id of the build that builds it",
    request_body(content = SpecificationBody, content_type = "application/json"),
    responses(Answers)
)]
pub async fn post_specification(
    State(app): AppState,
    caller: Caller,
    body: Body,
) -> ApiResult<Response> {
    let body: SpecificationBody = json_body(&app, body).await?;
    let (mut spec, spec_name) = environment_spec(&body)?;
    let env_name = body
        .environment_name
        .clone()
        .filter(|n| !n.is_empty())
        .or(spec_name)
        .ok_or_else(|| {
            ApiError::bad_request(
                "name the environment: environment_name or `name:` in the specification",
            )
        })?;
    validate_conda_name(&env_name)
        .map_err(|e| ApiError::bad_request(format!("environment_name: {e}")))?;
    let ns_name = body
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| caller.primary_namespace.clone());
    validate_conda_name(&ns_name).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;

    // The Namespace object the name resolves to (created when missing and allowed): its own
    // conda name and bindings are what the caller is authorised against.
    let namespace = match app.namespace(&ns_name) {
        Some(ns) => (*ns).clone(),
        None => {
            if !caller.may(Permission::NamespaceCreate, &[], &ns_name, None) {
                return Err(denied(&caller, Permission::NamespaceCreate, &ns_name));
            }
            create_namespace(&app, &ns_name).await?
        }
    };
    let ns = namespace.name_any();
    let ns_conda = views::namespace_name(&namespace);
    let existing = app.environment(&ns, &env_name);
    let needed = if existing.is_some() {
        Permission::EnvironmentUpdate
    } else {
        Permission::EnvironmentCreate
    };
    // Authorised against the resolved Namespace (its conda name and bindings), never the
    // caller's spelling of it: `demo` must not pass for the namespace called `Demo`.
    if !caller.may(
        needed,
        &namespace.spec.role_bindings,
        &ns_conda,
        Some(&env_name),
    ) {
        return Err(denied(&caller, needed, &format!("{ns_conda}/{env_name}")));
    }
    let obj = match &existing {
        Some(e) => e.name_any(),
        None => {
            let obj = object_name(&env_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
            // The object name must not belong to another environment (one created with
            // kubectl under a name that is not derived from its conda name): applying would
            // overwrite it. Asked of the API, not the cache, which may lag.
            let api: Api<Environment> = Api::namespaced(app.client.clone(), &ns);
            if let Some(other) = api.get_opt(&obj).await?
                && views::environment_name(&other) != env_name
            {
                return Err(ApiError::conflict(format!(
                    "environment {env_name} cannot be created here: its object name {obj} is taken"
                )));
            }
            obj
        }
    };
    spec["name"] = json!(env_name);
    if let Some(d) = body
        .environment_description
        .as_ref()
        .filter(|d| !d.is_empty())
    {
        spec["description"] = json!(d);
    }
    let before: BTreeSet<String> = builds_of(&app, &ns, &obj)
        .iter()
        .map(|b| b.name_any())
        .collect();
    let before_spec = existing
        .as_ref()
        .and_then(|e| e.status.as_ref())
        .and_then(|s| s.specification.clone());
    let api: Api<Environment> = Api::namespaced(app.client.clone(), &ns);
    // The whole desired spec, as a person's `kubectl apply` would give it: fields left out
    // (say, `lockfile` when a YAML spec replaces one) are removed.
    let patch = json!({
        "apiVersion": "conda.store/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": obj, "namespace": ns},
        "spec": spec,
    });
    let applied = api
        .patch(
            &obj,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    let generation = applied.metadata.generation.unwrap_or(0);
    let id = wait_for_build(&app, &ns, &obj, generation, &before, before_spec.as_deref()).await?;
    Ok(ok(json!({"build_id": id})))
}

fn builds_of(app: &App, ns: &str, env: &str) -> Vec<Arc<Build>> {
    app.builds
        .state()
        .into_iter()
        .filter(|b| b.namespace().as_deref() == Some(ns) && b.spec.environment == env)
        .collect()
}

/// Waits (on cache changes, not by polling) until the operator has decided on generation
/// `generation` of the Environment: the id of the build that builds it, or the reason there
/// is none.
async fn wait_for_build(
    app: &App,
    ns: &str,
    env: &str,
    generation: i64,
    before: &BTreeSet<String>,
    before_spec: Option<&str>,
) -> ApiResult<i64> {
    app.wait_for(app.build_wait, || {
        decided(app, ns, env, generation, before, before_spec)
    })
    .await
    .unwrap_or_else(|| {
        Err(ApiError::unavailable(format!(
            "the operator has not started a build of {ns}/{env} within {} s; see `kubectl get environment -n {ns} {env}`",
            app.build_wait.as_secs()
        )))
    })
}

fn decided(
    app: &App,
    ns: &str,
    env: &str,
    generation: i64,
    before: &BTreeSet<String>,
    before_spec: Option<&str>,
) -> Option<ApiResult<i64>> {
    let e = app
        .environments
        .get(&kube::runtime::reflector::ObjectRef::new(env).within(ns))?;
    let status = e.status.as_ref()?;
    if status.observed_generation.unwrap_or(0) < generation {
        return None;
    }
    if status.phase == Some(conda_store_crds::EnvironmentPhase::Invalid) {
        let message = conda_store_crds::find_condition(
            &status.conditions,
            conda_store_crds::ConditionType::Failed,
        )
        .map(|c| c.message.clone())
        .unwrap_or_default();
        return Some(Err(ApiError::bad_request(format!(
            "the specification is not valid: {message}"
        ))));
    }
    let spec = status.specification.as_deref()?;
    let of_spec: Vec<Arc<Build>> = builds_of(app, ns, env)
        .into_iter()
        .filter(|b| b.spec.specification == spec)
        .collect();
    let newest_with_id = |bs: &[&Arc<Build>]| -> Option<i64> {
        bs.iter()
            .filter_map(|b| Some((Build::attempt_of(&b.name_any()), b.status.as_ref()?.id?)))
            .max()
            .map(|(_, id)| id)
    };
    let old: Vec<&Arc<Build>> = of_spec
        .iter()
        .filter(|b| before.contains(&b.name_any()))
        .collect();
    let new: Vec<&Arc<Build>> = of_spec
        .iter()
        .filter(|b| !before.contains(&b.name_any()))
        .collect();
    if let Some(id) = newest_with_id(&new) {
        return Some(Ok(id));
    }
    if !new.is_empty() {
        return None; // created, id not assigned yet
    }
    // No new build: the operator reuses an old one when the spec did not change, or when one
    // of the same spec is completed or still running.
    let reusable = before_spec == Some(spec)
        || old.iter().any(|b| {
            let p = views::build_phase(b);
            p == BuildPhase::Completed || !p.is_terminal()
        });
    if reusable {
        return newest_with_id(&old).map(Ok);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uis_specification_keeps_no_nulls() {
        // What conda-store-ui's editor POSTs (its YAML mode, no description typed).
        let body: SpecificationBody = serde_json::from_value(json!({
            "namespace": "lab",
            "specification": "channels:\n  - http://ch/\ndependencies:\n  - tool\nvariables: {}\n\ndescription: ''\nname: ui-made\nprefix: null"
        }))
        .unwrap();
        let (spec, name) = environment_spec(&body).unwrap();
        assert_eq!(name.as_deref(), Some("ui-made"));
        assert_eq!(
            spec,
            json!({"channels": ["http://ch/"], "dependencies": ["tool"], "variables": {}})
        );
    }
}
