//! kiln-runtime: images as containers. Today: unpacking layers safely (`unpack`) into
//! snapshots and root filesystems (`snapshot`).

pub mod bundle;
pub mod container;
pub mod snapshot;
pub mod unpack;
