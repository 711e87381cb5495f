//! `/api/v1/namespace/...`: Namespaces and their role mappings, as Namespace resources.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use conda_store_crds::naming::{object_name, validate_conda_name};
use conda_store_crds::rbac::Role;
use conda_store_crds::{Environment, Namespace, NamespaceSpec, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{Answers, PageParams};
use super::{AppState, json_body};
use crate::app::{App, denied};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult, ack, ok, page};
use crate::query::{Paging, Params};
use crate::views;

/// The Namespace people call `name`, if the caller may read it; 404 when it does not exist
/// and the caller could have seen it, 401/403 otherwise.
pub fn readable(
    app: &App,
    caller: &Caller,
    name: &str,
    permission: Permission,
) -> ApiResult<Arc<Namespace>> {
    validate_conda_name(name).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    match app.namespace(name) {
        Some(ns) => {
            app.require(caller, permission, &ns.name_any(), None)?;
            Ok(ns)
        }
        None if caller.may(permission, &[], name, None) => Err(ApiError::not_found(format!(
            "namespace {name} does not exist"
        ))),
        None => Err(denied(caller, permission, name)),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/namespace",
    tag = "namespace",
    summary = "Namespaces the caller may read",
    params(PageParams,),
    responses(Answers)
)]
pub async fn list(State(app): AppState, caller: Caller, params: Params) -> ApiResult<Response> {
    let paging = Paging::from(&params, &["name"])?;
    let mut visible: Vec<Arc<Namespace>> = app
        .namespaces
        .state()
        .into_iter()
        .filter(|ns| app.may(&caller, Permission::NamespaceRead, &ns.name_any(), None))
        .collect();
    visible.sort_by_key(|ns| views::namespace_name(ns));
    let mut views_ = Vec::with_capacity(visible.len());
    for ns in &visible {
        views_.push(app.namespace_view(ns).await?);
    }
    if paging.sort_by.is_empty() {
        views_.sort_by_key(|v| v.id);
    }
    if paging.descending {
        views_.reverse();
    }
    let count = views_.len();
    Ok(page(paging.slice(views_), paging.page, paging.size, count))
}

