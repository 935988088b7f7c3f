//! Blob bytes sent from the page cache with `sendfile(2)`, below HTTP.
//!
//! hyper writes a response body by handing its `Bytes` to the connection's writer. A blob's
//! body is a read-only memory map of the blob file ([`file_bytes`]), registered here with
//! the file it maps. The plain-TCP connection's writer ([`SendfileStream`]) recognises a
//! buffer that lies in a registered map and asks the kernel to send the same bytes from the
//! file instead of copying them from memory: the socket then refers to page-cache pages,
//! and the process never touches the data.
//!
//! Correctness never depends on the recognition: a map holds exactly the bytes the kernel
//! would send, so any writer that does not know about maps (TLS, HTTP/2 framing) simply
//! reads through it. Blob files are immutable once committed, and deleting one unlinks it
//! without truncating, so a live map stays valid.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Where a registered map's bytes come from.
#[derive(Clone, Copy, Debug)]
struct Source {
    fd: RawFd,
    /// File offset of the map's first byte.
    offset: u64,
    len: usize,
}

/// Live maps by start address. Entries are added after a map is made and removed before it
/// is unmapped, so an address found here always belongs to the map it names.
static MAPS: Mutex<BTreeMap<usize, Source>> = Mutex::new(BTreeMap::new());
/// Number of entries in [`MAPS`]: lets writes skip the lookup when nothing is mapped.
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn maps() -> MutexGuard<'static, BTreeMap<usize, Source>> {
    // The map is only ever inserted into or removed from: a panic elsewhere cannot leave
    // it half-changed.
    MAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file bytes that `buf` starts with, if `buf` lies in a registered map: the file, the
/// offset of `buf`'s first byte in it and how many of `buf`'s bytes the map covers.
fn source_of(buf: &[u8]) -> Option<(RawFd, u64, usize)> {
    if buf.is_empty() || LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let addr = buf.as_ptr() as usize;
    let maps = maps();
    let (&start, source) = maps.range(..=addr).next_back()?;
    let into = addr - start;
    (into < source.len).then(|| {
        (
            source.fd,
            source.offset + into as u64,
            (source.len - into).min(buf.len()),
        )
    })
}

