//! The build filters lists share (`status`, `artifact`, `packages`): on builds, and on
//! environments through their current build.

use std::collections::BTreeSet;

use conda_store_crds::{ArtifactKind, Build};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::views;

/// What a build must be to be listed.
pub struct BuildFilter {
    status: Option<String>,
    /// `Some(None)`: an artifact type conda-store knows but this server never makes.
    artifact: Option<Option<ArtifactKind>>,
    /// Ids of the builds holding every named package.
    packages: Option<BTreeSet<i64>>,
}

impl BuildFilter {
    /// Reads the filters, refusing unknown states and artifact types.
    pub async fn from(app: &App, params: &Params) -> ApiResult<BuildFilter> {
        let status = params.get("status").map(str::to_ascii_uppercase);
        if let Some(s) = &status
            && !["QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED"].contains(&s.as_str())
        {
            return Err(ApiError::bad_request(format!("unknown build status {s:?}")));
        }
        let artifact = match params.get("artifact") {
            Some(a) if views::ARTIFACT_TYPES.contains(&a) => Some(views::artifact_kind(a)),
            Some(a) => {
                return Err(ApiError::bad_request(format!(
                    "unknown artifact type {a:?}"
                )));
            }
            None => None,
        };
        let mut packages: Option<BTreeSet<i64>> = None;
        for p in params.all("packages") {
            let name = conda_store_crds::spec::normalize::package_name(p).to_ascii_lowercase();
            let ids: BTreeSet<i64> = app.index.builds_with(&name).await?.into_iter().collect();
            packages = Some(match packages {
                Some(prev) => prev.intersection(&ids).copied().collect(),
                None => ids,
            });
        }
        Ok(BuildFilter {
            status,
            artifact,
            packages,
        })
    }

    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        self.status.is_some() || self.artifact.is_some() || self.packages.is_some()
    }

    /// Whether `b` passes.
    pub fn accepts(&self, b: &Build) -> bool {
        let status = b.status.as_ref();
        if self
            .status
            .as_deref()
            .is_some_and(|s| views::build_phase(b).conda_store_name() != s)
        {
            return false;
        }
        if let Some(kind) = self.artifact {
            let has = kind
                .is_some_and(|k| status.is_some_and(|s| s.artifacts.iter().any(|a| a.kind == k)));
            if !has {
                return false;
            }
        }
        if let Some(ids) = &self.packages {
            let id = status.and_then(|s| s.id).unwrap_or(-1);
            if !ids.contains(&id) {
                return false;
            }
        }
        true
    }
}
