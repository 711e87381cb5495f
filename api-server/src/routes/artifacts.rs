//! Build artifacts: lockfiles, YAML, logs (live while a step runs), archives. Served from
//! storage: a redirect to a presigned URL where the backend has them (S3), streamed otherwise.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use conda_store_crds::{ArtifactKind, Build, BuildStep};
use conda_store_storage::Key;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};
use serde_json::json;

use super::builds::{find, parse_id};
use super::openapi::ArtifactAnswers;
use super::{AppState, STREAM_CHUNK};
use crate::app::{App, artifact_key};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult, ok};
use crate::query::Params;

fn missing(id: i64, what: &str) -> ApiError {
    ApiError::not_found(format!("build {id} has no {what}"))
}

/// Streams (or redirects to) a stored object.
async fn serve(
    app: &App,
    key: &str,
    content_type: &str,
    file_name: Option<&str>,
) -> ApiResult<Response> {
    let key = Key::new(key)?;
    if let Some(url) = app
        .storage
        .presign_get(&key, std::time::Duration::from_secs(600))
        .await?
    {
        return Ok((StatusCode::TEMPORARY_REDIRECT, [(LOCATION, url)]).into_response());
    }
    let read = app.storage.get(&key, None).await?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        read.body,
        STREAM_CHUNK,
    ))
    .into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        content_type.parse().expect("a valid content type"),
    );
    h.insert(CONTENT_LENGTH, read.len.into());
    if let Some(f) = file_name
        && let Ok(v) = format!("attachment; filename=\"{f}\"").parse()
    {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// conda's explicit lockfile (`@EXPLICIT` and one URL per package) for the first of the
/// lockfile's platforms that is linux-64, else its first platform.
pub fn explicit_lockfile(conda_lock: &str) -> Result<String, String> {
    let lock = conda_store_crds::spec::lockfile::parse_lockfile(
        conda_lock,
        &conda_store_crds::spec::error::Location::path("lockfile"),
    )
    .map_err(|e| e.to_string())?;
    let platform = if lock.platforms.iter().any(|p| p == "linux-64") {
        "linux-64".to_string()
    } else {
        lock.platforms
            .first()
            .cloned()
            .unwrap_or_else(|| "linux-64".into())
    };
    let mut out = format!("# platform: {platform}\n@EXPLICIT\n");
    for p in lock
        .packages
        .iter()
        .filter(|p| p.platform == platform && p.manager == "conda")
    {
        match &p.md5 {
            Some(md5) => out.push_str(&format!("{}#{md5}\n", p.url)),
            None => out.push_str(&format!("{}\n", p.url)),
        }
    }
    Ok(out)
}

/// The stored conda-lock document of a build, as text.
async fn conda_lock_text(app: &App, b: &Build, id: i64) -> ApiResult<String> {
    let key = artifact_key(b, ArtifactKind::Lockfile).ok_or_else(|| missing(id, "lockfile"))?;
    let bytes = app.storage.get_bytes(&Key::new(&key)?).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::unavailable(format!("the stored lockfile of build {id} is not UTF-8"))
    })
}

