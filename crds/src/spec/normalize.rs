//! Validation and normalisation: a [`RawSpec`] becomes a [`NormalizedSpec`] whose sha256 changes
//! only when what would be built changes. Dependencies are sorted and deduplicated (reordering
//! does not rebuild); channel order is kept, since it is priority.

use std::collections::BTreeMap;
use std::str::FromStr;

use rattler_conda_types::{MatchSpec, NamedChannelOrUrl, ParseStrictness, Subdir};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{Collector, Location, SpecErrorKind, SpecErrors};
use super::lockfile::{LockSpec, parse_lockfile};
use super::pip::{PipLine, index_key, parse_pip_line};
use super::raw::RawSpec;
use crate::v1alpha1::Policy;

/// The channel alias conda uses to expand channel names into URLs.
pub const DEFAULT_CHANNEL_ALIAS: &str = "https://conda.anaconda.org";

/// Prefix of the hashed canonical form; bump it when the canonical form changes.
const CANONICAL_FORM_VERSION: &[u8] = b"conda-store-spec/v1\n";

/// A validated specification in canonical form: what a Specification resource holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedSpec {
    /// Channels in priority order, without duplicates or trailing slashes.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Conda match specs, canonical spacing, lowercase names, sorted and deduplicated.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// pip requirements, sorted and deduplicated.
    #[serde(default)]
    pub pip: Vec<String>,
    /// Environment variables set on activation.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Target platforms, sorted; empty means the cluster's platform.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// The locked packages, when the specification is a lockfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockfile: Option<LockSpec>,
}

impl NormalizedSpec {
    /// The hex sha256 of the canonical form: equal specs hash alike, on every machine and run.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(CANONICAL_FORM_VERSION);
        // Struct fields serialise in declaration order and maps are BTreeMaps: deterministic.
        hasher.update(serde_json::to_vec(self).expect("a NormalizedSpec always serialises"));
        crate::hex(&hasher.finalize())
    }

    /// Package names of the conda dependencies.
    pub fn package_names(&self) -> impl Iterator<Item = &str> {
        self.dependencies.iter().map(|d| package_name(d))
    }
}

/// Parses environment.yaml text and normalises it under `policy`.
/// Reports every problem at once, in line order: shape errors found while reading and
/// validation errors of what could be read.
pub fn normalize_yaml(text: &str, policy: &Policy) -> Result<NormalizedSpec, SpecErrors> {
    normalize_yaml_as(text, policy, Origin::Tenant)
}

/// [`normalize_yaml`] for a file of the person running the command (the CLI's
/// `--specification`, `spec normalize`): `file://` channels are theirs to name.
pub fn normalize_yaml_local(text: &str, policy: &Policy) -> Result<NormalizedSpec, SpecErrors> {
    normalize_yaml_as(text, policy, Origin::Local)
}

/// Who wrote a specification: a tenant of the deployment (an Environment, the REST API), or the
/// person running a local command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Tenant,
    Local,
}

fn normalize_yaml_as(
    text: &str,
    policy: &Policy,
    origin: Origin,
) -> Result<NormalizedSpec, SpecErrors> {
    let (raw, mut errors) = RawSpec::parse_yaml(text)?;
    match normalize_as(&raw, policy, origin) {
        Ok(spec) => return errors.finish(spec),
        Err(more) => {
            for e in more.0 {
                errors.push(e.location, e.kind);
            }
        }
    }
    errors.sort_by_line();
    errors.finish(NormalizedSpec::default())
}

/// Validates `raw` under `policy` and brings it to canonical form, reporting every problem with
/// its location. Policy: channels outside `allowedChannels` are refused, `defaultChannels` fill
/// an empty channel list, `defaultPackages` are added when no dependency names them, and
/// `requiredPackages` must be named.
/// `file://` channels (and lockfile packages) are refused unless the policy names them.
pub fn normalize(raw: &RawSpec, policy: &Policy) -> Result<NormalizedSpec, SpecErrors> {
    normalize_as(raw, policy, Origin::Tenant)
}

