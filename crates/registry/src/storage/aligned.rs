//! Buffers for direct I/O, recycled through a small pool.
//!
//! Direct I/O needs aligned memory, and memory that stays mapped: freshly faulted pages cost
//! more than the copy they receive (markedly so in virtual machines, where a page's first
//! touch traps to the host). A handful of buffers serves every transfer in turn.

use std::ptr::NonNull;
use std::sync::Mutex;

/// Direct I/O offsets, lengths and buffer addresses are multiples of this. 4 KiB satisfies
/// every logical block size in use (512 and 4096), and is the page size mappings align to.
pub(super) const ALIGN: usize = 4096;

/// Bytes per buffer: big enough that transfers take few system calls, small enough that
/// many concurrent transfers stay cheap in memory.
pub(super) const BLOCK: usize = 256 << 10;

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
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    pub(super) len: usize,
}

// SAFETY: the buffer is plain owned memory, used by one owner at a time.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `filled`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer, from the pool when one is idle.
    pub(super) fn take() -> AlignedBuf {
        let pooled = POOL.0.lock().ok().and_then(|mut p| p.pop());
        let ptr = pooled.unwrap_or_else(map);
        AlignedBuf { ptr, len: 0 }
    }

    pub(super) fn filled(&self) -> &[u8] {
        // SAFETY: the allocation is BLOCK initialised bytes and `len <= BLOCK`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The part past `len`, to be filled.
    pub(super) fn spare(&mut self) -> &mut [u8] {
        // SAFETY: as in `filled`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), BLOCK - self.len) }
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub(super) fn extend(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(BLOCK - self.len);
        self.spare()[..n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    pub(super) fn is_full(&self) -> bool {
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

/// A window of a filled buffer, as the owner of a [`bytes::Bytes`]: the buffer returns to
/// the pool when the last reference to the bytes is dropped.
pub(super) struct Window {
    pub(super) buf: AlignedBuf,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.buf.filled()[self.start..self.end]
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

    #[test]
    fn a_window_is_the_bytes_it_names() {
        let mut buf = AlignedBuf::take();
        buf.extend(b"hello, world");
        let bytes = bytes::Bytes::from_owner(Window {
            buf,
            start: 7,
            end: 12,
        });
        assert_eq!(&bytes[..], b"world");
    }
}
