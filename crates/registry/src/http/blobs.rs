//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{header_str, internal, parse_digest, Shared};
use crate::error::{code, ApiResult, Code};
use crate::storage::backend::BlobBackend;

/// A `Range: bytes=...` request resolved against a blob of `size` bytes:
/// `Ok(None)` for no range, `Ok(Some((start, len)))`, `Err` for an unsatisfiable one.
fn parse_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = value else { return Ok(None) };
    let spec = value.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1)),
        ),
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end - start + 1)))
}

/// Streams a blob from the backend. Chunks are produced as the connection asks for them, on
/// the async worker itself: each is a local read or a file mapping, quicker than handing it
/// over from a blocking thread would be.
pub(super) fn stream(
    backend: Arc<dyn BlobBackend>,
    digest: kiln_image::Digest,
    offset: u64,
    len: u64,
) -> Body {
    match backend.chunks(&digest, offset, len) {
        Ok(chunks) => Body::from_stream(futures_util::stream::iter(chunks)),
        Err(e) => Body::from_stream(futures_util::stream::iter([Err::<Bytes, _>(e)])),
    }
}

pub(super) fn get(
    r: &Shared,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    let Some(size) = r
        .meta
        .blob_in_repo(name, &digest)
        .map_err(internal("looking up blob"))?
    else {
        return Err(
            code(Code::BlobUnknown).detail(serde_json::json!({ "digest": digest.to_string() }))
        );
    };
    let range = parse_range(header_str(headers, "range"), size).map_err(|()| {
        code(Code::BlobUnknown)
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .message(format!(
                "requested range not satisfiable for a blob of {size} bytes"
            ))
            .header("content-range", format!("bytes */{size}"))
            .bodiless()
    })?;
    let (status, offset, len) = match range {
        Some((start, len)) => (StatusCode::PARTIAL_CONTENT, start, len),
        None => (StatusCode::OK, 0, size),
    };
    let body = if with_body {
        stream(r.backend.clone(), digest.clone(), offset, len)
    } else {
        Body::empty()
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if let Ok(v) = digest.to_string().parse() {
        h.insert("docker-content-digest", v);
    }
    if let Ok(v) = format!("\"{digest}\"").parse() {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = format!("bytes {}-{}/{size}", offset, offset + len - 1).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

pub(super) fn delete(r: &Shared, name: &str, digest: &str) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    if !r
        .meta
        .unlink_blob(name, &digest)
        .map_err(internal("deleting blob"))?
    {
        return Err(
            code(Code::BlobUnknown).detail(serde_json::json!({ "digest": digest.to_string() }))
        );
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, 0.into());
    if let Ok(v) = digest.to_string().parse() {
        response.headers_mut().insert("docker-content-digest", v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Ok(Some((0, 5))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 5))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 3))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 2))));
        for bad in [
            "bytes=10-12",
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            assert_eq!(parse_range(Some(bad), 10), Err(()), "{bad}");
        }
    }
}
