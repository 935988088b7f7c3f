//! Reading committed blobs with direct I/O, in pooled buffers handed out as `Bytes`.
//!
//! Uploads are written around the page cache (see `fs_upload`), so a blob is rarely cached
//! when it is first pulled; reading it directly into a reused buffer saves filling the cache
//! with pages that this process copies out once. Where `O_DIRECT` is refused the caller
//! falls back to ordinary reads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;

use kiln_image::store::direct::{AlignedBuf, Window, ALIGN, BLOCK};

/// The bytes `offset .. offset + len` of a file, one buffer at a time.
pub(super) struct DirectChunks {
    file: File,
    /// Aligned file position of the next read.
    position: u64,
    /// Bytes to skip at the start of the next buffer (an unaligned `offset`).
    skip: usize,
    remaining: u64,
}

impl DirectChunks {
    /// `Ok(None)` when the filesystem refuses direct I/O.
    pub(super) fn open(path: &Path, offset: u64, len: u64) -> io::Result<Option<DirectChunks>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let position = offset - offset % ALIGN as u64;
        Ok(Some(DirectChunks {
            file,
            position,
            skip: (offset - position) as usize,
            remaining: len,
        }))
    }

    fn read_next(&mut self) -> io::Result<Bytes> {
        let mut buf = AlignedBuf::take();
        // Whole buffers: direct reads must cover aligned lengths; the file's end may come
        // sooner, and then the read is short.
        let mut filled = 0;
        let wanted = (self.skip as u64 + self.remaining).min(BLOCK as u64) as usize;
        while filled < wanted {
            let n = self
                .file
                .read_at(&mut buf.spare()[filled..], self.position + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.len = filled;
        let start = self.skip.min(filled);
        let end = (start as u64 + self.remaining).min(filled as u64) as usize;
        if end == start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob is shorter than recorded",
            ));
        }
        self.position += filled as u64;
        self.skip = 0;
        self.remaining -= (end - start) as u64;
        Ok(Bytes::from_owner(Window { buf, start, end }))
    }
}

impl Iterator for DirectChunks {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.remaining == 0 {
            return None;
        }
        let chunk = self.read_next();
        if chunk.is_err() {
            self.remaining = 0;
        }
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_reads_back_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(2 * BLOCK + 5000)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let total = data.len() as u64;
        for (offset, len) in [
            (0, total),
            (1, total - 1),
            (4095, 3),
            (4096, BLOCK as u64),
            (BLOCK as u64 - 1, 2),
            (total - 1, 1),
            (12345, total - 12345),
        ] {
            let Some(chunks) = DirectChunks::open(&path, offset, len).expect("open") else {
                return; // no direct I/O on this filesystem: nothing to test
            };
            let mut got = Vec::new();
            for chunk in chunks {
                got.extend_from_slice(&chunk.expect("read"));
            }
            let (o, l) = (offset as usize, len as usize);
            assert_eq!(got, data[o..o + l], "offset {offset} len {len}");
        }
    }

    #[test]
    fn a_blob_shorter_than_recorded_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![1u8; 100]).expect("write");
        let Some(chunks) = DirectChunks::open(&path, 0, 200).expect("open") else {
            return;
        };
        let results: Vec<_> = chunks.collect();
        assert!(results.last().is_some_and(|r| r.is_err()));
    }
}