fn normalize_as(
    raw: &RawSpec,
    policy: &Policy,
    origin: Origin,
) -> Result<NormalizedSpec, SpecErrors> {
    let mut errors = Collector::default();
    let local_ok =
        |url: &str, alias: &str| origin == Origin::Local || local_allowed(url, alias, policy);
    let alias = policy
        .channel_alias
        .as_deref()
        .unwrap_or(DEFAULT_CHANNEL_ALIAS)
        .trim_end_matches('/');
    let allowed: Vec<String> = policy
        .allowed_channels
        .iter()
        .flatten()
        .map(|c| channel_url(c, alias))
        .collect();

    if let Some(name) = &raw.name
        && let Err(e) = crate::naming::validate_conda_name(&name.value)
    {
        errors.push(name.loc.clone(), SpecErrorKind::InvalidName(e));
    }

    let mut channels = Vec::new();
    for ch in &raw.channels {
        let c = ch.value.trim().trim_end_matches('/').to_string();
        if let Err(reason) = validate_channel(&c) {
            errors.push(
                ch.loc.clone(),
                SpecErrorKind::InvalidChannel {
                    channel: ch.value.clone(),
                    reason,
                },
            );
            continue;
        }
        check_allowed(&c, &ch.loc, alias, &allowed, policy, &mut errors);
        if !local_ok(&channel_url(&c, alias), alias) {
            errors.push(
                ch.loc.clone(),
                SpecErrorKind::LocalChannelNotAllowed(ch.value.clone()),
            );
        }
        if !channels.contains(&c) {
            channels.push(c);
        }
    }

    let mut platforms = Vec::new();
    for p in &raw.platforms {
        let v = p.value.trim();
        match Subdir::from_str(v) {
            Ok(_) if !v.is_empty() => platforms.push(v.to_string()),
            _ => errors.push(
                p.loc.clone(),
                SpecErrorKind::InvalidPlatform(p.value.clone()),
            ),
        }
    }

    let mut variables = BTreeMap::new();
    for (name, value) in &raw.variables {
        if !is_variable_name(&name.value) {
            errors.push(
                name.loc.clone(),
                SpecErrorKind::InvalidVariableName(name.value.clone()),
            );
        } else if variables
            .insert(name.value.clone(), value.clone())
            .is_some()
        {
            errors.push(
                name.loc.clone(),
                SpecErrorKind::DuplicateKey(name.value.clone()),
            );
        }
    }

    let mut spec = NormalizedSpec {
        variables,
        ..NormalizedSpec::default()
    };

    if let Some(lockfile) = &raw.lockfile {
        if !raw.conda.is_empty() || !raw.pip.is_empty() {
            let at = raw.dependencies_at.clone().unwrap_or_default();
            errors.push(at, SpecErrorKind::SpecAndLockfile);
        }
        match parse_lockfile(&lockfile.value, &lockfile.loc) {
            Ok(lock) => {
                for (i, pkg) in lock.packages.iter().enumerate() {
                    if !local_ok(&pkg.url, alias) {
                        errors.push(
                            lockfile.loc.child(None, &format!("package[{i}]")),
                            SpecErrorKind::LocalChannelNotAllowed(pkg.url.clone()),
                        );
                    }
                    if pkg.manager == "conda" && !allowed.is_empty() {
                        let ok = allowed
                            .iter()
                            .any(|a| pkg.url.starts_with(&format!("{a}/")));
                        if !ok {
                            errors.push(
                                lockfile.loc.child(None, &format!("package[{i}]")),
                                SpecErrorKind::ChannelNotAllowed {
                                    channel: pkg.url.clone(),
                                    allowed: allowed_list(policy),
                                },
                            );
                        }
                    }
                }
                if channels.is_empty() {
                    channels = lock.channels.clone();
                }
                // The lockfile says which platforms it covers; anything else cannot be built.
                for p in &platforms {
                    if !lock.platforms.contains(p) {
                        errors.push(
                            lockfile.loc.clone(),
                            SpecErrorKind::InvalidLockfile(format!(
                                "platform {p:?} is requested but the lockfile does not cover it"
                            )),
                        );
                    }
                }
                platforms = lock.platforms.clone();
                spec.lockfile = Some(lock);
            }
            Err(e) => errors.extend(e),
        }
    } else {
        normalize_dependencies(raw, policy, &mut spec, &mut errors);
        if channels.is_empty() {
            channels = policy.default_channels.clone().unwrap_or_default();
        }
    }

    platforms.sort();
    platforms.dedup();
    spec.channels = channels;
    spec.platforms = platforms;
    errors.finish(spec)
}

