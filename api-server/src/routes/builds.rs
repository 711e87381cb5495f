//! `/api/v1/build/...`: Builds by numeric id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use conda_store_crds::{Build, BuildPhase, Environment};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::AppState;
use super::filters::BuildFilter;
use super::openapi::{Answers, PageParams};
use crate::app::{App, BuildRow, ListAuthz, denied};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult, ack, ok, page};
use crate::query::{Paging, Params};
use crate::views;

/// Parses a build id from the path, refusing what is not one.
pub fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("build id {raw:?} is not a positive integer")))
}

/// The build `id`, with its Environment, if the caller holds `permission` on it.
pub fn find(
    app: &App,
    caller: &Caller,
    id: i64,
    permission: Permission,
) -> ApiResult<(Arc<Build>, Option<Arc<Environment>>)> {
    // A build the caller may not read answers exactly as one that does not exist: ids are
    // guessable, and neither the error nor its status may tell whose environment it is.
    let absent = || ApiError::not_found(format!("build {id} does not exist"));
    let b = app.build(id).ok_or_else(absent)?;
    let env = app.environment_of(&b);
    let ns = b.namespace().unwrap_or_default();
    let env_name = env
        .as_ref()
        .map(|e| views::environment_name(e))
        .unwrap_or_else(|| b.spec.environment.clone());
    if !app.may(caller, Permission::EnvironmentRead, &ns, Some(&env_name)) {
        return Err(absent());
    }
    if !app.may(caller, permission, &ns, Some(&env_name)) {
        return Err(denied(caller, permission, &format!("build {id}")));
    }
    Ok((b, env))
}

