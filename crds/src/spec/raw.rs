//! The specification as the person wrote it, before validation: every item keeps where it came
//! from, whether environment.yaml text (a line) or an Environment resource (a field path).

use super::error::{Collector, Location, SpecErrorKind, SpecErrors};
use super::yaml::{self, Node, Value};
use crate::v1alpha1::EnvironmentSpec;

/// Largest environment.yaml or lockfile text accepted, in bytes. Resources live in etcd, whose
/// objects are limited to about 1.5 MB.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// The top-level keys of environment.yaml that conda-store accepts.
pub const ALLOWED_KEYS: &str =
    "name, description, channels, dependencies, variables, prefix, platforms";

/// A value with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Location,
}

impl<T> Located<T> {
    fn new(value: T, loc: Location) -> Self {
        Located { value, loc }
    }
}

/// An environment specification as written, with locations, not yet validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSpec {
    /// `name`.
    pub name: Option<Located<String>>,
    /// `description`.
    pub description: Option<String>,
    /// `channels`, in priority order.
    pub channels: Vec<Located<String>>,
    /// The string items of `dependencies`.
    pub conda: Vec<Located<String>>,
    /// The items of the `pip:` sub-lists of `dependencies`.
    pub pip: Vec<Located<String>>,
    /// `variables`, in order written.
    pub variables: Vec<(Located<String>, String)>,
    /// `platforms`.
    pub platforms: Vec<Located<String>>,
    /// Where `dependencies` was given; `None` when absent.
    pub dependencies_at: Option<Location>,
    /// A conda-lock lockfile given instead of dependencies.
    pub lockfile: Option<Located<String>>,
}

impl RawSpec {
    /// Parses environment.yaml text in the shapes conda-store accepts: `dependencies` holding
    /// match-spec strings and `pip:` sub-lists; `prefix` accepted and ignored. Reports every
    /// problem found, each with its line.
    pub fn from_yaml(text: &str) -> Result<RawSpec, SpecErrors> {
        let (raw, errors) = Self::parse_yaml(text)?;
        errors.finish(raw)
    }

    /// Like [`RawSpec::from_yaml`], but returns what could be read together with the problems
    /// found, so normalisation can report its own findings too. Only text that is not a YAML
    /// mapping at all is an outright error.
    pub(crate) fn parse_yaml(text: &str) -> Result<(RawSpec, Collector), SpecErrors> {
        check_size(text)?;
        let root = yaml::parse(text).map_err(|e| {
            SpecErrors::one(Location::line(e.line, ""), SpecErrorKind::Syntax(e.message))
        })?;
        let mut errors = Collector::default();
        let mut raw = RawSpec::default();
        let top = Location::default();
        let Value::Map(entries) = &root.value else {
            return Err(SpecErrors::one(
                Location::line(root.line, ""),
                SpecErrorKind::WrongType {
                    expected: "a mapping of environment.yaml keys",
                    found: root.value.kind(),
                },
            ));
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let Value::Scalar(k) = &key.value else {
                errors.push(
                    Location::line(key.line, ""),
                    SpecErrorKind::WrongType {
                        expected: "a string key",
                        found: key.value.kind(),
                    },
                );
                continue;
            };
            let at = top.child(Some(key.line), k);
            if seen.contains(&k.as_str()) {
                errors.push(at, SpecErrorKind::DuplicateKey(k.clone()));
                continue;
            }
            seen.push(k);
            match k.as_str() {
                "name" => raw.name = scalar(value, &at, &mut errors).map(|s| Located::new(s, at)),
                "description" => raw.description = scalar(value, &at, &mut errors),
                "prefix" => {}
                "channels" => raw.channels = string_list(value, &at, &mut errors),
                "platforms" => raw.platforms = string_list(value, &at, &mut errors),
                "dependencies" => {
                    raw.dependencies_at = Some(at.clone());
                    dependencies(value, &at, &mut raw, &mut errors);
                }
                "variables" => raw.variables = variables(value, &at, &mut errors),
                _ => errors.push(
                    at,
                    SpecErrorKind::UnknownKey {
                        key: k.clone(),
                        allowed: ALLOWED_KEYS,
                    },
                ),
            }
        }
        Ok((raw, errors))
    }

