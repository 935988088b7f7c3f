//! Blob uploads: `POST` (session, monolithic, or mount), `PATCH` (streamed or chunked),
//! `PUT ?digest=` (finish), `GET` (status), `DELETE` (cancel).

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{
    check_name, drain_then, header_str, internal, origin, parse_digest, query_value, stream_body,
    Shared,
};
use crate::auth::{Action, Scope};
use crate::error::{code, ApiError, ApiResult, Code};
use crate::uploads::{Session, SessionHandle};

/// Advertised as `OCI-Chunk-Min-Length`: the smallest part an object store's multipart upload
/// accepts, so that clients size chunks to suit any backend. Smaller chunks are still taken.
const CHUNK_MIN_LENGTH: u64 = 5 << 20;

/// A streamed upload records its progress every this many bytes.
const STREAM_CHECKPOINT: u64 = 16 << 20;

fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn session_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut response = status.into_response();
    let h = response.headers_mut();
    if let Ok(v) = format!("/v2/{name}/blobs/uploads/{id}").parse() {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = range_value(size).parse() {
        h.insert(header::RANGE, v);
    }
    if let Ok(v) = id.parse() {
        h.insert("docker-upload-uuid", v);
    }
    h.insert(header::CONTENT_LENGTH, 0.into());
    response
}