/// The conda-lock document as JSON, as conda-store 2025.2.2 stores and serves it at
/// `lockfile/`. The same document as the YAML at `conda-lock.yml`: JSON is YAML, so conda-lock
/// reads either, and either posted back with `is_lockfile: true` builds the same packages.
async fn lockfile_json(app: &App, b: &Build, id: i64) -> ApiResult<Response> {
    let text = conda_lock_text(app, b, id).await?;
    let doc: serde_json::Value = serde_yaml::from_str(&text).map_err(|e| {
        ApiError::unavailable(format!(
            "the stored lockfile of build {id} is unreadable: {e}"
        ))
    })?;
    let mut body = serde_json::to_string_pretty(&doc).expect("a JSON value serialises");
    body.push('\n');
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// conda's explicit list (`@EXPLICIT`), which `conda create --file` installs.
async fn explicit_text(app: &App, b: &Build, id: i64) -> ApiResult<Response> {
    let text = explicit_lockfile(&conda_lock_text(app, b, id).await?).map_err(|e| {
        ApiError::unavailable(format!(
            "the stored lockfile of build {id} is unreadable: {e}"
        ))
    })?;
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Each step's log so far, in step order: the stored log of a step that ended, else (while the
/// build runs) its pod's.
async fn log_sections(app: &App, b: &Build) -> ApiResult<Vec<(BuildStep, String)>> {
    let stored: Vec<String> = b
        .status
        .as_ref()
        .map(|s| {
            s.artifacts
                .iter()
                .filter(|a| a.kind == ArtifactKind::Logs && crate::app::owns_key(b, &a.key))
                .map(|a| a.key.clone())
                .collect()
        })
        .unwrap_or_default();
    let jobs = b
        .status
        .as_ref()
        .map(|s| s.jobs.clone())
        .unwrap_or_default();
    let mut sections = Vec::new();
    for &step in BuildStep::ALL {
        let suffix = format!("/logs/{}.log", step.as_str());
        let text = if let Some(key) = stored.iter().find(|k| k.ends_with(&suffix)) {
            Some(
                String::from_utf8_lossy(&app.storage.get_bytes(&Key::new(key)?).await?)
                    .into_owned(),
            )
        } else if !crate::views::build_phase(b).is_terminal()
            && let Some(job) = jobs.iter().find(|j| j.step == step)
        {
            // Still running: the log so far of the newest pod that the step's Job (the one
            // the operator recorded, by uid) controls. Pods are never found by their labels
            // alone: anyone who may create pods can label one like a build step.
            let pods: Api<Pod> = Api::namespaced(app.client.clone(), &job.namespace);
            let selector = conda_store_crds::labels::job_pods_selector(&job.uid);
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            match list
                .items
                .iter()
                .filter(|p| conda_store_crds::labels::controlled_by_job(&p.metadata, &job.uid))
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
            {
                // A pod whose container has not started yet has no log to give: say so rather
                // than answer as if the step did not exist.
                Some(pod) => Some(
                    pods.logs(&pod.name_any(), &LogParams::default())
                        .await
                        .unwrap_or_else(|_| {
                            format!("(pod {} has not started yet)\n", pod.name_any())
                        }),
                ),
                None => Some("(the step's pod has not been created yet)\n".to_string()),
            }
        } else {
            None
        };
        if let Some(text) = text {
            sections.push((step, text));
        }
    }
    Ok(sections)
}

fn section(step: BuildStep, text: &str) -> String {
    let mut out = format!("==> {} <==\n{text}", step.as_str());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

async fn logs(app: &App, b: &Build, id: i64) -> ApiResult<Response> {
    let out: String = log_sections(app, b)
        .await?
        .iter()
        .map(|(step, text)| section(*step, text))
        .collect();
    if out.is_empty() {
        return Err(missing(id, "logs yet"));
    }
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

/// How often a followed log looks for more when nothing woke it.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `logs/?follow=true`: the log so far, then what each step adds as it comes, until the build
/// ends (or is deleted). A step whose stored log differs from what its pod printed is sent
/// again whole once it ends, under its own header.
fn follow_logs(app: std::sync::Arc<App>, id: i64) -> Response {
    struct State {
        app: std::sync::Arc<App>,
        id: i64,
        sent: Vec<(BuildStep, String)>,
        done: bool,
    }
    let start = State {
        app,
        id,
        sent: Vec::new(),
        done: false,
    };
    let stream = futures::stream::unfold(start, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let app = st.app.clone();
            let woken = app.changed.notified();
            let Some(b) = app.build(st.id) else {
                st.done = true;
                return Some((
                    Ok::<_, std::io::Error>("(the build was deleted)\n".to_string()),
                    st,
                ));
            };
            let terminal = crate::views::build_phase(&b).is_terminal();
            let sections = match log_sections(&app, &b).await {
                Ok(s) => s,
                Err(e) => {
                    st.done = true;
                    return Some((Ok(format!("(the log cannot be read: {})\n", e.message)), st));
                }
            };
            let mut chunk = String::new();
            for (step, text) in sections {
                match st.sent.iter_mut().find(|(s, _)| *s == step) {
                    None => {
                        chunk.push_str(&section(step, &text));
                        st.sent.push((step, text));
                    }
                    Some((_, sent)) if text.starts_with(sent.as_str()) => {
                        chunk.push_str(&text[sent.len()..]);
                        *sent = text;
                    }
                    Some((_, sent)) if *sent != text => {
                        chunk.push_str(&format!("==> {} (as stored) <==\n", step.as_str()));
                        chunk.push_str(&text);
                        if !text.ends_with('\n') {
                            chunk.push('\n');
                        }
                        *sent = text;
                    }
                    Some(_) => {}
                }
            }
            if terminal {
                st.done = true;
                return Some((Ok(chunk), st));
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk), st));
            }
            let _ = tokio::time::timeout(FOLLOW_POLL, woken).await;
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8"
            .parse()
            .expect("a valid content type"),
    );
    resp
}

async fn build_artifact(
    app: &App,
    caller: &Caller,
    id: &str,
    artifact: &str,
) -> ApiResult<Response> {
    let id = parse_id(id)?;
    let (b, _) = find(app, caller, id, Permission::EnvironmentRead)?;
    artifact_of(app, &b, id, artifact).await
}

/// The artifact `artifact` of build `b` (numeric id `id`), which the caller may read.
async fn artifact_of(app: &App, b: &Build, id: i64, artifact: &str) -> ApiResult<Response> {
    match artifact {
        "lockfile" => lockfile_json(app, b, id).await,
        "explicit" => explicit_text(app, b, id).await,
        "conda-lock.yml" | "conda-lock.yaml" => {
            let key =
                artifact_key(b, ArtifactKind::Lockfile).ok_or_else(|| missing(id, "lockfile"))?;
            serve(app, &key, "text/yaml; charset=utf-8", None).await
        }
        "yaml" => {
            let key =
                artifact_key(b, ArtifactKind::Yaml).ok_or_else(|| missing(id, "YAML export"))?;
            serve(app, &key, "text/yaml; charset=utf-8", None).await
        }
        "logs" => logs(app, b, id).await,
        "archive" => {
            let key =
                artifact_key(b, ArtifactKind::Archive).ok_or_else(|| missing(id, "archive"))?;
            let file = key.rsplit('/').next().unwrap_or("archive").to_string();
            // gzip by default (conda-pack's format, which `conda-store run` opens as such);
            // zstd where the operator is told to write it.
            let content_type = if file.ends_with(".gz") {
                "application/gzip"
            } else if file.ends_with(".zst") {
                "application/zstd"
            } else {
                "application/octet-stream"
            };
            serve(app, &key, content_type, Some(&format!("build-{id}-{file}"))).await
        }
        "docker" => {
            if artifact_key(b, ArtifactKind::Image).is_none() {
                return Err(missing(id, "image"));
            }
            let env = app.environment_of(b);
            let env_name = env
                .as_ref()
                .map(|e| crate::views::environment_name(e))
                .unwrap_or_default();
            let ns = app.namespace_name(&b.namespace().unwrap_or_default());
            Ok(ok(json!([format!("{ns}/{env_name}:{id}")])))
        }
        "installer" => Err(missing(
            id,
            "installer (this server does not build constructor installers)",
        )),
        other => Err(ApiError::not_found(format!(
            "unknown build artifact {other:?}"
        ))),
    }
}

/// One documented route per build artifact, each a thin handler over [`build_artifact`].
macro_rules! build_artifact_routes {
    ($($name:ident: $path:literal, $artifact:literal, $summary:literal;)*) => {$(
        #[utoipa::path(
            get,
            path = $path,
            tag = "artifact",
            summary = $summary,
            params(("id" = i64, Path, description = "Build id")),
            responses(ArtifactAnswers)
        )]
        pub async fn $name(
            State(app): AppState,
            caller: Caller,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            build_artifact(&app, &caller, &id, $artifact).await
        }
    )*};
}

