//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use std::io::Read;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use kiln_image::model::{self, media_types as mt, Document, MAX_DOCUMENT_SIZE};
use kiln_image::Digest;

use futures_util::StreamExt;

use super::{drain_then, header_str, internal, parse_reference, Shared};
use crate::error::{code, ApiError, ApiResult, Code};
use crate::storage::meta::{NewManifest, PutManifestError, Reference};

fn unknown(reference: &str) -> ApiError {
    code(Code::ManifestUnknown).detail(serde_json::json!({ "reference": reference }))
}

fn invalid(why: impl std::fmt::Display) -> ApiError {
    code(Code::ManifestInvalid).message(format!("manifest invalid: {why}"))
}

pub(super) fn get(r: &Shared, name: &str, reference: &str, with_body: bool) -> ApiResult<Response> {
    let parsed = parse_reference(reference)?;
    let Some(row) = r
        .meta
        .manifest(name, &parsed)
        .map_err(internal("looking up manifest"))?
    else {
        return Err(unknown(reference));
    };
    let body = if with_body {
        let mut bytes = Vec::with_capacity(row.size as usize);
        r.backend
            .reader(&row.digest, 0, row.size)
            .and_then(|mut rd| rd.read_to_end(&mut bytes))
            .map_err(|e| ApiError::internal("reading manifest", e))?;
        bytes
    } else {
        Vec::new()
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = row.media_type.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, row.size.into());
    if let Ok(v) = row.digest.to_string().parse() {
        h.insert("docker-content-digest", v);
    }
    if let Ok(v) = format!("\"{}\"", row.digest).parse() {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}

pub(super) async fn put(
    r: &Shared,
    name: &str,
    reference: &str,
    req: Request,
) -> ApiResult<Response> {
    let parsed = parse_reference(reference)?;
    let declared = header_str(req.headers(), "content-type")
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| model::is_manifest_media_type(c) || model::is_index_media_type(c));
    let bytes = read_manifest_body(req.into_body()).await?;
    r.metrics
        .bytes_in
        .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);

    let algorithm = match &parsed {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => kiln_image::Algorithm::Sha256,
    };
    let digest = Digest::of_bytes(algorithm, &bytes);
    if let Reference::Digest(d) = &parsed {
        if d != &digest {
            return Err(code(Code::DigestInvalid)
                .message(format!(
                    "manifest digest is {digest}, not {d} as the URL says"
                ))
                .detail(
                    serde_json::json!({ "expected": d.to_string(), "actual": digest.to_string() }),
                ));
        }
    }
    let doc = Document::parse(&bytes, declared.as_deref()).map_err(invalid)?;
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let media_type = raw
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or(declared)
        .unwrap_or_else(|| match doc {
            Document::Manifest(_) => mt::OCI_MANIFEST.to_string(),
            Document::Index(_) => mt::OCI_INDEX.to_string(),
        });

    let descriptor_digest = |d: &model::Descriptor| model::descriptor_digest(d).map_err(invalid);
    let (blobs, manifests, subject, artifact_type) = match &doc {
        Document::Manifest(m) => {
            let mut blobs = vec![descriptor_digest(m.config())?];
            for layer in m.layers() {
                // Non-distributable layers live elsewhere (their `urls`); nothing to check here.
                if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                blobs.push(descriptor_digest(layer)?);
            }
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            (
                blobs,
                Vec::new(),
                m.subject().as_ref().map(&descriptor_digest).transpose()?,
                artifact_type,
            )
        }
        Document::Index(i) => {
            let manifests = i
                .manifests()
                .iter()
                .map(&descriptor_digest)
                .collect::<ApiResult<Vec<_>>>()?;
            let artifact_type = i.artifact_type().as_ref().map(|t| t.to_string());
            (
                Vec::new(),
                manifests,
                i.subject().as_ref().map(&descriptor_digest).transpose()?,
                artifact_type,
            )
        }
    };
    let annotations = raw
        .get("annotations")
        .filter(|a| a.is_object())
        .map(|a| a.to_string());
    let tag = match &parsed {
        Reference::Tag(t) => Some(*t),
        Reference::Digest(_) => None,
    };

    let new = NewManifest {
        repo: name,
        digest: &digest,
        media_type: &media_type,
        size: bytes.len() as u64,
        artifact_type: artifact_type.as_deref(),
        subject: subject.as_ref(),
        annotations,
        blobs,
        manifests,
        tag,
    };
    let upload_id = uuid::Uuid::new_v4().to_string();
    let stored = tokio::task::block_in_place(|| -> ApiResult<Result<(), PutManifestError>> {
        let mut writer = r
            .backend
            .upload_writer(&upload_id, 0)
            .map_err(|e| ApiError::internal("storing manifest", e))?;
        writer
            .write_all(&bytes)
            .map_err(|e| ApiError::internal("storing manifest", e))?;
        writer
            .sync()
            .map_err(|e| ApiError::internal("storing manifest", e))?;
        Ok(r.meta
            .put_manifest(&new, || r.backend.commit_upload(&upload_id, &digest)))
    });
    let outcome = match stored {
        Ok(Ok(())) => Ok(()),
        Ok(Err(PutManifestError::Missing(d))) => Err(code(Code::ManifestBlobUnknown)
            .message(format!(
                "manifest references {d}, which is not in repository {name}"
            ))
            .detail(serde_json::json!({ "digest": d.to_string() }))),
        Ok(Err(PutManifestError::Meta(e))) => Err(ApiError::internal("storing manifest", e)),
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        let _ = r.backend.delete_upload(&upload_id);
    }
    outcome?;
    if tag.is_some() {
        r.tags_changed(name);
    }

    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    if let Ok(v) = format!("/v2/{name}/manifests/{digest}").parse() {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = digest.to_string().parse() {
        h.insert("docker-content-digest", v);
    }
    if let Some(s) = &subject {
        if let Ok(v) = s.to_string().parse() {
            h.insert("oci-subject", v);
        }
    }
    h.insert(header::CONTENT_LENGTH, 0.into());
    Ok(response)
}

/// Reads a manifest body of at most `MAX_DOCUMENT_SIZE` bytes. A bigger one is read off the
/// wire (so the client hears the answer rather than a reset) and refused with 413.
async fn read_manifest_body(body: axum::body::Body) -> ApiResult<Vec<u8>> {
    let too_big = || {
        code(Code::SizeInvalid)
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .message(format!(
                "manifest exceeds the {MAX_DOCUMENT_SIZE}-byte limit"
            ))
    };
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| invalid(format!("reading the body failed: {e}")))?;
        if bytes.len() + chunk.len() > MAX_DOCUMENT_SIZE as usize {
            return Err(drain_then(axum::body::Body::from_stream(stream), too_big()).await);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

pub(super) fn delete(r: &Shared, name: &str, reference: &str) -> ApiResult<Response> {
    let found = match parse_reference(reference)? {
        Reference::Tag(t) => r.meta.delete_tag(name, t),
        Reference::Digest(d) => r.meta.delete_manifest(name, &d),
    }
    .map_err(internal("deleting manifest"))?;
    r.tags_changed(name);
    if !found {
        return Err(unknown(reference));
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, 0.into());
    Ok(response)
}
