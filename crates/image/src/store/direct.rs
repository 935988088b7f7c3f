//! Appending to files with direct I/O, in pooled aligned buffers.
//!
//! Blob bytes are written once and read back rarely soon after, so copying them into the
//! page cache buys nothing: the copy costs as much CPU as hashing them, and the final fsync
//! then has the whole blob left to write. Full aligned blocks therefore go to the file with
//! `O_DIRECT` (the device reads them straight from our buffer). An unaligned tail that must
//! survive this process (an acknowledged upload chunk) is written through the page cache by
//! a second descriptor and kept in the buffer until its block fills up and is rewritten
//! directly. Where `O_DIRECT` is refused (tmpfs, some overlays) everything goes through the
//! page cache, with writeback started early.
//!
//! Buffers come from a small pool of mapped memory: freshly faulted pages cost more than the
//! copy they receive (markedly so in virtual machines, where a page's first touch traps to
//! the host), so a handful of buffers serves every transfer in turn.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Mutex;

use crate::store::blobs::start_writeback;

/// Direct I/O offsets, lengths and buffer addresses are multiples of this. 4 KiB satisfies
/// every logical block size in use (512 and 4096), and is the page size mappings align to.
pub const ALIGN: usize = 4096;

/// Bytes per buffer: big enough that transfers take few system calls, small enough that
/// many concurrent transfers stay cheap in memory.
pub const BLOCK: usize = 256 << 10;

/// Idle buffers kept for reuse (beyond these, returned buffers are freed).
const POOL_SIZE: usize = 16;

struct Pool(Mutex<Vec<NonNull<u8>>>);

// SAFETY: the pool only holds owned, unused allocations; the mutex serialises access.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(Mutex::new(Vec::new()));

/// Maps a fresh buffer. Mapped rather than taken from the allocator: large aligned
/// allocations fragment malloc's heap, which then holds on to far more than is in use.
fn map() -> NonNull<u8> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BLOCK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(BLOCK, ALIGN)
                .unwrap_or(std::alloc::Layout::new::<u8>()),
        );
    }
    NonNull::new(raw.cast())
        .unwrap_or_else(|| std::alloc::handle_alloc_error(std::alloc::Layout::new::<u8>()))
}