#[utoipa::path(
    get,
    path = "/api/v1/namespace/{namespace}",
    tag = "namespace",
    summary = "A namespace",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    responses(Answers)
)]
pub async fn get_one(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let ns = readable(&app, &caller, &name, Permission::NamespaceRead)?;
    Ok(ok(app.namespace_view(&ns).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/namespace/{namespace}",
    tag = "namespace",
    summary = "Create a namespace",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    responses(Answers)
)]
pub async fn create(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    validate_conda_name(&name).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    // Authorised before the existence check, as conda-store does: a 409 to a caller who may
    // not create it would tell them a namespace of that name exists.
    if !caller.may(Permission::NamespaceCreate, &[], &name, None) {
        return Err(denied(&caller, Permission::NamespaceCreate, &name));
    }
    if app.namespace(&name).is_some() {
        return Err(ApiError::conflict(format!(
            "namespace {name} already exists"
        )));
    }
    create_namespace(&app, &name).await?;
    // conda-store answers `data: null` here.
    Ok(ack(format!("namespace {name} created")))
}

/// Creates the Namespace resource for `name` (an existing one is returned as it is).
pub async fn create_namespace(app: &App, name: &str) -> ApiResult<Namespace> {
    let obj = object_name(name).map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    let ns = Namespace::new(
        &obj,
        NamespaceSpec {
            display_name: (obj != name).then(|| name.to_string()),
            ..Default::default()
        },
    );
    let api: Api<Namespace> = Api::all(app.client.clone());
    match api.create(&PostParams::default(), &ns).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Only the namespace of that very name: an object of this name that people know
            // by another name (`demo` called `Demo`) is someone else's.
            let existing = api.get(&obj).await?;
            if views::namespace_name(&existing) == name {
                Ok(existing)
            } else {
                Err(ApiError::conflict(format!(
                    "namespace {name} cannot be created: its object name {obj} is taken"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct UpdateBody {
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    role_mappings: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

fn description_of(metadata: &Value) -> ApiResult<Option<String>> {
    match metadata {
        Value::Object(m) => match m.get("description") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(
                "metadata.description must be a string",
            )),
        },
        Value::Null => Ok(None),
        _ => Err(ApiError::bad_request("metadata must be an object")),
    }
}

fn parse_mappings(
    m: &std::collections::BTreeMap<String, Vec<String>>,
) -> ApiResult<Vec<RoleBinding>> {
    let mut out = Vec::new();
    for (entity, roles) in m {
        conda_store_crds::rbac::validate_pattern(entity)
            .or_else(|e| {
                if entity == "anonymous" {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let role = roles
            .iter()
            .map(|r| {
                r.parse::<Role>()
                    .map_err(|e| ApiError::bad_request(format!("{e}")))
            })
            .collect::<ApiResult<Vec<Role>>>()?
            .into_iter()
            .max()
            .ok_or_else(|| ApiError::bad_request(format!("no role given for {entity}")))?;
        out.push(RoleBinding {
            entity: entity.clone(),
            role,
        });
    }
    Ok(out)
}

async fn patch_spec(app: &App, obj: &str, spec: Value) -> ApiResult<Namespace> {
    let api: Api<Namespace> = Api::all(app.client.clone());
    Ok(api
        .patch(
            obj,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?)
}

#[utoipa::path(
    put,
    path = "/api/v1/namespace/{namespace}",
    tag = "namespace",
    summary = "Change metadata and role mappings",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    request_body(content = UpdateBody, content_type = "application/json"),
    responses(Answers)
)]
pub async fn update(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let body: UpdateBody = json_body(&app, body).await?;
    let ns = readable(&app, &caller, &name, Permission::NamespaceUpdate)?;
    let mut spec = serde_json::Map::new();
    if let Some(m) = &body.metadata {
        spec.insert("description".into(), json!(description_of(m)?));
    }
    if let Some(r) = &body.role_mappings {
        // conda-store asks for creating and deleting mappings too (all the admin's).
        for p in [
            Permission::RoleMappingCreate,
            Permission::RoleMappingUpdate,
            Permission::RoleMappingDelete,
        ] {
            app.require(&caller, p, &ns.name_any(), None)?;
        }
        spec.insert("roleBindings".into(), json!(parse_mappings(r)?));
    }
    patch_spec(&app, &ns.name_any(), Value::Object(spec)).await?;
    // conda-store answers `data: null` here.
    Ok(ack(format!("namespace {name} updated")))
}

#[utoipa::path(
    put,
    path = "/api/v1/namespace/{namespace}/metadata",
    tag = "namespace",
    summary = "Change metadata",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(Answers)
)]
pub async fn update_metadata(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let metadata: Value = json_body(&app, body).await?;
    let ns = readable(&app, &caller, &name, Permission::NamespaceUpdate)?;
    let ns = patch_spec(
        &app,
        &ns.name_any(),
        json!({"description": description_of(&metadata)?}),
    )
    .await?;
    Ok(ok(app.namespace_view(&ns).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/namespace/{namespace}",
    tag = "namespace",
    summary = "Delete a namespace and its environments",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    responses(Answers)
)]
pub async fn delete(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let ns = readable(&app, &caller, &name, Permission::NamespaceDelete)?;
    let obj = ns.name_any();
    // Its environments go first (their builds' artifacts with them), then the Namespace.
    let envs: Api<Environment> = Api::namespaced(app.client.clone(), &obj);
    for env in envs.list(&ListParams::default()).await? {
        match envs
            .delete(&env.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let api: Api<Namespace> = Api::all(app.client.clone());
    api.delete(&obj, &DeleteParams::background()).await?;
    Ok(ack(format!("namespace {name} deleted")))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RoleBody {
    other_namespace: String,
    #[serde(default)]
    role: Option<String>,
}

fn members(other: &str) -> String {
    format!("{other}/*")
}

#[utoipa::path(
    get,
    path = "/api/v1/namespace/{namespace}/role",
    tag = "namespace",
    summary = "The role of another namespace's members",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
        ("other_namespace" = String, Query, description = "The other namespace"),
    ),
    responses(Answers)
)]
pub async fn get_role(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let ns = readable(&app, &caller, &name, Permission::RoleMappingRead)?;
    let other = params
        .get("other_namespace")
        .ok_or_else(|| ApiError::bad_request("other_namespace is required"))?;
    let role = ns
        .spec
        .role_bindings
        .iter()
        .find(|b| b.entity == members(other))
        .map(|b| b.role.as_str());
    Ok(ok(
        json!({"namespace": name, "other_namespace": other, "role": role}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/namespace/{namespace}/roles",
    tag = "namespace",
    summary = "Roles of other namespaces' members",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    responses(Answers)
)]
pub async fn list_roles(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let ns = readable(&app, &caller, &name, Permission::RoleMappingRead)?;
    let data: Vec<Value> = ns
        .spec
        .role_bindings
        .iter()
        .filter_map(|b| {
            let other = b.entity.strip_suffix("/*")?;
            Some(json!({"namespace": name, "other_namespace": other, "role": b.role.as_str()}))
        })
        .collect();
    Ok(ok(data))
}

#[utoipa::path(
    post,
    path = "/api/v1/namespace/{namespace}/role",
    tag = "namespace",
    summary = "Grant another namespace's members a role (POST or PUT)",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    request_body(content = RoleBody, content_type = "application/json"),
    responses(Answers)
)]
pub async fn set_role(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let body: RoleBody = json_body(&app, body).await?;
    validate_conda_name(&body.other_namespace)
        .map_err(|e| ApiError::bad_request(format!("other_namespace: {e}")))?;
    let role: Role = body
        .role
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("role is required"))?
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let ns = readable(&app, &caller, &name, Permission::RoleMappingCreate)?;
    let mut bindings: Vec<RoleBinding> = ns
        .spec
        .role_bindings
        .iter()
        .filter(|b| b.entity != members(&body.other_namespace))
        .cloned()
        .collect();
    bindings.push(RoleBinding {
        entity: members(&body.other_namespace),
        role,
    });
    patch_spec(&app, &ns.name_any(), json!({"roleBindings": bindings})).await?;
    Ok(ack(format!(
        "{} members are {role} in {name}",
        body.other_namespace
    )))
}

#[utoipa::path(
    delete,
    path = "/api/v1/namespace/{namespace}/role",
    tag = "namespace",
    summary = "Remove the role of another namespace's members",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    request_body(content = RoleBody, content_type = "application/json"),
    responses(Answers)
)]
pub async fn delete_role(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let body: RoleBody = json_body(&app, body).await?;
    let ns = readable(&app, &caller, &name, Permission::RoleMappingDelete)?;
    let bindings: Vec<RoleBinding> = ns
        .spec
        .role_bindings
        .iter()
        .filter(|b| b.entity != members(&body.other_namespace))
        .cloned()
        .collect();
    patch_spec(&app, &ns.name_any(), json!({"roleBindings": bindings})).await?;
    Ok(ack(format!(
        "role of {} members in {name} removed",
        body.other_namespace
    )))
}

#[utoipa::path(
    delete,
    path = "/api/v1/namespace/{namespace}/roles",
    tag = "namespace",
    summary = "Remove every other namespace's role",
    params(
        ("namespace" = String, Path, description = "Namespace name"),
    ),
    responses(Answers)
)]
pub async fn delete_roles(
    State(app): AppState,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let ns = readable(&app, &caller, &name, Permission::RoleMappingDelete)?;
    let bindings: Vec<RoleBinding> = ns
        .spec
        .role_bindings
        .iter()
        .filter(|b| !b.entity.ends_with("/*"))
        .cloned()
        .collect();
    patch_spec(&app, &ns.name_any(), json!({"roleBindings": bindings})).await?;
    Ok(ack(format!("roles of other namespaces in {name} removed")))
}
