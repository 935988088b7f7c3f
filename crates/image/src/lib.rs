//! kiln-image: image references, digests, the OCI model and the local image store.
//!
//! Everything else in kiln stands on this crate; it depends on no other kiln crate.

pub mod digest;
pub mod model;
pub mod pull_policy;
pub mod reference;
pub mod store;

pub use digest::{Algorithm, Digest, DigestError};
pub use model::{Compression, Document, ModelError, Platform};
pub use pull_policy::PullPolicy;
pub use reference::{Reference, ReferenceError};
pub use store::{Found, Image, ImageStore, StoreError, Target};
pub mod transfer;