build_artifact_routes! {
    build_lockfile: "/api/v1/build/{id}/lockfile", "lockfile", "The conda-lock lockfile of a build, as JSON (conda-store's form)";
    build_explicit: "/api/v1/build/{id}/explicit", "explicit", "conda's explicit package list of a build (@EXPLICIT, for conda create --file)";
    build_conda_lock_yml: "/api/v1/build/{id}/conda-lock.yml", "conda-lock.yml", "The conda-lock lockfile of a build";
    build_conda_lock_yaml: "/api/v1/build/{id}/conda-lock.yaml", "conda-lock.yaml", "The conda-lock lockfile of a build";
    build_yaml: "/api/v1/build/{id}/yaml", "yaml", "The environment of a build as YAML with exact pins";
    build_archive: "/api/v1/build/{id}/archive", "archive", "The relocatable archive of a build";
    build_docker: "/api/v1/build/{id}/docker", "docker", "The image names of a build";
    build_installer: "/api/v1/build/{id}/installer", "installer", "Installers (not built by this server)";
}

#[utoipa::path(
    get,
    path = "/api/v1/build/{id}/logs",
    tag = "artifact",
    summary = "The logs of a build (live while a step runs; `follow=true` streams until it ends)",
    params(
        ("id" = i64, Path, description = "Build id"),
        ("follow" = Option<bool>, Query, description = "Keep the answer open and send what the steps print until the build ends"),
    ),
    responses(ArtifactAnswers)
)]
pub async fn build_logs(
    State(app): AppState,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    if params.bool("follow")?.unwrap_or(false) {
        let id = parse_id(&id)?;
        find(&app, &caller, id, Permission::EnvironmentRead)?;
        return Ok(follow_logs(app.clone(), id));
    }
    build_artifact(&app, &caller, &id, "logs").await
}

