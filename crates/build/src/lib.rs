//! kiln-build: Dockerfiles to OCI images. Today: the Dockerfile parser (`dockerfile`), the
//! build context with `.dockerignore` rules and content digests (`context`, `ignore`) and layers made from filesystem changes (`layer`).

pub mod context;
pub mod dockerfile;
pub mod ignore;
pub mod layer;
