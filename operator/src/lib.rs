//! The operator's library: configuration, the pure decisions of each reconciler, the Job
//! objects they create and the controllers that carry the decisions out against the API.

pub mod blob_gc;
pub mod config;
pub mod controller;
pub mod decide;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod pod_security;
