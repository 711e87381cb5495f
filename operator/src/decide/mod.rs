//! Pure decisions: from an object and what the caches show of its world, the next action.
//! No I/O here, so every rule is unit-tested without a cluster; the controllers carry the
//! actions out.

pub mod build;
pub mod conditions;
pub mod environment;
pub mod lease;
