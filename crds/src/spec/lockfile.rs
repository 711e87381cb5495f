//! conda-lock v1 lockfiles given as an environment's specification: parsed into a canonical,
//! order-independent form, so the same locked packages hash alike however they are listed.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Collector, Location, SpecErrorKind, SpecErrors};
use super::yaml::{self, Node, Value};

/// The packages of a lockfile, sorted by platform, manager, name and URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LockSpec {
    /// Channels recorded in the lockfile's metadata, in priority order.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Platforms the lockfile covers, sorted.
    pub platforms: Vec<String>,
    /// The locked packages.
    pub packages: Vec<LockedPackage>,
}

/// One package entry of a conda-lock v1 lockfile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockedPackage {
    /// Platform (subdir) the entry is for.
    pub platform: String,
    /// `conda` or `pip`.
    pub manager: String,
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Where the package file is.
    pub url: String,
    /// MD5 of the package file, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// SHA-256 of the package file, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Dependencies as recorded (name → version constraint; `*` where none is given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// conda-lock category, `main` unless told.
    #[serde(default = "main_category")]
    pub category: String,
    /// Whether the package is optional.
    #[serde(default)]
    pub optional: bool,
}

fn main_category() -> String {
    "main".to_string()
}

const MANAGERS: [&str; 2] = ["conda", "pip"];

/// Parses conda-lock v1 text. `at` locates the lockfile within its container (a resource field);
/// errors carry lines within the lockfile text.
pub fn parse_lockfile(text: &str, at: &Location) -> Result<LockSpec, SpecErrors> {
    let invalid = |line: usize, path: &str, msg: String| {
        SpecErrors::one(
            at.child(Some(line), path),
            SpecErrorKind::InvalidLockfile(msg),
        )
    };
    let root = yaml::parse(text).map_err(|e| {
        SpecErrors::one(at.child(Some(e.line), ""), SpecErrorKind::Syntax(e.message))
    })?;
    let Value::Map(entries) = &root.value else {
        return Err(invalid(root.line, "", "expected a mapping".into()));
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.value == Value::Scalar(key.into()))
    };
    match get("version") {
        Some((_, v)) if v.value == Value::Scalar("1".into()) => {}
        Some((k, v)) => {
            return Err(invalid(
                k.line,
                "version",
                format!(
                    "version {} is not supported; conda-lock v1 (version: 1) is",
                    scalar_text(v)
                ),
            ));
        }
        None => return Err(invalid(root.line, "", "missing `version: 1`".into())),
    }
    let mut errors = Collector::default();
    let mut spec = LockSpec::default();
    match get("metadata") {
        Some((_, meta)) => read_metadata(meta, at, &mut spec, &mut errors),
        None => errors.push(
            at.child(Some(root.line), "metadata"),
            SpecErrorKind::InvalidLockfile("missing `metadata`".into()),
        ),
    }
    match get("package") {
        Some((
            k,
            Node {
                value: Value::Seq(items),
                ..
            },
        )) => {
            // An empty list is an empty environment's lockfile (one this project writes for a
            // specification without dependencies, as conda-store builds those).
            let _ = k;
            for (i, item) in items.iter().enumerate() {
                let item_at = at.child(Some(item.line), &format!("package[{i}]"));
                if let Some(p) = read_package(item, &item_at, &spec.platforms, &mut errors) {
                    spec.packages.push(p);
                }
            }
        }
        Some((k, other)) => errors.push(
            at.child(Some(k.line), "package"),
            SpecErrorKind::InvalidLockfile(format!(
                "`package` must be a list, found {}",
                other.value.kind()
            )),
        ),
        None => errors.push(
            at.child(Some(root.line), "package"),
            SpecErrorKind::InvalidLockfile("missing `package` list".into()),
        ),
    }
    spec.packages.sort();
    spec.packages.dedup();
    errors.finish(spec)
}

fn scalar_text(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s) => s.clone(),
        other => other.kind().to_string(),
    }
}

fn field<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .find(|(k, _)| k.value == Value::Scalar(key.into()))
        .map(|(_, v)| v)
}