/// A read-only map of `len` bytes of a file from `offset`, registered for `sendfile`.
struct FileMap {
    /// Open for `sendfile` while the map lives; closed after the mapping is gone.
    _file: File,
    /// Start of the mapping (page-aligned, at or before the wanted bytes).
    base: NonNull<libc::c_void>,
    mapped: usize,
    /// Start of the wanted bytes.
    data: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for FileMap {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for FileMap {}

impl FileMap {
    fn new(file: File, offset: u64, len: usize) -> io::Result<FileMap> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let start = offset - offset % page;
        let lead = (offset - start) as usize;
        let mapped = lead + len;
        let file_offset = libc::off_t::try_from(start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        // SAFETY: a fresh read-only shared mapping of an open file; nothing else refers to
        // the address range it returns.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                file_offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: a hint about the mapping just made; failure changes nothing.
        unsafe { libc::madvise(base.as_ptr(), mapped, libc::MADV_SEQUENTIAL) };
        // SAFETY: `lead` is within the mapping.
        let data = unsafe { NonNull::new_unchecked(base.as_ptr().cast::<u8>().add(lead)) };
        maps().insert(
            data.as_ptr() as usize,
            Source {
                fd: file.as_raw_fd(),
                offset,
                len,
            },
        );
        LIVE.fetch_add(1, Ordering::Release);
        Ok(FileMap {
            _file: file,
            base,
            mapped,
            data,
            len,
        })
    }
}

impl AsRef<[u8]> for FileMap {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data .. data + len` lies in the live, readable mapping.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if maps().remove(&(self.data.as_ptr() as usize)).is_some() {
            LIVE.fetch_sub(1, Ordering::Release);
        }
        // SAFETY: the mapping was made in `new`, is unregistered, and no `Bytes` refers to
        // it any more (this is their owner's drop).
        unsafe { libc::munmap(self.base.as_ptr(), self.mapped) };
    }
}

/// `len` bytes of `file` from `offset`, as `Bytes` that a [`SendfileStream`] sends straight
/// from the file. The file must not shrink while the bytes live.
pub fn file_bytes(file: File, offset: u64, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length out of range"))?;
    Ok(Bytes::from_owner(FileMap::new(file, offset, len)?))
}

/// A plain TCP connection whose writes of [`file_bytes`] go through `sendfile`.
#[derive(Debug)]
pub struct SendfileStream {
    inner: TcpStream,
}

impl SendfileStream {
    pub fn new(inner: TcpStream) -> SendfileStream {
        SendfileStream { inner }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        (fd, offset, count): (RawFd, u64, usize),
    ) -> Poll<io::Result<usize>> {
        let socket = self.inner.as_raw_fd();
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                let mut off = libc::off_t::try_from(offset).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "offset out of range")
                })?;
                // SAFETY: both descriptors are open: the socket is owned by `self`, the file
                // by the map that the buffer being written belongs to, which the caller
                // holds for the duration of this call.
                let n = unsafe { libc::sendfile(socket, fd, &mut off, count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                // The file ended before the map did: it was cut short under us.
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its map",
                    )))
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsRawFd for SendfileStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match source_of(buf) {
            Some(source) => self.poll_sendfile(cx, source),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Ordinary buffers up to the first mapped one go out together; a mapped buffer at
        // the front goes out by itself. The caller comes back for the rest.
        let first_mapped = bufs.iter().position(|b| source_of(b).is_some());
        match first_mapped {
            Some(0) => match source_of(&bufs[0]) {
                Some(source) => self.poll_sendfile(cx, source),
                None => Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..1]),
            },
            Some(n) => Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..n]),
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn blob(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        (dir, path, data)
    }

    #[test]
    fn a_map_reads_as_the_file_range_it_names() {
        let (_dir, path, data) = blob(3 * 4096 + 17);
        for (offset, len) in [
            (0, data.len()),
            (1, 5000),
            (4095, 2),
            (4096, 4096),
            (12000, 305),
        ] {
            let file = File::open(&path).expect("open");
            let bytes = file_bytes(file, offset as u64, len as u64).expect("map");
            assert_eq!(&bytes[..], &data[offset..offset + len], "{offset}+{len}");
            let inner = &bytes[1..];
            let (_, at, covered) = source_of(inner).expect("registered");
            assert_eq!((at, covered), (offset as u64 + 1, len - 1));
            assert!(
                source_of(&data[..]).is_none(),
                "ordinary memory is not a map"
            );
        }
    }

    #[test]
    fn a_dropped_map_is_forgotten() {
        let (_dir, path, _) = blob(10_000);
        let bytes = file_bytes(File::open(&path).expect("open"), 0, 10_000).expect("map");
        let addr = bytes.as_ptr() as usize;
        drop(bytes);
        assert!(!maps().contains_key(&addr));
    }

    /// Mixed writes of headers, mapped bytes and slices of them arrive in order, whole.
    #[tokio::test]
    async fn mapped_and_ordinary_buffers_arrive_in_order() {
        let (_dir, path, data) = blob(5 << 20);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = tokio::spawn(async move {
            let mut socket = TcpStream::connect(addr).await.expect("connect");
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.expect("read");
            got
        });
        let (socket, _) = listener.accept().await.expect("accept");
        let mut stream = SendfileStream::new(socket);
        let whole =
            file_bytes(File::open(&path).expect("open"), 0, data.len() as u64).expect("map");
        let part = whole.slice(100..200);
        let mut expected = b"head:".to_vec();
        expected.extend_from_slice(&data);
        expected.extend_from_slice(b":mid:");
        expected.extend_from_slice(&data[100..200]);
        let bufs = [
            Bytes::from_static(b"head:"),
            whole,
            Bytes::from_static(b":mid:"),
            part,
        ];
        let mut queue: Vec<Bytes> = bufs.to_vec();
        while !queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = stream.write_vectored(&slices).await.expect("write");
            while n > 0 {
                let first = &mut queue[0];
                let take = n.min(first.len());
                bytes::Buf::advance(first, take);
                n -= take;
                if first.is_empty() {
                    queue.remove(0);
                }
            }
        }
        stream.shutdown().await.expect("shutdown");
        drop(stream);
        assert!(reader.await.expect("reader") == expected);
    }
}
