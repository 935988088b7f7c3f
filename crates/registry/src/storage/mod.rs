//! Registry storage: blob bytes behind a backend trait, metadata in SQLite.

pub mod backend;
pub mod meta;