/// `BLOCK` bytes of page-aligned memory, of which the first `len` hold data. Always
/// initialised (zeroed when mapped), so every part of it may be handed out as a slice.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: the buffer is plain owned memory, used by one owner at a time.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `filled`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer, from the pool when one is idle.
    pub fn take() -> AlignedBuf {
        let pooled = POOL.0.lock().ok().and_then(|mut p| p.pop());
        let ptr = pooled.unwrap_or_else(map);
        AlignedBuf { ptr, len: 0 }
    }

    pub fn filled(&self) -> &[u8] {
        // SAFETY: the allocation is BLOCK initialised bytes and `len <= BLOCK`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The part past `len`, to be filled.
    pub fn spare(&mut self) -> &mut [u8] {
        // SAFETY: as in `filled`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), BLOCK - self.len) }
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(BLOCK - self.len);
        self.spare()[..n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    pub fn is_full(&self) -> bool {
        self.len == BLOCK
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(mut pool) = POOL.0.lock() {
            if pool.len() < POOL_SIZE {
                pool.push(self.ptr);
                return;
            }
        }
        // SAFETY: mapped in `map` with this length, and no longer referenced.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), BLOCK);
        }
    }
}

/// Buffered (fallback) writes start writeback for each stretch this long, so that the
/// final fsync has little left to do.
const WRITEBACK_STRETCH: u64 = 8 << 20;

pub struct DirectWriter {
    /// Opened with `O_DIRECT` when `direct`; used for aligned block writes.
    block_file: File,
    /// Opened without `O_DIRECT`: tails, truncation, reading back, and every write in the
    /// fallback mode.
    file: File,
    direct: bool,
    /// The bytes from `buf_start` to the end of the upload (less than one block).
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte; aligned while `direct`.
    buf_start: u64,
    /// How much of `buf` is already in the file (written as a tail).
    buf_written: usize,
    /// Fallback mode: bytes up to here have had writeback started.
    writeback_from: u64,
}

impl DirectWriter {
    /// Opens (creating) the session file at `path`, positioned to append at `offset`.
    pub fn open(path: &Path, offset: u64) -> io::Result<DirectWriter> {
        Self::open_with(path, true, offset)
    }

    fn open_with(path: &Path, try_direct: bool, offset: u64) -> io::Result<DirectWriter> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        Self::wrap(file, path, try_direct, offset)
    }

    /// Appends to `file`, already open (for writing and reading) at `path`, from its start.
    /// `file` stays the descriptor for tails and is what [`DirectWriter::into_file`] returns,
    /// so locks held on it are kept.
    pub fn from_file(file: File, path: &Path) -> io::Result<DirectWriter> {
        Self::wrap(file, path, true, 0)
    }

    /// Everything written, handed to the file; returns the ordinary descriptor.
    pub fn into_file(mut self) -> io::Result<File> {
        self.flush()?;
        Ok(self.file)
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.buf_start + self.buf.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wrap(file: File, path: &Path, try_direct: bool, offset: u64) -> io::Result<DirectWriter> {
        let direct_file = match try_direct {
            true => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path),
            false => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let (block_file, direct) = match direct_file {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (file.try_clone()?, false),
            Err(e) => return Err(e),
        };
        let mut upload = DirectWriter {
            block_file,
            file,
            direct,
            buf: AlignedBuf::take(),
            buf_start: 0,
            buf_written: 0,
            writeback_from: 0,
        };
        upload.truncate(offset)?;
        Ok(upload)
    }

    /// Writes the full buffer as one block and starts the next one.
    fn write_block(&mut self) -> io::Result<()> {
        if self.direct {
            match self
                .block_file
                .write_all_at(self.buf.filled(), self.buf_start)
            {
                Ok(()) => {}
                // A filesystem may take O_DIRECT at open and refuse it at write time.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = false;
                    self.file.write_all_at(self.buf.filled(), self.buf_start)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            let unwritten = &self.buf.filled()[self.buf_written..];
            self.file
                .write_all_at(unwritten, self.buf_start + self.buf_written as u64)?;
        }
        self.buf_start += self.buf.len as u64;
        self.buf.len = 0;
        self.buf_written = 0;
        if !self.direct && self.buf_start - self.writeback_from >= WRITEBACK_STRETCH {
            start_writeback(
                &self.file,
                self.writeback_from,
                self.buf_start - self.writeback_from,
            );
            self.writeback_from = self.buf_start;
        }
        Ok(())
    }
}

impl DirectWriter {
    pub fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.buf.extend(bytes);
            bytes = &bytes[n..];
            if self.buf.is_full() {
                self.write_block()?;
            }
        }
        Ok(())
    }

    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        // Whatever the buffer held is either in the file or cut off by this truncation.
        self.flush()?;
        let stored = self.file.metadata()?.len();
        if stored < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("upload holds {stored} bytes, {len} were acknowledged"),
            ));
        }
        self.file.set_len(len)?;
        self.buf_start = if self.direct {
            len - len % ALIGN as u64
        } else {
            len
        };
        let tail = (len - self.buf_start) as usize;
        self.buf.len = 0;
        self.file
            .read_exact_at(&mut self.buf.spare()[..tail], self.buf_start)?;
        self.buf.len = tail;
        self.buf_written = tail;
        self.writeback_from = self.writeback_from.min(self.buf_start);
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf_written < self.buf.len {
            let unwritten = &self.buf.filled()[self.buf_written..];
            self.file
                .write_all_at(unwritten, self.buf_start + self.buf_written as u64)?;
            self.buf_written = self.buf.len;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_come_back_empty() {
        let mut a = AlignedBuf::take();
        assert_eq!(a.ptr.as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.extend(&[7u8; 10]), 10);
        drop(a);
        let b = AlignedBuf::take();
        assert_eq!(b.len, 0);
        assert_eq!(b.ptr.as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    fn extend_stops_at_the_end() {
        let mut a = AlignedBuf::take();
        let big = vec![1u8; BLOCK + 10];
        assert_eq!(a.extend(&big), BLOCK);
        assert!(a.is_full());
        assert_eq!(a.extend(&big), 0);
    }

    /// Both modes: direct I/O (where the test directory's filesystem has it) and buffered.
    const MODES: [bool; 2] = [true, false];

    fn contents(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("reading the upload")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn appends_of_every_size_land_in_order() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("u");
            let mut upload = DirectWriter::open_with(&path, direct, 0).expect("open");
            let mut expected = Vec::new();
            for (i, size) in [1, 4095, 4097, BLOCK - 3, 2 * BLOCK + 5, 7, BLOCK]
                .into_iter()
                .enumerate()
            {
                let part = pattern(size, i as u8);
                upload.write_all(&part).expect("write");
                expected.extend_from_slice(&part);
                // Every acknowledged chunk is visible to readers of the file.
                upload.flush().expect("flush");
                assert_eq!(contents(&path), expected, "after part {i}");
            }
            upload.sync().expect("sync");
            assert_eq!(contents(&path), expected);
        }
    }

    #[test]
    fn reopening_resumes_at_the_acknowledged_size() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("u");
            let first = pattern(BLOCK + 1234, 1);
            {
                let mut upload = DirectWriter::open_with(&path, direct, 0).expect("open");
                upload.write_all(&first).expect("write");
                upload.flush().expect("flush");
                // Never acknowledged: must be cut off on resume.
                upload.write_all(&pattern(10_000, 9)).expect("write");
                upload.flush().expect("flush");
            }
            let mut upload =
                DirectWriter::open_with(&path, direct, first.len() as u64).expect("reopen");
            let second = pattern(BLOCK * 2, 2);
            upload.write_all(&second).expect("write");
            upload.sync().expect("sync");
            let mut expected = first;
            expected.extend_from_slice(&second);
            assert_eq!(contents(&path), expected);
        }
    }

    #[test]
    fn truncate_rewinds_across_written_blocks() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("u");
            let mut upload = DirectWriter::open_with(&path, direct, 0).expect("open");
            let kept = pattern(5000, 3);
            upload.write_all(&kept).expect("write");
            upload.write_all(&pattern(3 * BLOCK, 4)).expect("write");
            upload.truncate(kept.len() as u64).expect("truncate");
            let more = pattern(BLOCK + 1, 5);
            upload.write_all(&more).expect("write");
            upload.flush().expect("flush");
            let mut expected = kept;
            expected.extend_from_slice(&more);
            assert_eq!(contents(&path), expected);
        }
    }

    #[test]
    fn resuming_past_the_stored_bytes_is_refused() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("u");
            std::fs::write(&path, b"abc").expect("write");
            let err = DirectWriter::open_with(&path, direct, 10)
                .err()
                .expect("must fail");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
