//! kiln-runtime: images as containers. Today: unpacking layers into snapshot directories,
//! safely (`unpack`).

pub mod unpack;
