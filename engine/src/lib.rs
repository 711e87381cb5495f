//! The build engine: what the Jobs of a build do. `prefix` reads an installed prefix's
//! conda-meta; `pack` makes a relocatable archive of it and `image` an OCI image.

pub mod image;
pub mod pack;
pub mod prefix;
