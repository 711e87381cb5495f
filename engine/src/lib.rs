//! The build engine: what the Jobs of a build do. `solve` turns specs into exact packages per
//! platform and `lockfile` writes and reads them as conda-lock v1; `install` makes a prefix from
//! a lockfile; `pip` resolves and installs a pip section with uv; `prefix` reads an installed prefix's conda-meta; `pack` makes a relocatable
//! archive of it and `image` an OCI image. `channel` writes and indexes local channels (test
//! fixtures, benchmark repodata).

pub mod cache_dir;
pub mod channel;
pub mod forge;
mod hashing;
pub mod http;
pub mod image;
pub mod install;
pub mod lockfile;
pub mod pack;
pub mod pip;
pub mod prefix;
mod relocate;
pub mod solve;
pub mod static_http;
pub mod tls;
