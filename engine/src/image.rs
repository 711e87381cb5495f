//! OCI images built directly from installed prefixes.
