//! What is wrong with a specification, and where.

use std::fmt;

/// Where in the input an error is: a line of environment.yaml text, a field path of a resource,
/// or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line in the text, when the input was text.
    pub line: Option<usize>,
    /// Field path such as `dependencies[2]` or `spec.channels[0]`.
    pub path: String,
}

impl Location {
    /// A location in text.
    pub fn line(line: usize, path: impl Into<String>) -> Self {
        Location {
            line: Some(line),
            path: path.into(),
        }
    }

    /// A field path in a structured object.
    pub fn path(path: impl Into<String>) -> Self {
        Location {
            line: None,
            path: path.into(),
        }
    }

    /// The location of a child field or item.
    pub fn child(&self, line: Option<usize>, segment: &str) -> Self {
        let path = if segment.is_empty() {
            self.path.clone()
        } else if self.path.is_empty() {
            segment.to_string()
        } else if segment.starts_with('[') {
            format!("{}{segment}", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        Location {
            line: line.or(self.line),
            path,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(l), false) => write!(f, "line {l} ({})", self.path),
            (Some(l), true) => write!(f, "line {l}"),
            (None, false) => f.write_str(&self.path),
            (None, true) => f.write_str("document"),
        }
    }
}

/// One problem with a specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct SpecError {
    /// Where it is.
    pub location: Location,
    /// What it is.
    pub kind: SpecErrorKind,
}

/// The kinds of specification errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecErrorKind {
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// A value has the wrong shape.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// A top-level key environment.yaml does not have.
    #[error("unknown key {key:?}; allowed keys are {allowed}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The allowed keys, comma-separated.
        allowed: &'static str,
    },
    /// A key given twice.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    /// Both inline dependencies and a lockfile.
    #[error("give either dependencies or a lockfile, not both")]
    SpecAndLockfile,
    /// A dependency that conda cannot read as a match spec.
    #[error("{spec:?} is not a valid conda match spec: {reason}")]
    InvalidMatchSpec {
        /// The dependency as written.
        spec: String,
        /// The parser's reason.
        reason: String,
    },
    /// A pip line this builder does not accept (see `spec::pip`).
    #[error("{requirement:?} is not a pip requirement this builder accepts: {reason}")]
    InvalidPipRequirement {
        /// The line as written.
        requirement: String,
        /// Why it is refused.
        reason: String,
    },
    /// A pip index outside the policy's `pypiAllowedIndexes`.
    #[error("pip index {index:?} is not allowed; allowed indexes are: {allowed}")]
    PipIndexNotAllowed {
        /// The index as written.
        index: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// A pip package the policy requires (`pypiRequiredPackages`).
    #[error("pip package {0:?} is required by policy and missing from the pip section")]
    RequiredPipPackageMissing(String),
    /// A channel that is neither a channel name nor a URL.
    #[error("{channel:?} is not a valid channel: {reason}")]
    InvalidChannel {
        /// The channel as written.
        channel: String,
        /// Why.
        reason: String,
    },
    /// A channel outside the allowlist.
    #[error("channel {channel:?} is not allowed; allowed channels are: {allowed}")]
    ChannelNotAllowed {
        /// The channel as written.
        channel: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// A `file://` channel the policy does not name: the build pods' volumes are not a place
    /// for a specification to go looking.
    #[error(
        "local channel {0:?} is not allowed: file:// channels must be named in the policy's allowedChannels or defaultChannels, or lie under its channelAlias"
    )]
    LocalChannelNotAllowed(String),
    /// A platform conda does not know.
    #[error("{0:?} is not a conda platform (such as linux-64, osx-arm64, win-64)")]
    InvalidPlatform(String),
    /// An environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("{0:?} is not a valid environment variable name")]
    InvalidVariableName(String),
    /// The environment name.
    #[error("invalid name: {0}")]
    InvalidName(#[from] crate::naming::NameError),
    /// A package policy requires.
    #[error("package {0:?} is required by policy and missing from the dependencies")]
    RequiredPackageMissing(String),
    /// A lockfile that is not a conda-lock v1 file.
    #[error("invalid lockfile: {0}")]
    InvalidLockfile(String),
    /// The input is larger than allowed.
    #[error("specification is {size} bytes; at most {limit} are allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// All errors found in one specification, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// A single error.
    pub fn one(location: Location, kind: SpecErrorKind) -> Self {
        SpecErrors(vec![SpecError { location, kind }])
    }

    /// The errors, in input order.
    pub fn iter(&self) -> impl Iterator<Item = &SpecError> {
        self.0.iter()
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Collects errors while a parser goes on, so a person sees every problem at once.
#[derive(Debug, Default)]
pub(crate) struct Collector(Vec<SpecError>);

impl Collector {
    pub(crate) fn push(&mut self, location: Location, kind: SpecErrorKind) {
        self.0.push(SpecError { location, kind });
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, SpecErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(SpecErrors(self.0))
        }
    }

    pub(crate) fn extend(&mut self, errors: SpecErrors) {
        self.0.extend(errors.0);
    }

    /// Orders errors by line, keeping input order within a line.
    pub(crate) fn sort_by_line(&mut self) {
        self.0.sort_by_key(|e| e.location.line);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
