//! kiln-build: Dockerfiles to OCI images. Today: the Dockerfile parser (`dockerfile`),
//! `.dockerignore` rules (`ignore`) and layers made from filesystem changes (`layer`).

pub mod dockerfile;
pub mod ignore;
pub mod layer;