    /// Reads the specification of an Environment resource. Dependencies there are free-form
    /// items (strings or `{pip: [...]}`), so their shape is checked here, with field paths.
    pub fn from_environment(spec: &EnvironmentSpec) -> Result<RawSpec, SpecErrors> {
        let mut errors = Collector::default();
        let base = Location::path("spec");
        let list = |field: &str, items: &[String]| -> Vec<Located<String>> {
            let at = base.child(None, field);
            items
                .iter()
                .enumerate()
                .map(|(i, s)| Located::new(s.clone(), at.child(None, &format!("[{i}]"))))
                .collect()
        };
        let mut raw = RawSpec {
            name: spec
                .name
                .as_ref()
                .map(|n| Located::new(n.clone(), base.child(None, "name"))),
            description: spec.description.clone(),
            channels: list("channels", &spec.channels),
            platforms: list("platforms", &spec.platforms),
            ..RawSpec::default()
        };
        if let Some(text) = &spec.lockfile {
            check_size(text)?;
            raw.lockfile = Some(Located::new(text.clone(), base.child(None, "lockfile")));
        }
        if let Some(deps) = &spec.dependencies {
            let at = base.child(None, "dependencies");
            raw.dependencies_at = Some(at.clone());
            for (i, item) in deps.iter().enumerate() {
                let item_at = at.child(None, &format!("[{i}]"));
                match &item.0 {
                    serde_json::Value::String(s) => {
                        raw.conda.push(Located::new(s.clone(), item_at))
                    }
                    serde_json::Value::Object(map) => {
                        for (k, v) in map {
                            let key_at = item_at.child(None, k);
                            if k != "pip" {
                                errors.push(
                                    key_at,
                                    SpecErrorKind::UnknownKey {
                                        key: k.clone(),
                                        allowed: "pip",
                                    },
                                );
                                continue;
                            }
                            match v {
                                serde_json::Value::Array(reqs) => {
                                    for (j, r) in reqs.iter().enumerate() {
                                        let r_at = key_at.child(None, &format!("[{j}]"));
                                        match r {
                                            serde_json::Value::String(s) => {
                                                raw.pip.push(Located::new(s.clone(), r_at))
                                            }
                                            other => errors.push(
                                                r_at,
                                                SpecErrorKind::WrongType {
                                                    expected: "a string",
                                                    found: json_kind(other),
                                                },
                                            ),
                                        }
                                    }
                                }
                                other => errors.push(
                                    key_at,
                                    SpecErrorKind::WrongType {
                                        expected: "a list",
                                        found: json_kind(other),
                                    },
                                ),
                            }
                        }
                    }
                    other => errors.push(
                        item_at,
                        SpecErrorKind::WrongType {
                            expected: "a match spec string or a pip: list",
                            found: json_kind(other),
                        },
                    ),
                }
            }
        }
        let vars_at = base.child(None, "variables");
        raw.variables = spec
            .variables
            .iter()
            .map(|(k, v)| (Located::new(k.clone(), vars_at.child(None, k)), v.clone()))
            .collect();
        errors.finish(raw)
    }
}

fn check_size(text: &str) -> Result<(), SpecErrors> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecErrors::one(
            Location::default(),
            SpecErrorKind::TooLarge {
                size: text.len(),
                limit: MAX_SPEC_BYTES,
            },
        ));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

fn scalar(node: &Node, at: &Location, errors: &mut Collector) -> Option<String> {
    match &node.value {
        Value::Scalar(s) => Some(s.clone()),
        Value::Null => None,
        other => {
            errors.push(
                at.child(Some(node.line), ""),
                SpecErrorKind::WrongType {
                    expected: "a string",
                    found: other.kind(),
                },
            );
            None
        }
    }
}

fn string_list(node: &Node, at: &Location, errors: &mut Collector) -> Vec<Located<String>> {
    match &node.value {
        Value::Null => Vec::new(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_at = at.child(Some(item.line), &format!("[{i}]"));
                match &item.value {
                    Value::Scalar(s) => Some(Located::new(s.clone(), item_at)),
                    other => {
                        errors.push(
                            item_at,
                            SpecErrorKind::WrongType {
                                expected: "a string",
                                found: other.kind(),
                            },
                        );
                        None
                    }
                }
            })
            .collect(),
        other => {
            errors.push(
                at.clone(),
                SpecErrorKind::WrongType {
                    expected: "a list",
                    found: other.kind(),
                },
            );
            Vec::new()
        }
    }
}

fn dependencies(node: &Node, at: &Location, raw: &mut RawSpec, errors: &mut Collector) {
    let items = match &node.value {
        Value::Null => return,
        Value::Seq(items) => items,
        other => {
            errors.push(
                at.clone(),
                SpecErrorKind::WrongType {
                    expected: "a list",
                    found: other.kind(),
                },
            );
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let item_at = at.child(Some(item.line), &format!("[{i}]"));
        match &item.value {
            Value::Scalar(s) => raw.conda.push(Located::new(s.clone(), item_at)),
            Value::Map(entries) => {
                for (k, v) in entries {
                    match &k.value {
                        Value::Scalar(name) if name == "pip" => {
                            let pip_at = item_at.child(Some(k.line), "pip");
                            raw.pip.extend(string_list(v, &pip_at, errors));
                        }
                        Value::Scalar(name) => errors.push(
                            item_at.child(Some(k.line), name),
                            SpecErrorKind::UnknownKey {
                                key: name.clone(),
                                allowed: "pip",
                            },
                        ),
                        other => errors.push(
                            item_at.clone(),
                            SpecErrorKind::WrongType {
                                expected: "a string key",
                                found: other.kind(),
                            },
                        ),
                    }
                }
            }
            other => errors.push(
                item_at,
                SpecErrorKind::WrongType {
                    expected: "a match spec string or a pip: list",
                    found: other.kind(),
                },
            ),
        }
    }
}

fn variables(node: &Node, at: &Location, errors: &mut Collector) -> Vec<(Located<String>, String)> {
    let entries = match &node.value {
        Value::Null => return Vec::new(),
        Value::Map(entries) => entries,
        other => {
            errors.push(
                at.clone(),
                SpecErrorKind::WrongType {
                    expected: "a mapping of variable names to values",
                    found: other.kind(),
                },
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Value::Scalar(name) = &k.value else {
            errors.push(
                at.child(Some(k.line), ""),
                SpecErrorKind::WrongType {
                    expected: "a variable name",
                    found: k.value.kind(),
                },
            );
            continue;
        };
        let var_at = at.child(Some(k.line), name);
        let value = match &v.value {
            Value::Scalar(s) => s.clone(),
            Value::Null => String::new(),
            other => {
                errors.push(
                    var_at.clone(),
                    SpecErrorKind::WrongType {
                        expected: "a string value",
                        found: other.kind(),
                    },
                );
                continue;
            }
        };
        out.push((Located::new(name.clone(), var_at), value));
    }
    out
}
