//! Registry storage: blob bytes behind a backend trait, metadata in SQLite.

pub mod backend;
mod fs_upload;
pub mod meta;