fn read_metadata(meta: &Node, at: &Location, spec: &mut LockSpec, errors: &mut Collector) {
    let meta_at = at.child(Some(meta.line), "metadata");
    let Value::Map(entries) = &meta.value else {
        errors.push(
            meta_at,
            SpecErrorKind::InvalidLockfile("`metadata` must be a mapping".into()),
        );
        return;
    };
    match field(entries, "platforms") {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) if !items.is_empty() => {
            for item in items {
                match &item.value {
                    Value::Scalar(p) => spec.platforms.push(p.clone()),
                    other => errors.push(
                        meta_at.child(Some(item.line), "platforms"),
                        SpecErrorKind::InvalidLockfile(format!(
                            "a platform must be a string, found {}",
                            other.kind()
                        )),
                    ),
                }
            }
        }
        _ => errors.push(
            meta_at.clone(),
            SpecErrorKind::InvalidLockfile(
                "`metadata.platforms` must list at least one platform".into(),
            ),
        ),
    }
    spec.platforms.sort();
    spec.platforms.dedup();
    if let Some(Node {
        value: Value::Seq(items),
        ..
    }) = field(entries, "channels")
    {
        for item in items {
            let url = match &item.value {
                Value::Scalar(s) => Some(s.clone()),
                Value::Map(ch) => field(ch, "url").and_then(|u| match &u.value {
                    Value::Scalar(s) => Some(s.clone()),
                    _ => None,
                }),
                _ => None,
            };
            match url {
                Some(u) => spec.channels.push(u),
                None => errors.push(
                    meta_at.child(Some(item.line), "channels"),
                    SpecErrorKind::InvalidLockfile(
                        "a channel must be a string or have a `url`".into(),
                    ),
                ),
            }
        }
    }
}

fn read_package(
    item: &Node,
    at: &Location,
    platforms: &[String],
    errors: &mut Collector,
) -> Option<LockedPackage> {
    let Value::Map(entries) = &item.value else {
        errors.push(
            at.clone(),
            SpecErrorKind::InvalidLockfile("a package entry must be a mapping".into()),
        );
        return None;
    };
    let before = errors.len();
    let mut required = |key: &str| -> String {
        match field(entries, key) {
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) if !s.is_empty() => s.clone(),
            _ => {
                errors.push(
                    at.clone(),
                    SpecErrorKind::InvalidLockfile(format!("package entry lacks `{key}`")),
                );
                String::new()
            }
        }
    };
    let name = required("name");
    let version = required("version");
    let manager = required("manager");
    let platform = required("platform");
    let url = required("url");
    let (mut md5, mut sha256) = (None, None);
    if let Some(Node {
        value: Value::Map(h),
        ..
    }) = field(entries, "hash")
    {
        for (k, v) in h {
            match (&k.value, &v.value) {
                (Value::Scalar(k), Value::Scalar(v)) if k == "md5" => md5 = Some(v.clone()),
                (Value::Scalar(k), Value::Scalar(v)) if k == "sha256" => sha256 = Some(v.clone()),
                _ => {}
            }
        }
    }
    if md5.is_none() && sha256.is_none() {
        errors.push(
            at.clone(),
            SpecErrorKind::InvalidLockfile(format!("package {name:?} has no md5 or sha256 hash")),
        );
    }
    if !manager.is_empty() && !MANAGERS.contains(&manager.as_str()) {
        errors.push(
            at.clone(),
            SpecErrorKind::InvalidLockfile(format!("manager {manager:?} is neither conda nor pip")),
        );
    }
    if !platform.is_empty() && !platforms.is_empty() && !platforms.contains(&platform) {
        errors.push(
            at.clone(),
            SpecErrorKind::InvalidLockfile(format!(
                "package {name:?} is for platform {platform:?}, which metadata.platforms does not list"
            )),
        );
    }
    let mut dependencies = BTreeMap::new();
    if let Some(Node {
        value: Value::Map(d),
        ..
    }) = field(entries, "dependencies")
    {
        for (k, v) in d {
            if let Value::Scalar(k) = &k.value {
                // No constraint is written `""` (conda-lock) or left empty; it is kept as `*`,
                // which means the same and survives API servers that turn "" into null.
                let v = match &v.value {
                    Value::Scalar(s) if !s.trim().is_empty() => s.trim().to_string(),
                    _ => "*".to_string(),
                };
                dependencies.insert(k.clone(), v);
            }
        }
    }
    let category = match field(entries, "category") {
        Some(Node {
            value: Value::Scalar(s),
            ..
        }) => s.clone(),
        _ => main_category(),
    };
    let optional = matches!(
        field(entries, "optional"),
        Some(Node { value: Value::Scalar(s), .. }) if s == "true"
    );
    if errors.len() != before {
        return None;
    }
    Some(LockedPackage {
        platform,
        manager,
        name,
        version,
        url,
        md5,
        sha256,
        dependencies,
        category,
        optional,
    })
}
