//! kiln's cluster API: a Kubernetes-compatible API server that the real kubectl drives.

pub mod store;
