//! `GET /api/v1/specification/`: solve without building (`conda-store solve`). The
//! specification is normalised under the policy a build of the caller's primary namespace
//! would have, and solved by the engine the build's solve step runs, in this process.
//!
//! The gateway fetches only channels the platform team named (the global policy's allowed and
//! default channels, `--solve-channels`): a tenant's own channel URL could point at anything
//! the gateway can reach. Namespace policies are tenants' to change, so they do not widen it.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use conda_store_crds::Policy;
use conda_store_engine::solve::{SolveError, SolveRequest, solve as solve_request};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::AppState;
use super::openapi::Answers;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::query::Params;

/// How long a solve waits for a free slot.
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// A solve's time limit (per platform) and its network bound.
const SOLVE_TIMEOUT: Duration = Duration::from_secs(60);
const NETWORK_TIMEOUT: Duration = Duration::from_secs(20);

/// What solving without building may use.
#[derive(Debug)]
pub struct Solver {
    /// Channels it may fetch, without trailing slashes.
    trusted: BTreeSet<String>,
    slots: Semaphore,
    /// Repodata kept between solves for the life of the process (revalidated by HTTP caching
    /// before each use), so a solve does not download the channels again.
    cache: Option<tempfile::TempDir>,
}

fn trim(c: &str) -> String {
    c.trim_end_matches('/').to_string()
}

impl Solver {
    /// Trusts the global policy's allowed and default channels and `extra`.
    pub fn new(global: &Policy, extra: &[String], max_solves: usize) -> Self {
        let trusted = global
            .allowed_channels
            .iter()
            .chain(global.default_channels.iter())
            .flatten()
            .chain(extra)
            .filter(|c| !c.is_empty())
            .map(|c| trim(c))
            .collect();
        let cache = tempfile::Builder::new()
            .prefix("conda-store-repodata-")
            .tempdir()
            .inspect_err(|e| tracing::warn!(error = %e, "no repodata cache for solves"))
            .ok();
        Solver {
            trusted,
            slots: Semaphore::new(max_solves.max(1)),
            cache,
        }
    }

    /// The channels it may fetch.
    pub fn channels(&self) -> Vec<String> {
        self.trusted.iter().cloned().collect()
    }

    /// Whether `channel` (as the normalised specification names it) may be fetched; a channel
    /// name counts under its expanded URL too.
    fn trusts(&self, channel: &str, alias: Option<&str>) -> bool {
        let c = trim(channel);
        if self.trusted.contains(&c) {
            return true;
        }
        match alias {
            Some(a) if !c.contains("://") && !c.starts_with('/') => {
                let expanded = format!("{}/{c}", a.trim_end_matches('/'));
                self.trusted.contains(&expanded)
            }
            _ => false,
        }
    }
}

/// One solved package as the `conda-store` client reads it (`name`, `version`, `channel_id`,
/// `size`), with its build, hashes and dependencies.
fn package(record: &conda_store_engine::solve::Record, channel_id: Option<i64>) -> Value {
    let p = &record.package_record;
    let channel = record.channel.clone().unwrap_or_default();
    json!({
        "id": null,
        "channel_id": channel_id,
        "channel": {"id": channel_id, "name": channel, "last_update": null},
        "name": p.name.as_normalized(),
        "version": p.version.to_string(),
        "build": p.build,
        "build_number": p.build_number,
        "subdir": p.subdir,
        "size": p.size.unwrap_or(0),
        "md5": p.md5.map(hex::encode),
        "sha256": p.sha256.map(hex::encode),
        "depends": p.depends,
        "license": p.license,
        "summary": null,
        "url": record.url.as_str(),
    })
}

fn solve_error(e: SolveError) -> ApiError {
    match e {
        SolveError::Repodata { .. } => ApiError::unavailable(e.to_string()),
        SolveError::Solver { .. } => ApiError::unavailable(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/specification",
    tag = "specification",
    summary = "Solve without building: the packages a build of these dependencies would install",
    params(
        ("channel" = Option<Vec<String>>, Query, description = "Channels (the published client sends `channels`, also read)"),
        ("conda" = Option<Vec<String>>, Query, description = "Conda match specs"),
        ("pip" = Option<Vec<String>>, Query, description = "pip requirements"),
    ),
    responses(Answers)
)]
pub async fn solve(State(app): AppState, caller: Caller, params: Params) -> ApiResult<Response> {
    let channels: Vec<&str> = params
        .all("channel")
        .into_iter()
        .chain(params.all("channels"))
        .collect();
    let conda = params.all("conda");
    let pip = params.all("pip");
    let mut dependencies: Vec<Value> = conda.iter().map(|c| json!(c)).collect();
    if !pip.is_empty() {
        dependencies.push(json!({ "pip": pip }));
    }
    let text = serde_yaml::to_string(&json!({
        "name": "conda-store-solve",
        "channels": channels,
        "dependencies": dependencies,
    }))
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The policy a build in the caller's primary namespace would have.
    let policy = match app.namespace(&caller.primary_namespace) {
        Some(ns) => ns.effective_policy(&app.policy, None),
        None => app.policy.clone(),
    };
    let spec = conda_store_crds::spec::normalize_yaml(&text, &policy)
        .map_err(|e| ApiError::bad_request(format!("the specification is not valid: {e}")))?;
    let alias = policy.channel_alias.as_deref();
    if !spec.dependencies.is_empty()
        && let Some(c) = spec.channels.iter().find(|c| !app.solver.trusts(c, alias))
    {
        return Err(ApiError::bad_request(format!(
            "this server solves without building only from the channels its configuration \
             names; {c} is not one of them. Build the environment to use it \
             (POST /api/v1/specification/)"
        )));
    }
    let _slot = tokio::time::timeout(QUEUE_WAIT, app.solver.slots.acquire())
        .await
        .map_err(|_| ApiError::unavailable("every solve slot is busy; try again shortly"))?
        .map_err(|_| ApiError::unavailable("solving is shut down"))?;
    let platform = spec
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(|| "linux-64".to_string());
    let solution = solve_request(&SolveRequest {
        channels: spec.channels.clone(),
        specs: spec.dependencies.clone(),
        pip: spec.pip.clone(),
        platforms: vec![platform.clone()],
        channel_alias: policy.channel_alias.clone(),
        timeout: Some(SOLVE_TIMEOUT),
        network_timeout: Some(NETWORK_TIMEOUT),
        repodata_cache: app.solver.cache.as_ref().map(|d| d.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .map_err(solve_error)?;
    let channel_ids: std::collections::BTreeMap<String, i64> = app
        .index
        .channels()
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|(id, name, _)| (trim(&name), id))
                .collect()
        })
        .unwrap_or_default();
    let packages: Vec<Value> = solution
        .platforms
        .get(&platform)
        .map(|records| {
            records
                .iter()
                .map(|r| {
                    let id = r
                        .channel
                        .as_deref()
                        .and_then(|c| channel_ids.get(&trim(c)).copied());
                    package(r, id)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(json!({"status": "ok", "solve": packages})).into_response())
}