/// The current (or `build_id`) build of an environment.
fn env_build(
    app: &App,
    caller: &Caller,
    ns: &str,
    name: &str,
    params: &Params,
) -> ApiResult<(Build, i64)> {
    let env = super::environments::find(app, caller, ns, name, Permission::EnvironmentRead)?;
    let id = match params.int("build_id")? {
        Some(id) => id,
        None => env
            .status
            .as_ref()
            .and_then(|s| s.current_build)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "environment {ns}/{name} has no completed build yet"
                ))
            })?,
    };
    let b = app
        .build(id)
        .filter(|b| b.namespace() == env.namespace() && b.spec.environment == env.name_any())
        .ok_or_else(|| ApiError::not_found(format!("build {id} is not a build of {ns}/{name}")))?;
    Ok(((*b).clone(), id))
}

/// One documented route per artifact of an environment's current (or `build_id`) build.
macro_rules! env_artifact_routes {
    ($($name:ident: $path:literal, $artifact:literal, $summary:literal;)*) => {$(
        #[utoipa::path(
            get,
            path = $path,
            tag = "artifact",
            summary = $summary,
            params(
                ("namespace" = String, Path, description = "Namespace name"),
                ("name" = String, Path, description = "Environment name"),
                ("build_id" = Option<i64>, Query, description = "A build other than the current one"),
            ),
            responses(ArtifactAnswers)
        )]
        pub async fn $name(
            State(app): AppState,
            caller: Caller,
            Path((ns, name)): Path<(String, String)>,
            params: Params,
        ) -> ApiResult<Response> {
            let (b, id) = env_build(&app, &caller, &ns, &name, &params)?;
            artifact_of(&app, &b, id, $artifact).await
        }
    )*};
}

env_artifact_routes! {
    env_lockfile: "/api/v1/environment/{namespace}/{name}/lockfile", "lockfile", "The conda-lock lockfile (JSON) of the current (or given) build";
    env_explicit: "/api/v1/environment/{namespace}/{name}/explicit", "explicit", "conda's explicit package list of the current (or given) build";
    env_conda_lock_yml: "/api/v1/environment/{namespace}/{name}/conda-lock.yml", "conda-lock.yml", "The conda-lock lockfile of the current (or given) build";
    env_conda_lock_yaml: "/api/v1/environment/{namespace}/{name}/conda-lock.yaml", "conda-lock.yaml", "The conda-lock lockfile of the current (or given) build";
}
