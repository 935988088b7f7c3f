//! kiln-build: Dockerfiles to OCI images. The Dockerfile parser (`dockerfile`), the build
//! context with `.dockerignore` rules and content digests (`context`, `ignore`), the stage
//! graph (`graph`), the executor with its cache (`executor`, `steps`), and layers made from
//! filesystem changes (`layer`, `compress`).

pub mod compress;
pub mod config;
pub mod context;
pub mod dockerfile;
pub mod executor;
pub mod fsops;
pub mod graph;
pub mod ignore;
pub mod layer;
pub mod progress;
mod steps;

pub use executor::{build, BaseImages, BuildError, BuildOptions, Built, CACHE_PINS};
