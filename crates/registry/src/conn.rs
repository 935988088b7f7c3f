//! Per-connection plumbing below HTTP: requests on plain TCP connections carry their socket,
//! so that a large upload can ask the kernel to wake it only for big batches of data, and
//! blob bodies go out with `sendfile` (see [`crate::zero_copy`]).
//!
//! A blob body arrives in ~64 KiB segments; waking a task for each costs more CPU than
//! hashing and storing the bytes. `SO_RCVLOWAT` makes the socket readable only once
//! [`LOW_WATER`] bytes are queued. It must never exceed what is still to come, or the read
//! would wait forever: the upload handler sets it only while more than [`LOW_WATER_SLACK`]
//! bytes of the declared `Content-Length` are outstanding (far more than HTTP's read buffer
//! can hold ahead) and clears it before the end of the body and when the request is done.

use std::future::{ready, Ready};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use axum::http::Request;
use tokio::net::TcpStream;

use crate::zero_copy::SendfileStream;

/// Bytes the kernel gathers before waking a large upload.
const LOW_WATER: u64 = 256 << 10;

/// Outstanding bytes below which the low-water mark is cleared: more than HTTP's read
/// buffer (about 400 KiB) plus [`LOW_WATER`], so the mark never waits for bytes already read.
const LOW_WATER_SLACK: u64 = 1 << 20;

/// The socket a request came in on (plain TCP only). Valid while the request is handled.
#[derive(Clone, Copy, Debug)]
pub struct SocketFd(RawFd);

/// Accepts plain TCP connections, tagging each request with its socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct TagSocket;

impl<S> axum_server::accept::Accept<TcpStream, S> for TagSocket {
    type Stream = SendfileStream;
    type Service = WithSocket<S>;
    type Future = Ready<io::Result<(SendfileStream, WithSocket<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let fd = SocketFd(stream.as_raw_fd());
        ready(Ok((
            SendfileStream::new(stream),
            WithSocket { inner: service, fd },
        )))
    }
}

#[derive(Clone, Debug)]
pub struct WithSocket<S> {
    inner: S,
    fd: SocketFd,
}

impl<S, B> tower_service::Service<Request<B>> for WithSocket<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.fd);
        self.inner.call(req)
    }
}

/// Drives a socket's low-water mark over one request body of known length.
pub struct ReceiveLowWater {
    fd: Option<SocketFd>,
    outstanding: u64,
    raised: bool,
}

impl ReceiveLowWater {
    /// `fd` is the request's socket, if known; `length` its declared `Content-Length`.
    pub fn new(fd: Option<SocketFd>, length: Option<u64>) -> ReceiveLowWater {
        ReceiveLowWater {
            fd: fd.filter(|_| length.is_some()),
            outstanding: length.unwrap_or(0),
            raised: false,
        }
    }

    /// Call before waiting for more of the body.
    pub fn before_read(&mut self) {
        let want = self.outstanding > LOW_WATER_SLACK;
        if want != self.raised {
            self.set(if want { LOW_WATER } else { 1 });
            self.raised = want;
        }
    }

    /// Call with each piece of the body received.
    pub fn received(&mut self, bytes: usize) {
        self.outstanding = self.outstanding.saturating_sub(bytes as u64);
    }

    fn set(&self, bytes: u64) {
        let Some(SocketFd(fd)) = self.fd else { return };
        let value = bytes as libc::c_int;
        // SAFETY: `fd` is the open socket of the request being handled; the option only
        // changes when the kernel reports it readable. A failure leaves the default (1).
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl Drop for ReceiveLowWater {
    fn drop(&mut self) {
        // The connection may carry further requests, small ones included.
        if self.raised {
            self.set(1);
        }
    }
}
