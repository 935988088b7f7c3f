//! An upload session's file: kiln-image's direct-I/O writer behind the backend's trait.

use std::io;
use std::path::Path;

use kiln_image::store::direct::DirectWriter;

use super::backend::UploadWriter;

pub(super) struct FsUpload(DirectWriter);

impl FsUpload {
    /// Opens (creating) the session file at `path`, positioned to append at `offset`.
    pub(super) fn open(path: &Path, offset: u64) -> io::Result<FsUpload> {
        DirectWriter::open(path, offset).map(FsUpload)
    }
}

impl UploadWriter for FsUpload {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync()
    }
}