fn created(name: &str, digest: &kiln_image::Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    if let Ok(v) = format!("/v2/{name}/blobs/{digest}").parse() {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = digest.to_string().parse() {
        h.insert("docker-content-digest", v);
    }
    h.insert(header::CONTENT_LENGTH, 0.into());
    response
}

fn unknown_upload(id: &str) -> ApiError {
    code(Code::BlobUploadUnknown).detail(serde_json::json!({ "uuid": id }))
}

fn find(r: &Shared, name: &str, id: &str) -> ApiResult<SessionHandle> {
    r.sessions
        .get(&r.meta, r.backend.as_ref(), name, id)
        .map_err(internal("opening upload session"))?
        .ok_or_else(|| unknown_upload(id))
}

/// Checks a chunk's `Content-Range` (`start-end`, inclusive) against the session.
fn check_chunk(headers: &HeaderMap, session: &Session) -> ApiResult<()> {
    let Some(range) = header_str(headers, "content-range") else {
        return Ok(());
    };
    let invalid = |why: String| {
        code(Code::BlobUploadInvalid)
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .message(why)
            .header("range", range_value(session.size))
            .header(
                "location",
                format!("/v2/{}/blobs/uploads/{}", session.repo, session.id),
            )
    };
    let spec = range.trim().strip_prefix("bytes ").unwrap_or(range.trim());
    let spec = spec.split('/').next().unwrap_or(spec);
    let (start, end) = spec
        .split_once('-')
        .and_then(|(s, e)| Some((s.trim().parse::<u64>().ok()?, e.trim().parse::<u64>().ok()?)))
        .ok_or_else(|| invalid(format!("invalid Content-Range {range:?}")))?;
    if start != session.size || end < start {
        return Err(invalid(format!(
            "chunk {start}-{end} does not continue the upload, which has {} bytes",
            session.size
        )));
    }
    if let Some(len) = header_str(headers, "content-length").and_then(|l| l.parse::<u64>().ok()) {
        if len != end - start + 1 {
            return Err(invalid(format!(
                "Content-Range {range:?} does not match Content-Length {len}"
            )));
        }
    }
    Ok(())
}

/// Appends a request body to a session; a body that breaks off half-way is undone.
async fn append_body(r: &Shared, session: &mut Session, req: Request) -> ApiResult<()> {
    if let Err(e) = check_chunk(req.headers(), session) {
        // Answering before the body is read would make the client's socket reset under it;
        // read the chunk off the wire first (within reason).
        return Err(drain_then(req.into_body(), e).await);
    }
    // A chunk (with Content-Range) is all or nothing: the client resends it whole. A
    // streamed body keeps what arrived, checkpointed as it goes, so that a client whose
    // connection (or this server) died asks for the upload's status and continues from there.
    let streamed = header_str(req.headers(), "content-range").is_none();
    let mark = session.mark();
    let mut checkpoint = session.size;
    let result = stream_body(r, req, |chunk| {
        session.append(chunk)?;
        if streamed && session.size - checkpoint >= STREAM_CHECKPOINT {
            session.flush()?;
            r.meta
                .set_upload_size(&session.id, session.size)
                .map_err(std::io::Error::other)?;
            checkpoint = session.size;
        }
        Ok(())
    })
    .await;
    if let Err(e) = result {
        if streamed {
            session
                .flush()
                .map_err(|e| ApiError::internal("keeping a broken stream's bytes", e))?;
            r.meta
                .set_upload_size(&session.id, session.size)
                .map_err(internal("recording upload progress"))?;
        } else {
            session
                .rewind(mark)
                .map_err(|e| ApiError::internal("undoing a broken chunk", e))?;
        }
        return Err(e);
    }
    // Acknowledged bytes must outlive this process.
    session
        .flush()
        .map_err(|e| ApiError::internal("writing upload", e))?;
    r.meta
        .set_upload_size(&session.id, session.size)
        .map_err(internal("recording upload progress"))?;
    Ok(())
}

/// Verifies a finished session against `digest` and publishes it.
fn complete(r: &Shared, session: &mut Session, digest: &kiln_image::Digest) -> ApiResult<Response> {
    // `append_body` flushed every acknowledged byte, so a re-read (sha512) sees them all.
    let actual = session
        .digest(digest.algorithm(), r.backend.as_ref())
        .map_err(|e| ApiError::internal("hashing upload", e))?;
    if &actual != digest {
        discard(r, &session.id);
        return Err(code(Code::DigestInvalid)
            .message(format!(
                "digest mismatch: expected {digest}, got {actual}; nothing was stored"
            ))
            .detail(
                serde_json::json!({ "expected": digest.to_string(), "actual": actual.to_string() }),
            ));
    }
    let (repo, id, size) = (session.repo.clone(), session.id.clone(), session.size);
    // Durable before it is renamed into place.
    tokio::task::block_in_place(|| -> ApiResult<()> {
        session
            .sync()
            .map_err(|e| ApiError::internal("syncing upload", e))?;
        r.meta
            .commit_blob(&repo, digest, size, || r.backend.commit_upload(&id, digest))
            .map_err(internal("committing blob"))?;
        Ok(())
    })?;
    let _ = r.meta.delete_upload(&id);
    r.sessions.forget(&id);
    Ok(created(&repo, digest))
}

fn discard(r: &Shared, id: &str) {
    let _ = r.meta.delete_upload(id);
    let _ = r.backend.delete_upload(id);
    r.sessions.forget(id);
}

pub(super) async fn start(
    r: &Shared,
    name: &str,
    query: &[(String, String)],
    req: Request,
) -> ApiResult<Response> {
    if let Some(mount) = query_value(query, "mount") {
        let digest = parse_digest(mount)?;
        let from = query_value(query, "from").filter(|f| !f.is_empty());
        let mounted = match from {
            Some(from) => {
                check_name(from)?;
                // Mounting reads `from`: the caller must be allowed to pull it.
                let scope = Scope::Repository(from.to_string(), Action::Pull);
                match r
                    .auth
                    .authorize(req.headers(), &origin(r, req.headers()), &scope)
                {
                    Ok(_) => r
                        .meta
                        .mount(name, &digest, Some(from))
                        .map_err(internal("mounting blob"))?,
                    Err(_) => None,
                }
            }
            // Without `from`, any repository's copy will do — but only where nobody's access
            // is restricted, or this would reveal and grant content across repositories.
            None if !r.config.auth_enabled() => r
                .meta
                .mount(name, &digest, None)
                .map_err(internal("mounting blob"))?,
            None => None,
        };
        if mounted.is_some() {
            return Ok(created(name, &digest));
        }
    }
    let handle = r
        .sessions
        .create(&r.meta, r.backend.as_ref(), name)
        .map_err(internal("creating upload session"))?;
    let mut session = handle.lock().await;
    if let Some(d) = query_value(query, "digest") {
        let digest = parse_digest(d)?;
        if let Err(e) = append_body(r, &mut session, req).await {
            let id = session.id.clone();
            discard(r, &id);
            return Err(e);
        }
        return complete(r, &mut session, &digest);
    }
    let mut response = session_response(StatusCode::ACCEPTED, name, &session.id, 0);
    response
        .headers_mut()
        .insert("oci-chunk-min-length", CHUNK_MIN_LENGTH.into());
    Ok(response)
}

pub(super) async fn patch(r: &Shared, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    let handle = find(r, name, id)?;
    let mut session = handle.lock().await;
    append_body(r, &mut session, req).await?;
    Ok(session_response(
        StatusCode::ACCEPTED,
        name,
        id,
        session.size,
    ))
}

pub(super) async fn finish(
    r: &Shared,
    name: &str,
    id: &str,
    query: &[(String, String)],
    req: Request,
) -> ApiResult<Response> {
    let Some(d) = query_value(query, "digest") else {
        return Err(code(Code::DigestInvalid).message("PUT to an upload needs ?digest="));
    };
    let digest = parse_digest(d)?;
    let handle = find(r, name, id)?;
    let mut session = handle.lock().await;
    append_body(r, &mut session, req).await?;
    complete(r, &mut session, &digest)
}

pub(super) fn status(r: &Shared, name: &str, id: &str) -> ApiResult<Response> {
    match r
        .meta
        .upload(id)
        .map_err(internal("reading upload session"))?
    {
        Some((repo, size)) if repo == name => {
            Ok(session_response(StatusCode::NO_CONTENT, name, id, size))
        }
        _ => Err(unknown_upload(id)),
    }
}

pub(super) fn cancel(r: &Shared, name: &str, id: &str) -> ApiResult<Response> {
    match r
        .meta
        .upload(id)
        .map_err(internal("reading upload session"))?
    {
        Some((repo, _)) if repo == name => {
            discard(r, id);
            let mut response = StatusCode::NO_CONTENT.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, 0.into());
            Ok(response)
        }
        _ => Err(unknown_upload(id)),
    }
}