#[utoipa::path(
    get,
    path = "/api/v1/build",
    tag = "build",
    summary = "Builds the caller may read",
    params(
        ("status" = Option<String>, Query, description = "Build status"),
        ("packages" = Option<Vec<String>>, Query, description = "Package names"),
        ("artifact" = Option<String>, Query, description = "Artifact type"),
        ("environment_id" = Option<i64>, Query, description = "Environment id"),
        ("name" = Option<String>, Query, description = "Environment name"),
        ("namespace" = Option<String>, Query, description = "Namespace name"),
        PageParams,
    ),
    responses(Answers)
)]
pub async fn list(State(app): AppState, caller: Caller, params: Params) -> ApiResult<Response> {
    let paging = Paging::from(
        &params,
        &[
            "id",
            "environment_id",
            "scheduled_on",
            "started_on",
            "ended_on",
        ],
    )?;
    let filter = BuildFilter::from(&app, &params).await?;
    let environment_id = params.int("environment_id")?;
    let rows = app.rows().await?;
    let mut listed: Vec<&BuildRow> = Vec::new();
    {
        let mut authz = ListAuthz::new(&caller, &rows);
        for row in &rows.builds {
            let b = &row.build;
            if params.get("namespace").is_some_and(|n| n != row.ns_name)
                || params.get("name").is_some_and(|n| n != row.env_name)
                || environment_id.is_some_and(|e| row.env_id != e)
                || !filter.accepts(b)
                || !authz.may(
                    Permission::EnvironmentRead,
                    &row.ns,
                    &row.ns_name,
                    &row.env_name,
                )
            {
                continue;
            }
            listed.push(row);
        }
    }
    let time = |b: &Build, f: &str| {
        let s = b.status.as_ref();
        match f {
            "scheduled_on" => s.and_then(|s| s.scheduled_on.clone()),
            "started_on" => s.and_then(|s| s.started_on.clone()),
            _ => s.and_then(|s| s.ended_on.clone()),
        }
        .map(|t| t.0)
    };
    if !paging.sort_by.is_empty() {
        listed.sort_by(|a, b| {
            for f in &paging.sort_by {
                let o = match f.as_str() {
                    "id" => a.id.cmp(&b.id),
                    "environment_id" => a.env_id.cmp(&b.env_id),
                    other => time(&a.build, other).cmp(&time(&b.build, other)),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
    }
    if paging.descending {
        listed.reverse();
    }
    let count = listed.len();
    let mut data = Vec::new();
    for row in paging.slice(listed) {
        data.push(&row.view);
    }
    Ok(page(data, paging.page, paging.size, count))
}

#[utoipa::path(
    get,
    path = "/api/v1/build/{id}",
    tag = "build",
    summary = "A build",
    params(
        ("id" = i64, Path, description = "Build id"),
    ),
    responses(Answers)
)]
pub async fn get_one(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (b, _) = find(&app, &caller, parse_id(&id)?, Permission::EnvironmentRead)?;
    Ok(ok(app.build_view(&b, true).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/build/{id}/cancel",
    tag = "build",
    summary = "Cancel a queued or running build",
    params(
        ("id" = i64, Path, description = "Build id"),
    ),
    responses(Answers)
)]
pub async fn cancel(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (b, _) = find(&app, &caller, id, Permission::BuildCancel)?;
    let phase = views::build_phase(&b);
    if phase.is_terminal() {
        return Err(ApiError::bad_request(format!(
            "build {id} has ended ({}); only a queued or running build can be canceled",
            phase.conda_store_name()
        )));
    }
    let api: Api<Build> = Api::namespaced(app.client.clone(), &b.namespace().unwrap_or_default());
    api.patch(
        &b.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await?;
    Ok(ack(format!("build {id} canceled")))
}

#[utoipa::path(
    delete,
    path = "/api/v1/build/{id}",
    tag = "build",
    summary = "Delete a build and its artifacts",
    params(
        ("id" = i64, Path, description = "Build id"),
    ),
    responses(Answers)
)]
pub async fn delete(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (b, env) = find(&app, &caller, id, Permission::BuildDelete)?;
    // As conda-store: a build still queued or building is canceled first.
    if !views::build_phase(&b).is_terminal() {
        return Err(ApiError::bad_request(format!(
            "cannot delete build {id} since it has not finished building; cancel it first"
        )));
    }
    if env
        .as_ref()
        .and_then(|e| e.status.as_ref())
        .and_then(|s| s.current_build)
        == Some(id)
    {
        return Err(ApiError::bad_request(format!(
            "build {id} is its environment's current build; make another current first"
        )));
    }
    let api: Api<Build> = Api::namespaced(app.client.clone(), &b.namespace().unwrap_or_default());
    api.delete(&b.name_any(), &DeleteParams::background())
        .await?;
    app.index.forget_build(id).await?;
    Ok(ack(format!("build {id} deleted")))
}

/// A new build of the same specification; answers its id once the operator gave it one.
#[utoipa::path(
    put,
    path = "/api/v1/build/{id}",
    tag = "build",
    summary = "Build the same specification again",
    params(
        ("id" = i64, Path, description = "Build id"),
    ),
    responses(Answers)
)]
pub async fn rebuild(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (b, env) = find(&app, &caller, id, Permission::EnvironmentUpdate)?;
    let env = env
        .ok_or_else(|| ApiError::bad_request(format!("build {id} has no environment any more")))?;
    let ns = b.namespace().unwrap_or_default();
    let attempt = app
        .builds
        .state()
        .iter()
        .filter(|o| {
            o.namespace() == b.namespace()
                && o.spec.environment == b.spec.environment
                && o.spec.specification == b.spec.specification
        })
        .map(|o| Build::attempt_of(&o.name_any()))
        .max()
        .unwrap_or(0)
        + 1;
    let new = Build::new_for(&env, &b.spec.specification, attempt)
        .ok_or_else(|| ApiError::bad_request("the environment has no uid yet"))?;
    let api: Api<Build> = Api::namespaced(app.client.clone(), &ns);
    let name = new.name_any();
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let new_id = app
        .wait_for(app.build_wait, || {
            app.builds
                .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&ns))
                .and_then(|b| b.status.as_ref()?.id)
        })
        .await
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "the operator has not given build {name} an id within {} s",
                app.build_wait.as_secs()
            ))
        })?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        json!({
            "status": "ok",
            "data": {"build_id": new_id},
            "message": format!("rebuild of build {id} triggered"),
        }),
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/build/{id}/packages",
    tag = "build",
    summary = "The packages of a build",
    params(
        ("id" = i64, Path, description = "Build id"),
        ("search" = Option<String>, Query, description = "Substring of the package name"),
        ("exact" = Option<bool>, Query, description = "Match the name exactly"),
        ("build" = Option<String>, Query, description = "Build string"),
        PageParams,
    ),
    responses(Answers)
)]
pub async fn packages(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (b, _) = find(&app, &caller, id, Permission::EnvironmentRead)?;
    let paging = Paging::from(&params, &["name", "version"])?;
    if views::build_phase(&b) != BuildPhase::Completed {
        return Ok(page(Vec::<Value>::new(), paging.page, paging.size, 0));
    }
    app.index_completed_build(&b).await?;
    let exact = params.bool("exact")?.unwrap_or(false);
    let search = params.get("search");
    let build = params.get("build");
    let mut rows: Vec<Value> = app
        .index
        .build_packages(id)
        .await?
        .into_iter()
        .filter(|p| match search {
            Some(s) if exact => p.name == s,
            Some(s) => p.name.contains(s),
            None => true,
        })
        .filter(|p| build.is_none_or(|bs| p.build == bs))
        .map(|p| views::package(&p, true))
        .collect();
    if paging.descending {
        rows.reverse();
    }
    let count = rows.len();
    Ok(page(paging.slice(rows), paging.page, paging.size, count))
}
