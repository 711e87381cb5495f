//! Types shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rbac::Role;

/// Grants a role on a conda-store namespace to the callers an entity pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// Whom the binding applies to: a `namespace/name` pattern matched against the caller's
    /// identity (their primary namespace and user name), `*` matching any run of characters
    /// within a segment. `*/*` matches every authenticated caller; `team/*` the members of
    /// namespace `team`; `anonymous` callers without credentials.
    pub entity: String,
    /// The role granted: `viewer`, `editor` (alias `developer`) or `admin`.
    pub role: Role,
}

/// Build policy. Set globally in the operator's configuration and overridden per Namespace, field
/// by field: a field left out inherits the global value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Channels environments may use, as names (expanded with the channel alias) or URLs. When
    /// set and not empty, any other channel is refused with an error naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_channels: Option<Vec<String>>,
    /// Channels used when a specification lists none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_channels: Option<Vec<String>>,
    /// Match specs added to every environment that does not already name the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_packages: Option<Vec<String>>,
    /// Packages every environment must name; a specification without one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_packages: Option<Vec<String>>,
    /// Base URL channel names expand to; `https://conda.anaconda.org` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_alias: Option<String>,
    /// pip requirements used as the pip section of an environment that has none
    /// (conda-store's `pypi_default_packages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_default_packages: Option<Vec<String>>,
    /// pip requirements added to every pip section that does not already name the project
    /// (conda-store's `pypi_included_packages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_included_packages: Option<Vec<String>>,
    /// Projects every environment's pip section must name; one without them is refused
    /// (conda-store's `pypi_required_packages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_required_packages: Option<Vec<String>>,
    /// The index pip sections use when they name none (an `--index-url` line is added);
    /// the deployment's (`--pip-index-url`, else PyPI) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_index_url: Option<String>,
    /// Indexes a pip section may name with `--index-url` / `--extra-index-url`. When set and
    /// not empty, any other index is refused with an error naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_allowed_indexes: Option<Vec<String>>,
}

impl Policy {
    /// This policy with every field `over` sets taking precedence.
    pub fn overridden_by(&self, over: &Policy) -> Policy {
        Policy {
            allowed_channels: over
                .allowed_channels
                .clone()
                .or_else(|| self.allowed_channels.clone()),
            default_channels: over
                .default_channels
                .clone()
                .or_else(|| self.default_channels.clone()),
            default_packages: over
                .default_packages
                .clone()
                .or_else(|| self.default_packages.clone()),
            required_packages: over
                .required_packages
                .clone()
                .or_else(|| self.required_packages.clone()),
            channel_alias: over
                .channel_alias
                .clone()
                .or_else(|| self.channel_alias.clone()),
            pypi_default_packages: over
                .pypi_default_packages
                .clone()
                .or_else(|| self.pypi_default_packages.clone()),
            pypi_included_packages: over
                .pypi_included_packages
                .clone()
                .or_else(|| self.pypi_included_packages.clone()),
            pypi_required_packages: over
                .pypi_required_packages
                .clone()
                .or_else(|| self.pypi_required_packages.clone()),
            pypi_index_url: over
                .pypi_index_url
                .clone()
                .or_else(|| self.pypi_index_url.clone()),
            pypi_allowed_indexes: over
                .pypi_allowed_indexes
                .clone()
                .or_else(|| self.pypi_allowed_indexes.clone()),
        }
    }
}

/// How many builds to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Builds kept per environment, newest first; older builds and their artifacts are deleted.
    /// The current and the pinned build are always kept. Unset keeps every build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_builds: Option<u32>,
}

/// The kinds of artifacts a build produces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactKind {
    /// The conda-lock v1 lockfile of the solve.
    Lockfile,
    /// The environment exported as YAML with exact pins.
    Yaml,
    /// A relocatable archive of the installed prefix (conda-pack's contract).
    Archive,
    /// An OCI image of the installed prefix.
    Image,
    /// A step's log.
    Logs,
}

impl ArtifactKind {
    /// What a build produces unless told otherwise: as conda-store, everything but the image.
    pub const DEFAULTS: [ArtifactKind; 3] = [
        ArtifactKind::Lockfile,
        ArtifactKind::Yaml,
        ArtifactKind::Archive,
    ];
}

/// An artifact a build wrote to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// What it is.
    pub kind: ArtifactKind,
    /// Its key in artifact storage.
    pub key: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Content digest, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}