fn normalize_dependencies(
    raw: &RawSpec,
    policy: &Policy,
    spec: &mut NormalizedSpec,
    errors: &mut Collector,
) {
    // No dependency at all is an empty environment, which conda-store builds too (a prefix
    // holding only conda-meta; the policy's default packages still apply).
    let mut conda = Vec::new();
    for dep in &raw.conda {
        match canonical_match_spec(&dep.value) {
            Ok(c) => conda.push(c),
            Err(reason) => errors.push(
                dep.loc.clone(),
                SpecErrorKind::InvalidMatchSpec {
                    spec: dep.value.clone(),
                    reason,
                },
            ),
        }
    }
    for pkg in policy.default_packages.iter().flatten() {
        if let Ok(c) = canonical_match_spec(pkg)
            && !conda.iter().any(|d| package_name(d) == package_name(&c))
        {
            conda.push(c);
        }
    }
    for pkg in policy.required_packages.iter().flatten() {
        let wanted = canonical_match_spec(pkg).unwrap_or_else(|_| pkg.clone());
        if !conda
            .iter()
            .any(|d| package_name(d) == package_name(&wanted))
        {
            let at = raw.dependencies_at.clone().unwrap_or_default();
            errors.push(at, SpecErrorKind::RequiredPackageMissing(pkg.clone()));
        }
    }
    conda.sort();
    conda.dedup();
    spec.dependencies = conda;

    spec.pip = normalize_pip(raw, policy, errors);
}

/// The pip section under the policy: each line checked (with its location), the policy's
/// default, included and required packages (conda-store's rules) and indexes applied.
fn normalize_pip(raw: &RawSpec, policy: &Policy, errors: &mut Collector) -> Vec<String> {
    let at = raw.dependencies_at.clone().unwrap_or_default();
    let mut lines: Vec<(String, PipLine)> = Vec::new();
    let allowed = policy
        .pypi_allowed_indexes
        .as_ref()
        .filter(|a| !a.is_empty());
    for req in &raw.pip {
        let line = match parse_pip_line(&req.value) {
            Ok(line) => line,
            Err(reason) => {
                errors.push(
                    req.loc.clone(),
                    SpecErrorKind::InvalidPipRequirement {
                        requirement: req.value.clone(),
                        reason,
                    },
                );
                continue;
            }
        };
        if let (PipLine::IndexUrl(u) | PipLine::ExtraIndexUrl(u), Some(allowed)) = (&line, allowed)
            && !allowed.iter().any(|a| index_key(a) == index_key(u))
        {
            errors.push(
                req.loc.clone(),
                SpecErrorKind::PipIndexNotAllowed {
                    index: u.clone(),
                    allowed: allowed.join(", "),
                },
            );
        }
        lines.push((req.value.clone(), line));
    }
    // What the policy adds is the deployment's text, not the person's: a bad entry is skipped.
    let policy_lines = |list: &Option<Vec<String>>| -> Vec<(String, PipLine)> {
        list.iter()
            .flatten()
            .filter_map(|r| parse_pip_line(r).ok().map(|l| (r.clone(), l)))
            .collect()
    };
    let names = |lines: &[(String, PipLine)]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|(_, l)| match l {
                PipLine::Requirement { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    };
    if names(&lines).is_empty() {
        lines.extend(policy_lines(&policy.pypi_default_packages));
    }
    for (text, line) in policy_lines(&policy.pypi_included_packages) {
        if let PipLine::Requirement { name, .. } = &line
            && !names(&lines).contains(name)
        {
            lines.push((text, line));
        }
    }
    for (text, line) in policy_lines(&policy.pypi_required_packages) {
        if let PipLine::Requirement { name, .. } = &line
            && !names(&lines).contains(name)
        {
            errors.push(at.clone(), SpecErrorKind::RequiredPipPackageMissing(text));
        }
    }
    let has_requirements = !names(&lines).is_empty();
    let has_index = lines.iter().any(|(_, l)| matches!(l, PipLine::IndexUrl(_)));
    if has_requirements
        && !has_index
        && let Some(url) = &policy.pypi_index_url
    {
        lines.push((format!("--index-url {url}"), PipLine::IndexUrl(url.clone())));
    }
    let mut pip: Vec<String> = lines
        .into_iter()
        .map(|(_, l)| match l {
            PipLine::Requirement { text, .. } => text,
            PipLine::IndexUrl(u) => format!("--index-url {u}"),
            PipLine::ExtraIndexUrl(u) => format!("--extra-index-url {u}"),
        })
        .collect();
    pip.sort();
    pip.dedup();
    pip
}

/// Characters around which whitespace carries no meaning in a match spec.
const OPERATORS: &str = "<>=!~,|";

/// The canonical text of a conda match spec: validated by conda's grammar (as rattler parses it),
/// whitespace collapsed and removed around operators, the package name lowercased. So
/// `NumPy >= 1.20` and `numpy>=1.20` are one dependency.
pub fn canonical_match_spec(spec: &str) -> Result<String, String> {
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err("empty".into());
    }
    MatchSpec::from_str(trimmed, ParseStrictness::Lenient).map_err(|e| e.to_string())?;
    let collapsed: Vec<char> = trimmed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    let mut out = String::with_capacity(collapsed.len());
    for (i, &c) in collapsed.iter().enumerate() {
        if c == ' ' {
            let prev_op = out.chars().last().is_some_and(|p| OPERATORS.contains(p));
            let next_op = collapsed
                .get(i + 1)
                .is_some_and(|n| OPERATORS.contains(*n) || *n == '[');
            if prev_op || next_op {
                continue;
            }
        }
        out.push(c);
    }
    let name_start = out.find("::").map(|i| i + 2).unwrap_or(0);
    let name_end = out[name_start..]
        .find(|c: char| c == ' ' || c == '[' || OPERATORS.contains(c))
        .map(|i| i + name_start)
        .unwrap_or(out.len());
    let lowered = out[name_start..name_end].to_lowercase();
    out.replace_range(name_start..name_end, &lowered);
    Ok(out)
}

