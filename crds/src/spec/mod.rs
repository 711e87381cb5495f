//! The environment specification model: parse environment.yaml (or an Environment resource, or
//! a conda-lock lockfile), validate it with errors that say where, normalise it, and hash it.
//!
//! Pure: no I/O, so the same rules run in the api-server, the operator and the tests.

pub mod error;
pub mod lockfile;
pub mod normalize;
pub mod pip;
pub mod raw;
pub mod yaml;

pub use error::{Location, SpecError, SpecErrorKind, SpecErrors};
pub use lockfile::{LockSpec, LockedPackage, parse_lockfile};
pub use normalize::{
    NormalizedSpec, canonical_match_spec, normalize, normalize_yaml, normalize_yaml_local,
    package_name,
};
pub use pip::{PipLine, normalize_project, parse_pip_line};
pub use raw::{Located, MAX_SPEC_BYTES, RawSpec};
