//! kiln's cluster API: a Kubernetes-compatible API server that the real kubectl drives.

pub mod admission;
pub mod api;
pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod gc;
pub mod objects;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod resources;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod validation;