/// The package name of a canonical match spec (`conda-forge::numpy>=1` → `numpy`).
pub fn package_name(spec: &str) -> &str {
    let start = spec.find("::").map(|i| i + 2).unwrap_or(0);
    let rest = &spec[start..];
    let end = rest
        .find(|c: char| c == ' ' || c == '[' || OPERATORS.contains(c))
        .unwrap_or(rest.len());
    &rest[..end]
}

fn validate_channel(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty".into());
    }
    if c.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    NamedChannelOrUrl::from_str(c)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The URL a channel name or URL stands for under `alias`.
fn channel_url(channel: &str, alias: &str) -> String {
    let c = channel.trim().trim_end_matches('/');
    if c.contains("://") {
        c.to_string()
    } else {
        format!("{alias}/{c}")
    }
}

/// Whether `url` may be read: anything but `file://`, and `file://` only where the policy (set
/// by whoever runs the deployment, never by the specification) points: its allowed or default
/// channels, or its channel alias. A specification naming `file:///srv/...` would otherwise read
/// whatever the build pod's volumes hold.
fn local_allowed(url: &str, alias: &str, policy: &Policy) -> bool {
    if !url.to_ascii_lowercase().starts_with("file:") {
        return true;
    }
    let url = url.trim_end_matches('/');
    let named = policy
        .allowed_channels
        .iter()
        .flatten()
        .chain(policy.default_channels.iter().flatten())
        .map(|c| channel_url(c.trim_end_matches('/'), alias))
        .any(|c| url == c || url.starts_with(&format!("{c}/")));
    named || (alias.starts_with("file:") && url.starts_with(&format!("{alias}/")))
}

fn check_allowed(
    channel: &str,
    at: &Location,
    alias: &str,
    allowed: &[String],
    policy: &Policy,
    errors: &mut Collector,
) {
    if allowed.is_empty() {
        return;
    }
    let url = channel_url(channel, alias);
    if !allowed.contains(&url) {
        errors.push(
            at.clone(),
            SpecErrorKind::ChannelNotAllowed {
                channel: channel.to_string(),
                allowed: allowed_list(policy),
            },
        );
    }
}

fn allowed_list(policy: &Policy) -> String {
    policy
        .allowed_channels
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_variable_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
