//! Black-box conformance of `kiln registry serve` against the OCI distribution-spec v1.1
//! (spec.md of opencontainers/distribution-spec; section names are cited per test).
//!
//! Every test starts its own server on a fresh root, so tests are independent and run in
//! parallel. Requests go through reqwest with redirects disabled (Location headers are
//! checked by hand) or, where reqwest cannot express the request, through a raw TCP socket.

mod registry_support;

use std::collections::BTreeMap;

use registry_support::*;
use reqwest::blocking::Body;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------------------

/// "Determining Support": `GET /v2/` answers 200 with the legacy version header.
#[test]
fn api_version_check() {
    let reg = Registry::start();
    let resp = reg.get("/v2/");
    assert_eq!(resp.status(), StatusCode::OK, "GET /v2/ should be 200");
    assert_eq!(
        header(&resp, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0"),
        "GET /v2/ should carry Docker-Distribution-API-Version: registry/2.0"
    );
}

/// "Pulling manifests" and "Checking if content exists": GET and HEAD by tag and by digest
/// return 200, the exact bytes, the pushed Content-Type, Docker-Content-Digest and
/// Content-Length.
#[test]
fn pull_manifest_by_tag_and_digest() {
    let reg = Registry::start();
    let repo = "library/app";
    let (manifest, digest) = reg.push_image(repo, "v1", &[b"layer one", b"layer two"]);

    for reference in ["v1", digest.as_str()] {
        let resp = reg.get_manifest(repo, reference);
        assert_eq!(resp.status(), StatusCode::OK, "GET manifest {reference}");
        assert_eq!(
            header(&resp, "Content-Type").as_deref(),
            Some(OCI_MANIFEST),
            "GET manifest {reference}: Content-Type should be the pushed media type"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str()),
            "GET manifest {reference}: Docker-Content-Digest"
        );
        assert_eq!(
            content_length(&resp),
            Some(manifest.len() as u64),
            "GET manifest {reference}: Content-Length"
        );
        assert_eq!(
            body(resp),
            manifest,
            "GET manifest {reference}: exact bytes"
        );

        let resp = reg.head_manifest(repo, reference);
        assert_eq!(resp.status(), StatusCode::OK, "HEAD manifest {reference}");
        assert_eq!(
            header(&resp, "Content-Type").as_deref(),
            Some(OCI_MANIFEST),
            "HEAD manifest {reference}: Content-Type"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str()),
            "HEAD manifest {reference}: Docker-Content-Digest"
        );
        assert_eq!(
            content_length(&resp),
            Some(manifest.len() as u64),
            "HEAD manifest {reference}: Content-Length must be the manifest size"
        );
        assert!(body(resp).is_empty(), "HEAD manifest {reference}: no body");
    }
}

/// "Pulling blobs" and "Checking if content exists": GET returns the exact bytes, HEAD the
/// size; both carry Docker-Content-Digest.
#[test]
fn pull_blob_get_and_head() {
    let reg = Registry::start();
    let repo = "blobs/pull";
    for bytes in [blob_bytes(1, 3000), EMPTY_JSON.to_vec()] {
        let digest = reg.push_blob(repo, &bytes);
        let path = format!("/v2/{repo}/blobs/{digest}");

        let resp = reg.get(&path);
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str()),
            "GET {path}: Docker-Content-Digest"
        );
        assert_eq!(
            content_length(&resp),
            Some(bytes.len() as u64),
            "GET {path}: Content-Length"
        );
        assert_eq!(body(resp), bytes, "GET {path}: exact bytes");

        let resp = reg.head(&path);
        assert_eq!(resp.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str()),
            "HEAD {path}: Docker-Content-Digest"
        );
        assert_eq!(
            content_length(&resp),
            Some(bytes.len() as u64),
            "HEAD {path}: Content-Length must be the blob size"
        );
        assert!(body(resp).is_empty(), "HEAD {path}: no body");
    }
}

/// "Pulling manifests"/"Pulling blobs": missing content is 404 with BLOB_UNKNOWN,
/// MANIFEST_UNKNOWN, or for a repository that does not exist NAME_UNKNOWN.
#[test]
fn pull_unknown_blob_manifest_and_repository_are_404() {
    let reg = Registry::start();
    let repo = "known/repo";
    reg.push_image(repo, "present", &[b"x"]);
    let missing = sha256(b"never pushed");

    assert_error(
        reg.get(&format!("/v2/{repo}/blobs/{missing}")),
        404,
        "BLOB_UNKNOWN",
    );
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{missing}")).status(),
        404
    );

    assert_error(reg.get_manifest(repo, "absent"), 404, "MANIFEST_UNKNOWN");
    assert_error(reg.get_manifest(repo, &missing), 404, "MANIFEST_UNKNOWN");
    assert_eq!(reg.head_manifest(repo, "absent").status(), 404);
    assert_eq!(reg.head_manifest(repo, &missing).status(), 404);

    let nowhere = "no/such/repo";
    assert_error_any(
        reg.get_manifest(nowhere, "latest"),
        &[404],
        &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
    );
    assert_error_any(
        reg.get_manifest(nowhere, &missing),
        &[404],
        &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
    );
    assert_eq!(reg.head_manifest(nowhere, "latest").status(), 404);
    assert_error_any(
        reg.get(&format!("/v2/{nowhere}/blobs/{missing}")),
        &[404],
        &["NAME_UNKNOWN", "BLOB_UNKNOWN"],
    );
    assert_error(
        reg.get(&format!("/v2/{nowhere}/tags/list")),
        404,
        "NAME_UNKNOWN",
    );
}

/// "Pulling blobs": Range requests per RFC 9110 section 14: 206 with Content-Range and the
/// exact slice; an unsatisfiable range is 416.
#[test]
fn pull_blob_range_requests() {
    let reg = Registry::start();
    let repo = "blobs/range";
    let bytes = blob_bytes(7, 2048);
    let digest = reg.push_blob(repo, &bytes);
    let path = format!("/v2/{repo}/blobs/{digest}");
    let len = bytes.len();

    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-9", 0, 9),
        ("bytes=500-", 500, len - 1),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=2000-5000", 2000, len - 1), // last-pos past the end is clamped
    ];
    for (range, first, last) in cases {
        let resp = send(reg.request(Method::GET, &path).header("Range", range));
        assert_eq!(
            resp.status(),
            StatusCode::PARTIAL_CONTENT,
            "GET blob with Range: {range} should be 206"
        );
        let content_range = require_header(&resp, "Content-Range");
        assert!(
            content_range == format!("bytes {first}-{last}/{len}")
                || content_range == format!("bytes {first}-{last}/*"),
            "Range: {range}: Content-Range {content_range:?}, expected bytes {first}-{last}/{len}"
        );
        assert_eq!(
            content_length(&resp),
            Some((last - first + 1) as u64),
            "Range: {range}: Content-Length of the slice"
        );
        assert_eq!(
            body(resp),
            &bytes[first..=last],
            "Range: {range}: exact bytes"
        );
    }

    for range in ["bytes=5000-10000", "bytes=2048-"] {
        let resp = send(reg.request(Method::GET, &path).header("Range", range));
        assert_eq!(
            resp.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "GET blob of {len} bytes with Range: {range} should be 416"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Push: blobs
// ---------------------------------------------------------------------------------------

/// "POST then PUT": POST opens a session (202 + unique Location); PUT `<location>?digest=`
/// with the whole body is 201 with a pullable Location and Docker-Content-Digest.
#[test]
fn push_blob_post_then_put() {
    let reg = Registry::start();
    let repo = "push/monolithic";
    let bytes = blob_bytes(11, 5000);
    let digest = sha256(&bytes);

    let first = reg.start_upload(repo);
    let second = reg.start_upload(repo);
    assert_ne!(
        first, second,
        "each POST must open a distinct session (unique Location)"
    );

    let resp = send(
        reg.client()
            .put(with_query(&first, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.clone()),
    );
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT <location>?digest= should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str()),
        "PUT blob: Docker-Content-Digest"
    );
    let location = reg.location(&resp);
    let got = send(reg.client().get(location.clone()));
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "blob Location {location} should be pullable"
    );
    assert_eq!(body(got), bytes, "blob Location {location}: exact bytes");

    let got = reg.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(body(got), bytes);
}

/// "Single POST": `POST /v2/<name>/blobs/uploads/?digest=` with the body stores the blob
/// in one request: 201 with a pullable Location.
#[test]
fn push_blob_single_post_monolithic() {
    let reg = Registry::start();
    let repo = "push/single-post";
    let bytes = blob_bytes(12, 4000);
    let digest = sha256(&bytes);

    let resp = send(
        reg.request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone()),
    );
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "single-POST upload should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str()),
        "single POST: Docker-Content-Digest"
    );
    let location = reg.location(&resp);
    let got = send(reg.client().get(location.clone()));
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "Location {location} should be pullable"
    );
    assert_eq!(body(got), bytes);
}

/// Streamed upload (conformance "Blob Upload Streamed"): POST, one PATCH without
/// Content-Range (sent with chunked transfer encoding), then PUT `?digest=` with no body.
#[test]
fn push_blob_streamed_patch() {
    let reg = Registry::start();
    let repo = "push/streamed";
    let bytes = blob_bytes(13, 70_000);
    let digest = sha256(&bytes);

    let upload = reg.start_upload(repo);
    let resp = send(
        reg.client()
            .patch(upload)
            .header("Content-Type", "application/octet-stream")
            .body(Body::new(std::io::Cursor::new(bytes.clone()))),
    );
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "streamed PATCH should be 202"
    );
    assert_eq!(
        header(&resp, "Range"),
        Some(format!("0-{}", bytes.len() - 1)),
        "streamed PATCH: Range is 0-<last byte>"
    );
    let next = reg.location(&resp);

    let resp = send(reg.client().put(with_query(&next, "digest", &digest)));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let location = reg.location(&resp);
    assert_eq!(body(send(reg.client().get(location))), bytes);
}

/// Uploads `bytes` in PATCH chunks of `chunk` bytes to the session at `upload`, checking
/// each 202 (Location, `Range: 0-<end>`, Docker-Upload-UUID); returns the Location for the
/// next request.
fn patch_chunks(reg: &Registry, upload: reqwest::Url, bytes: &[u8], chunk: usize) -> reqwest::Url {
    patch_chunks_from(reg, upload, bytes, 0, chunk)
}

/// Like `patch_chunks`, but starting at byte `from` of `bytes` (the session already holds
/// `bytes[..from]`).
fn patch_chunks_from(
    reg: &Registry,
    upload: reqwest::Url,
    bytes: &[u8],
    from: usize,
    chunk: usize,
) -> reqwest::Url {
    let mut location = upload;
    let mut start = from;
    while start < bytes.len() {
        let end = (start + chunk).min(bytes.len()) - 1;
        let resp = send(
            reg.client()
                .patch(location.clone())
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(bytes[start..=end].to_vec()),
        );
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "PATCH chunk {start}-{end} should be 202: {}",
            resp.text().unwrap_or_default()
        );
        assert_eq!(
            header(&resp, "Range"),
            Some(format!("0-{end}")),
            "PATCH chunk {start}-{end}: Range must be 0-<end of range>"
        );
        let uuid = require_header(&resp, "Docker-Upload-UUID");
        assert!(
            !uuid.is_empty(),
            "PATCH chunk {start}-{end}: Docker-Upload-UUID is empty"
        );
        location = reg.location(&resp);
        start = end + 1;
    }
    location
}

/// Opens a session and returns it with the chunk size to use: at least
/// OCI-Chunk-Min-Length, which the POST response must advertise.
fn start_chunked_upload(reg: &Registry, repo: &str, path_suffix: &str) -> (reqwest::Url, usize) {
    let resp = send(
        reg.request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/{path_suffix}"),
        )
        .header("Content-Length", "0"),
    );
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "POST for a chunked upload should be 202"
    );
    let min = require_header(&resp, "OCI-Chunk-Min-Length");
    let min: usize = min
        .parse()
        .unwrap_or_else(|_| panic!("OCI-Chunk-Min-Length {min:?} is not a number"));
    (reg.location(&resp), min.max(1024))
}

/// "Pushing a blob in chunks": POST advertises OCI-Chunk-Min-Length; each PATCH with an
/// inclusive `Content-Range: start-end` is 202 with Location, `Range: 0-<end>` and
/// Docker-Upload-UUID; PUT closes (with no body, or carrying the final chunk).
#[test]
fn push_blob_chunked_patches() {
    let reg = Registry::start();
    let repo = "push/chunked";

    // All chunks by PATCH, then an empty PUT.
    let (upload, chunk) = start_chunked_upload(&reg, repo, "");
    let bytes = blob_bytes(21, chunk * 3 - 5);
    let digest = sha256(&bytes);
    let next = patch_chunks(&reg, upload, &bytes, chunk);
    let resp = send(reg.client().put(with_query(&next, "digest", &digest)));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(body(send(reg.client().get(reg.location(&resp)))), bytes);

    // The final chunk travels in the closing PUT with its Content-Range.
    let (upload, chunk) = start_chunked_upload(&reg, repo, "");
    let bytes = blob_bytes(22, chunk * 3 - 5);
    let digest = sha256(&bytes);
    let last_start = chunk * 2;
    let next = patch_chunks(&reg, upload, &bytes[..last_start], chunk);
    let resp = send(
        reg.client()
            .put(with_query(&next, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{last_start}-{}", bytes.len() - 1))
            .body(bytes[last_start..].to_vec()),
    );
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT with the final chunk should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let got = reg.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(body(got), bytes);
}

/// "Pushing a blob in chunks": "Chunks MUST be uploaded in order ... If a chunk is uploaded
/// out of order, the registry MUST respond with a 416": a first chunk not at 0, a chunk
/// skipping ahead, and a repeated chunk are refused; `GET <location>` then reports 204 with
/// Location and `Range: 0-<end>`, and the upload resumes. A final chunk out of order in the
/// closing PUT is refused too. (Refused chunks here are small; see
/// `out_of_order_full_size_chunk_is_answered` for large ones.)
#[test]
fn push_chunk_out_of_order_or_repeated_is_416() {
    let reg = Registry::start();
    let repo = "push/out-of-order";
    let (upload, chunk) = start_chunked_upload(&reg, repo, "");
    // Two full chunks and a short final one.
    let bytes = blob_bytes(31, chunk * 2 + 16);
    let last = bytes.len() - 1;
    let digest = sha256(&bytes);
    let patch = |location: &reqwest::Url, start: usize, end: usize| {
        send(
            reg.client()
                .patch(location.clone())
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(bytes[start..=end].to_vec()),
        )
    };
    let status_range = |location: &reqwest::Url| {
        let resp = send(reg.client().get(location.clone()));
        assert_eq!(
            resp.status(),
            StatusCode::NO_CONTENT,
            "GET <upload location>"
        );
        require_header(&resp, "Location");
        header(&resp, "Range")
    };

    assert_416(
        patch(&upload, chunk, chunk + 15),
        "a first chunk not starting at 0",
    );

    let next = patch_chunks(&reg, upload, &bytes[..chunk], chunk);
    assert_416(
        patch(&next, 2 * chunk, last),
        "a chunk starting past the current size",
    );
    assert_eq!(
        status_range(&next),
        Some(format!("0-{}", chunk - 1)),
        "GET upload status after the refused chunk: Range of the one accepted chunk"
    );

    let next = patch_chunks_from(&reg, next, &bytes, chunk, chunk);
    assert_416(patch(&next, 2 * chunk, last), "re-sending the final chunk");
    assert_416(patch(&next, 0, 15), "a chunk restarting at 0");
    assert_eq!(status_range(&next), Some(format!("0-{last}")));

    let resp = send(reg.client().put(with_query(&next, "digest", &digest)));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT after the refusals"
    );
    let got = reg.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        body(got),
        bytes,
        "refused chunks must leave no trace in the blob"
    );

    // The final chunk in the closing PUT, out of order.
    let (upload, chunk) = start_chunked_upload(&reg, repo, "");
    let bytes = blob_bytes(32, chunk * 2 + 16);
    let digest = sha256(&bytes);
    let next = patch_chunks(&reg, upload, &bytes[..chunk], chunk);
    let resp = send(
        reg.client()
            .put(with_query(&next, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{}-{}", 2 * chunk, bytes.len() - 1),
            )
            .body(bytes[2 * chunk..].to_vec()),
    );
    let status = resp.status().as_u16();
    assert!(
        status == 416 || status == 400,
        "closing PUT with an out-of-order final chunk should be 416 (or 400), got {status}"
    );
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{digest}")).status(),
        404
    );
}

/// A refused out-of-order chunk of full (OCI-Chunk-Min-Length) size, as the official
/// conformance suite sends them, must still reach the client as a 416 ("the registry MUST
/// respond with a 416"), and the session must stay usable. A registry that answers before
/// reading the body and then closes with unread data risks the "TCP reset problem" of
/// RFC 9112 section 9.6 (the reset can destroy the response before the client reads it).
#[test]
fn out_of_order_full_size_chunk_is_answered() {
    let reg = Registry::start();
    let repo = "push/out-of-order-large";
    let (upload, chunk) = start_chunked_upload(&reg, repo, "");
    let bytes = blob_bytes(33, chunk * 3);
    let digest = sha256(&bytes);
    let next = patch_chunks(&reg, upload, &bytes[..chunk], chunk);

    let sent = reg
        .client()
        .patch(next.clone())
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", 2 * chunk, 3 * chunk - 1))
        .body(bytes[2 * chunk..].to_vec())
        .send();
    match sent {
        Ok(resp) => assert_416(resp, "a full-size chunk skipping ahead"),
        Err(e) => panic!(
            "a full-size out-of-order chunk got no 416, only a transport error ({e:?}): the \
             registry answered before reading the body and reset the connection"
        ),
    }

    let resp = send(reg.client().get(next.clone()));
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "GET upload status after the refusal"
    );
    assert_eq!(header(&resp, "Range"), Some(format!("0-{}", chunk - 1)));
    let next = patch_chunks_from(&reg, reg.location(&resp), &bytes, chunk, chunk);
    let resp = send(reg.client().put(with_query(&next, "digest", &digest)));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "the session completes after the refusal"
    );
}

/// GET `<location>` (end-13) reports 204 with Location and Range; DELETE `<location>`
/// (end-14, "Cancel a blob upload") is 204, after which the session is BLOB_UPLOAD_UNKNOWN.
#[test]
fn upload_session_status_and_cancel() {
    let reg = Registry::start();
    let repo = "push/cancel";
    let bytes = blob_bytes(41, 100);

    let upload = reg.start_upload(repo);
    let resp = send(reg.client().get(upload.clone()));
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "GET on a fresh session should be 204"
    );
    require_header(&resp, "Location");

    let resp = send(
        reg.client()
            .patch(upload.clone())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-99")
            .body(bytes.clone()),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH 0-99");
    let upload = reg.location(&resp);

    let resp = send(reg.client().get(upload.clone()));
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "GET upload status should be 204"
    );
    require_header(&resp, "Location");
    assert_eq!(
        header(&resp, "Range").as_deref(),
        Some("0-99"),
        "GET upload status: Range"
    );

    let resp = send(reg.client().delete(upload.clone()));
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "DELETE <upload location> should be 204"
    );

    assert_error(
        send(reg.client().get(upload.clone())),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        send(
            reg.client()
                .patch(upload.clone())
                .header("Content-Range", "100-101")
                .body(vec![1, 2]),
        ),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        send(
            reg.client()
                .put(with_query(&upload, "digest", &sha256(&bytes))),
        ),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{}", sha256(&bytes)))
            .status(),
        404,
        "a cancelled upload stores nothing"
    );

    // A session that never existed (BLOB_UPLOAD_INVALID fits a URL without the server's own
    // state in it).
    assert_error_any(
        reg.get(&format!(
            "/v2/{repo}/blobs/uploads/3f1e1c8a-0000-4000-8000-000000000000"
        )),
        &[404],
        &["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"],
    );
}

/// "Pushing blobs": a PUT (or single POST, or closing PUT of a chunked upload) whose
/// `digest` does not match the content is 400 DIGEST_INVALID, and neither the claimed nor
/// the actual digest becomes readable.
#[test]
fn push_blob_digest_mismatch_stores_nothing() {
    let reg = Registry::start();
    let repo = "push/mismatch";
    let assert_nothing_stored = |actual: &str, claimed: &str| {
        for d in [actual, claimed] {
            assert_eq!(
                reg.head(&format!("/v2/{repo}/blobs/{d}")).status(),
                404,
                "after a rejected upload, HEAD {d} should be 404"
            );
        }
    };

    // POST then PUT.
    let bytes = blob_bytes(51, 3000);
    let claimed = sha256(b"something else entirely");
    let upload = reg.start_upload(repo);
    let resp = send(
        reg.client()
            .put(with_query(&upload, "digest", &claimed))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.clone()),
    );
    assert_error(resp, 400, "DIGEST_INVALID");
    assert_nothing_stored(&sha256(&bytes), &claimed);

    // Single POST.
    let bytes = blob_bytes(52, 3000);
    let claimed = sha256(b"another mismatch");
    let resp = send(
        reg.request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={claimed}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone()),
    );
    assert_error(resp, 400, "DIGEST_INVALID");
    assert_nothing_stored(&sha256(&bytes), &claimed);

    // PATCH without Content-Range, then a closing PUT with the wrong digest.
    let bytes = blob_bytes(53, 3000);
    let claimed = sha256(b"third mismatch");
    let upload = reg.start_upload(repo);
    let resp = send(
        reg.client()
            .patch(upload)
            .header("Content-Type", "application/octet-stream")
            .body(bytes.clone()),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let next = reg.location(&resp);
    assert_error(
        send(reg.client().put(with_query(&next, "digest", &claimed))),
        400,
        "DIGEST_INVALID",
    );
    assert_nothing_stored(&sha256(&bytes), &claimed);
}

/// "Content Digests"/"Pushing blobs": sha512 digests work end to end, for blobs (monolithic
/// and chunked with `digest-algorithm=sha512`) and for a manifest pushed by its sha512
/// digest ("Docker-Content-Digest ... MUST be equal to the client provided digest").
#[test]
fn push_sha512_blob_and_manifest() {
    let reg = Registry::start();
    let repo = "push/sha512";

    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = blob_bytes(61, 4096);
    let config_digest = sha512(config);
    let layer_digest = sha512(&layer);

    // Monolithic.
    let upload = reg.start_upload(repo);
    let resp = send(
        reg.client()
            .put(with_query(&upload, "digest", &config_digest))
            .header("Content-Type", "application/octet-stream")
            .body(config.to_vec()),
    );
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT sha512 blob should be 201"
    );
    let dcd = require_header(&resp, "Docker-Content-Digest");
    assert!(
        dcd == config_digest || dcd == sha256(config),
        "Docker-Content-Digest {dcd} matches neither digest of the content"
    );

    // Chunked, announcing the algorithm.
    let (upload, chunk) = start_chunked_upload(&reg, repo, "?digest-algorithm=sha512");
    let next = patch_chunks(&reg, upload, &layer, chunk);
    let resp = send(reg.client().put(with_query(&next, "digest", &layer_digest)));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT with a sha512 digest"
    );

    for (digest, bytes) in [(&config_digest, config.as_slice()), (&layer_digest, &layer)] {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = reg.head(&path);
        assert_eq!(resp.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(content_length(&resp), Some(bytes.len() as u64));
        let resp = reg.get(&path);
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        let dcd = require_header(&resp, "Docker-Content-Digest");
        assert!(
            &dcd == digest || dcd == sha256(bytes),
            "GET {path}: Docker-Content-Digest {dcd} does not match the body"
        );
        assert_eq!(body(resp), bytes, "GET {path}: exact bytes");
    }

    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    }))
    .expect("serialize manifest");
    let manifest_digest = sha512(&manifest);
    let resp = reg.push_manifest(repo, &manifest_digest, OCI_MANIFEST, &manifest);
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT manifest by sha512 digest"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(manifest_digest.as_str()),
        "PUT manifest: Docker-Content-Digest MUST equal the client-provided digest"
    );
    let resp = reg.get_manifest(repo, &manifest_digest);
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GET manifest by sha512 digest"
    );
    assert_eq!(body(resp), manifest);
}

/// "Pushing blobs": "if the client provided digest is invalid or uses an unsupported
/// algorithm, the registry SHOULD respond with 400" (code DIGEST_INVALID). Image spec: a
/// sha256 encoded part MUST match `[a-f0-9]{64}`.
#[test]
fn push_blob_bogus_digest_is_digest_invalid() {
    let reg = Registry::start();
    let repo = "push/bogus";
    let bytes = b"some content".to_vec();
    let hex = sha256(&bytes)["sha256:".len()..].to_string();
    let bogus = [
        "sha256:zzz".to_string(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!("sha256:{}", &hex[1..]),
        format!("sha256:{hex}0"),
        format!("sha256:{}", hex.to_uppercase()),
        "notadigest".to_string(),
        format!("sha256{hex}"),
    ];
    for digest in &bogus {
        let upload = reg.start_upload(repo);
        let resp = send(
            reg.client()
                .put(with_query(&upload, "digest", digest))
                .header("Content-Type", "application/octet-stream")
                .body(bytes.clone()),
        );
        assert_error_for(
            &format!("PUT ?digest={digest}"),
            resp,
            &[400],
            &["DIGEST_INVALID"],
        );

        let mut post = reg.resolve(&format!("/v2/{repo}/blobs/uploads/"));
        post.query_pairs_mut().append_pair("digest", digest);
        let resp = send(
            reg.client()
                .post(post)
                .header("Content-Type", "application/octet-stream")
                .body(bytes.clone()),
        );
        assert_error_for(
            &format!("POST ?digest={digest}"),
            resp,
            &[400],
            &["DIGEST_INVALID"],
        );
    }
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{}", sha256(&bytes)))
            .status(),
        404
    );
}

/// "Mounting a blob from another repository": `?mount=<digest>&from=<repo>` is 201 with
/// Location and Docker-Content-Digest, and the blob is then readable in the target.
#[test]
fn cross_repo_mount_links_blob() {
    let reg = Registry::start();
    let bytes = blob_bytes(71, 2500);
    let digest = reg.push_blob("mount/source", &bytes);

    let mut url = reg.resolve("/v2/mount/target/blobs/uploads/");
    url.query_pairs_mut()
        .append_pair("mount", &digest)
        .append_pair("from", "mount/source");
    let resp = send(reg.client().post(url));
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "mount of a blob present in `from` is 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str()),
        "mount: Docker-Content-Digest"
    );
    let location = reg.location(&resp);
    let got = send(reg.client().get(location.clone()));
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "mount Location {location} should be pullable"
    );
    assert_eq!(body(got), bytes);

    let path = format!("/v2/mount/target/blobs/{digest}");
    assert_eq!(
        reg.head(&path).status(),
        StatusCode::OK,
        "HEAD {path} after mount"
    );
    assert_eq!(body(reg.get(&path)), bytes);
}

/// "Mounting a blob from another repository": when the blob cannot be mounted the registry
/// SHOULD return 202 with an upload session, which the client can complete; `mount`
/// without `from` is either 201 (the registry MAY treat `from` as optional) or 202.
#[test]
fn cross_repo_mount_falls_back_to_upload_session() {
    let reg = Registry::start();
    let bytes = blob_bytes(72, 1500);
    let digest = reg.push_blob("fallback/a", &bytes);
    reg.push_blob("fallback/c", b"c owns something else");

    let mount = |target: &str, from: Option<&str>, digest: &str| {
        let mut url = reg.resolve(&format!("/v2/{target}/blobs/uploads/"));
        url.query_pairs_mut().append_pair("mount", digest);
        if let Some(from) = from {
            url.query_pairs_mut().append_pair("from", from);
        }
        send(reg.client().post(url))
    };

    // `from` exists but does not hold the blob (though another repository does).
    let resp = mount("fallback/b1", Some("fallback/c"), &digest);
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "mount from a repository without the blob should fall back to a session (202)"
    );
    let session = reg.location(&resp);
    assert!(
        session.path().starts_with("/v2/fallback/b1/blobs/uploads/"),
        "fallback Location {session} should be an upload session of the target"
    );
    assert_eq!(
        reg.head(&format!("/v2/fallback/b1/blobs/{digest}"))
            .status(),
        404,
        "a refused mount must not link the blob"
    );
    let resp = send(
        reg.client()
            .put(with_query(&session, "digest", &digest))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.clone()),
    );
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "completing the fallback session"
    );
    assert_eq!(
        body(reg.get(&format!("/v2/fallback/b1/blobs/{digest}"))),
        bytes
    );

    // The blob exists nowhere.
    let unknown = sha256(b"exists nowhere");
    let resp = mount("fallback/b2", Some("fallback/a"), &unknown);
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "mount of an unknown blob is 202"
    );
    reg.location(&resp);

    // `from` does not exist.
    let resp = mount("fallback/b3", Some("fallback/nothing-here"), &digest);
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "mount from a missing repository is 202"
    );
    reg.location(&resp);
    assert_eq!(
        reg.head(&format!("/v2/fallback/b3/blobs/{digest}"))
            .status(),
        404
    );

    // No `from`.
    let resp = mount("fallback/b4", None, &digest);
    match resp.status().as_u16() {
        201 => {
            let location = reg.location(&resp);
            assert_eq!(body(send(reg.client().get(location))), bytes);
        }
        202 => {
            reg.location(&resp);
        }
        other => panic!("mount without `from` should be 201 or 202, got {other}"),
    }
}

/// Blobs belong to the repositories they were pushed (or mounted) into: storage may be
/// deduplicated, but a blob uploaded to A is not readable through C ("If the blob is not
/// found in the repository, the response code MUST be 404"). Likewise for manifests.
#[test]
fn blobs_are_scoped_to_their_repository() {
    let reg = Registry::start();
    let bytes = blob_bytes(81, 800);
    let digest = reg.push_blob("scope/a", &bytes);
    let (_, manifest_digest) = reg.push_image("scope/a", "v1", &[b"scoped layer"]);
    reg.push_image("scope/c", "other", &[b"c layer"]);

    let path = format!("/v2/scope/c/blobs/{digest}");
    assert_error(reg.get(&path), 404, "BLOB_UNKNOWN");
    assert_eq!(reg.head(&path).status(), 404, "HEAD {path}");
    assert_error(
        reg.get_manifest("scope/c", &manifest_digest),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_eq!(reg.head_manifest("scope/c", &manifest_digest).status(), 404);
    assert_error(reg.get_manifest("scope/c", "v1"), 404, "MANIFEST_UNKNOWN");

    assert_eq!(
        reg.get(&format!("/v2/scope/a/blobs/{digest}")).status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------
// Push: manifests
// ---------------------------------------------------------------------------------------

/// "Pushing Manifests": PUT by tag is 201 with a pullable Location and the manifest's
/// Docker-Content-Digest; re-pointing the tag keeps the old manifest by digest.
#[test]
fn push_image_manifest_by_tag() {
    let reg = Registry::start();
    let repo = "manifests/by-tag";
    let config = br#"{"os":"linux","architecture":"amd64"}"#;
    let config_digest = reg.push_blob(repo, config);
    let layer = blob_bytes(91, 600);
    let layer_digest = reg.push_blob(repo, &layer);
    let manifest = image_manifest(
        &config_digest,
        config.len(),
        &[(layer_digest.clone(), layer.len())],
    );
    let digest = sha256(&manifest);

    let resp = reg.push_manifest(repo, "v1", OCI_MANIFEST, &manifest);
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT manifest by tag should be 201"
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str()),
        "PUT manifest: Docker-Content-Digest"
    );
    let location = reg.location(&resp);
    let got = send(
        reg.client()
            .get(location.clone())
            .header("Accept", ALL_MANIFEST_TYPES),
    );
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "manifest Location {location} should be pullable"
    );
    assert_eq!(header(&got, "Content-Type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(body(got), manifest, "manifest stored byte for byte");

    // Move the tag.
    let manifest2 = image_manifest(&config_digest, config.len(), &[]);
    let digest2 = reg.push_manifest_ok(repo, "v1", OCI_MANIFEST, &manifest2);
    let got = reg.get_manifest(repo, "v1");
    assert_eq!(
        header(&got, "Docker-Content-Digest").as_deref(),
        Some(digest2.as_str())
    );
    assert_eq!(
        body(got),
        manifest2,
        "tag now points at the second manifest"
    );
    let got = reg.get_manifest(repo, &digest);
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "the first manifest stays reachable by digest"
    );
    assert_eq!(body(got), manifest);
}

/// "Pushing Manifests": PUT by digest is 201, Docker-Content-Digest equals the URL digest,
/// and no tag is created.
#[test]
fn push_manifest_by_digest() {
    let reg = Registry::start();
    let repo = "manifests/by-digest";
    let config = br#"{"os":"linux"}"#;
    let config_digest = reg.push_blob(repo, config);
    // Whitespace matters: the registry MUST store the exact bytes.
    let size = config.len();
    let manifest = [
        "{".to_string(),
        "  \"schemaVersion\": 2,".to_string(),
        format!("  \"mediaType\": \"{OCI_MANIFEST}\","),
        format!("  \"config\": {{\"mediaType\": \"{OCI_CONFIG}\","),
        format!("             \"digest\": \"{config_digest}\", \"size\": {size}}},"),
        "  \"layers\": []".to_string(),
        "}\n".to_string(),
    ]
    .join("\n")
    .into_bytes();
    let digest = sha256(&manifest);

    for attempt in ["first", "repeated"] {
        let resp = reg.push_manifest(repo, &digest, OCI_MANIFEST, &manifest);
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{attempt} PUT by digest should be 201"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str()),
            "{attempt} PUT by digest: Docker-Content-Digest MUST equal the URL digest"
        );
        reg.location(&resp);
    }
    let got = reg.get_manifest(repo, &digest);
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        body(got),
        manifest,
        "exact byte representation, whitespace included"
    );

    let resp = reg.get(&format!("/v2/{repo}/tags/list"));
    if resp.status() == StatusCode::OK {
        let tags = json_body(resp);
        let tags = tags["tags"].as_array().cloned().unwrap_or_default();
        assert!(
            tags.is_empty(),
            "a push by digest creates no tag, got {tags:?}"
        );
    }
}

/// "Pushing Manifests": a digest in the URL that does not match the body is 400
/// DIGEST_INVALID (conformance: bad manifest digest push expects 400) and stores nothing.
#[test]
fn push_manifest_url_digest_mismatch_is_digest_invalid() {
    let reg = Registry::start();
    let repo = "manifests/mismatch";
    let (_, existing) = reg.push_image(repo, "base", &[b"l"]);
    let config_digest = reg.push_blob(repo, b"{}");
    let manifest = image_manifest(&config_digest, 2, &[]);
    let wrong = sha256(b"not the manifest");

    assert_error(
        reg.push_manifest(repo, &wrong, OCI_MANIFEST, &manifest),
        400,
        "DIGEST_INVALID",
    );
    assert_eq!(reg.head_manifest(repo, &wrong).status(), 404);
    assert_eq!(reg.head_manifest(repo, &sha256(&manifest)).status(), 404);

    // An existing manifest's digest with different content must not overwrite it.
    assert_error(
        reg.push_manifest(repo, &existing, OCI_MANIFEST, &manifest),
        400,
        "DIGEST_INVALID",
    );
    let got = reg.get_manifest(repo, &existing);
    assert_eq!(
        header(&got, "Docker-Content-Digest").as_deref(),
        Some(existing.as_str())
    );

    assert_error_any(
        reg.push_manifest(repo, "sha256:baddigeststring", OCI_MANIFEST, &manifest),
        &[400],
        &["DIGEST_INVALID", "MANIFEST_INVALID", "TAG_INVALID"],
    );
}

/// Docker schema 2 manifests and manifest lists are stored and served with their own
/// media types ("The Content-Type header SHOULD match what the client pushed").
#[test]
fn push_docker_schema2_manifest_and_list() {
    let reg = Registry::start();
    let repo = "docker/app";
    let mut entries = Vec::new();
    for (arch, seed) in [("amd64", 101), ("arm64", 102)] {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config_digest = reg.push_blob(repo, config.as_bytes());
        let layer = blob_bytes(seed, 900);
        let layer_digest = reg.push_blob(repo, &layer);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": layer.len(), "digest": layer_digest}],
        }))
        .expect("serialize docker manifest");
        let tag = format!("v1-{arch}");
        let resp = reg.push_manifest(repo, &tag, DOCKER_MANIFEST, &manifest);
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "PUT docker schema 2 manifest"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest"),
            Some(sha256(&manifest)),
            "PUT docker manifest: Docker-Content-Digest"
        );
        let got = reg.get_manifest(repo, &tag);
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(
            header(&got, "Content-Type").as_deref(),
            Some(DOCKER_MANIFEST)
        );
        assert_eq!(body(got), manifest);
        entries.push(json!({
            "mediaType": DOCKER_MANIFEST,
            "size": manifest.len(),
            "digest": sha256(&manifest),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }

    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": entries,
    }))
    .expect("serialize manifest list");
    let digest = reg.push_manifest_ok(repo, "v1", DOCKER_LIST, &list);
    for reference in ["v1", digest.as_str()] {
        let got = reg.get_manifest(repo, reference);
        assert_eq!(
            got.status(),
            StatusCode::OK,
            "GET manifest list {reference}"
        );
        assert_eq!(header(&got, "Content-Type").as_deref(), Some(DOCKER_LIST));
        assert_eq!(
            header(&got, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(body(got), list);
        let head = reg.head_manifest(repo, reference);
        assert_eq!(header(&head, "Content-Type").as_deref(), Some(DOCKER_LIST));
    }
}

/// OCI image indexes over pushed manifests, and an index nested in an index.
#[test]
fn push_oci_index_and_nested_index() {
    let reg = Registry::start();
    let repo = "index/app";
    let mut descs = Vec::new();
    for (arch, seed) in [("amd64", 111u64), ("arm64", 112)] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let config_digest = reg.push_blob(repo, config.as_bytes());
        let layer = blob_bytes(seed, 700);
        let layer_digest = reg.push_blob(repo, &layer);
        let manifest = image_manifest(&config_digest, config.len(), &[(layer_digest, layer.len())]);
        let digest = sha256(&manifest);
        reg.push_manifest_ok(repo, &digest, OCI_MANIFEST, &manifest);
        let mut desc = descriptor(OCI_MANIFEST, &manifest);
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        descs.push(desc);
    }

    let index = image_index(&descs);
    let index_digest = reg.push_manifest_ok(repo, "multi", OCI_INDEX, &index);
    let got = reg.get_manifest(repo, "multi");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "Content-Type").as_deref(), Some(OCI_INDEX));
    assert_eq!(
        header(&got, "Docker-Content-Digest").as_deref(),
        Some(index_digest.as_str())
    );
    assert_eq!(body(got), index);

    // index -> index -> manifest
    let nested = image_index(&[descriptor(OCI_INDEX, &index)]);
    let nested_digest = reg.push_manifest_ok(repo, "nested", OCI_INDEX, &nested);
    for reference in ["nested", nested_digest.as_str()] {
        let got = reg.get_manifest(repo, reference);
        assert_eq!(got.status(), StatusCode::OK, "GET nested index {reference}");
        assert_eq!(header(&got, "Content-Type").as_deref(), Some(OCI_INDEX));
        assert_eq!(body(got), nested);
    }
    let outer = image_index(&[descriptor(OCI_INDEX, &nested), descs[0].clone()]);
    reg.push_manifest_ok(repo, "outer", OCI_INDEX, &outer);
    assert_eq!(body(reg.get_manifest(repo, "outer")), outer);
}

/// "Push": a manifest referencing blobs not in the repository is rejected with
/// MANIFEST_BLOB_UNKNOWN, and nothing is stored under the tag or the digest.
#[test]
fn manifest_with_unknown_blob_is_rejected_and_not_stored() {
    let reg = Registry::start();
    let repo = "manifests/missing-blob";
    let config = br#"{"os":"linux"}"#;
    let config_digest = reg.push_blob(repo, config);
    let layer = blob_bytes(121, 500);
    let layer_digest = reg.push_blob(repo, &layer);
    let missing = sha256(b"never uploaded layer");

    let missing_layer = image_manifest(
        &config_digest,
        config.len(),
        &[(layer_digest.clone(), layer.len()), (missing.clone(), 20)],
    );
    let missing_config = image_manifest(&missing, 20, &[(layer_digest, layer.len())]);
    for (what, manifest) in [
        ("missing layer", &missing_layer),
        ("missing config", &missing_config),
    ] {
        let digest = sha256(manifest);
        assert_error_for(
            &format!("{what}, by tag"),
            reg.push_manifest(repo, "broken", OCI_MANIFEST, manifest),
            &[400],
            &["MANIFEST_BLOB_UNKNOWN"],
        );
        assert_error_for(
            &format!("{what}, by digest"),
            reg.push_manifest(repo, &digest, OCI_MANIFEST, manifest),
            &[400],
            &["MANIFEST_BLOB_UNKNOWN"],
        );
        assert_eq!(
            reg.get_manifest(repo, "broken").status(),
            404,
            "{what}: tag not stored"
        );
        assert_eq!(
            reg.get_manifest(repo, &digest).status(),
            404,
            "{what}: digest not stored"
        );
    }
}

/// "Push": an index referencing a manifest that was never pushed is rejected with
/// MANIFEST_BLOB_UNKNOWN.
#[test]
fn index_with_unknown_manifest_is_rejected() {
    let reg = Registry::start();
    let repo = "index/missing";
    let (manifest, _) = reg.push_image(repo, "present", &[b"layer"]);
    let ghost =
        json!({"mediaType": OCI_MANIFEST, "digest": sha256(b"ghost manifest"), "size": 321});
    let index = image_index(&[descriptor(OCI_MANIFEST, &manifest), ghost]);
    assert_error(
        reg.push_manifest(repo, "multi", OCI_INDEX, &index),
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    assert_eq!(reg.get_manifest(repo, "multi").status(), 404);
    assert_eq!(reg.get_manifest(repo, &sha256(&index)).status(), 404);
}

/// Malformed manifests are 400 MANIFEST_INVALID (schema 1 may also be UNSUPPORTED, the only
/// other fitting code in the spec's list), never a 5xx, and nothing is stored.
#[test]
fn malformed_manifests_are_manifest_invalid() {
    let reg = Registry::start();
    let repo = "manifests/malformed";
    let config_digest = reg.push_blob(repo, b"{}");
    let valid_config = json!({"mediaType": OCI_CONFIG, "digest": config_digest, "size": 2});

    let doc = |v: Value| serde_json::to_vec(&v).expect("serialize test document");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json".to_vec()),
        ("empty body", Vec::new()),
        (
            "truncated JSON",
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.ima"#.to_vec(),
        ),
        ("JSON array", b"[]".to_vec()),
        (
            "config is a string",
            doc(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": "nope", "layers": []})),
        ),
        (
            "layers is an object",
            doc(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": valid_config, "layers": {}})),
        ),
        (
            "schemaVersion 1",
            doc(json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST,
                       "config": valid_config, "layers": []})),
        ),
    ];
    for (what, bytes) in &cases {
        let resp = reg.push_manifest(repo, "bad", OCI_MANIFEST, bytes);
        let status = resp.status().as_u16();
        assert!(
            status < 500,
            "{what}: manifest PUT must not be a server error, got {status}"
        );
        assert_error_for(what, resp, &[400], &["MANIFEST_INVALID"]);
        assert_eq!(
            reg.get_manifest(repo, "bad").status(),
            404,
            "{what}: nothing stored"
        );
    }

    // A missing config, or a descriptor with an invalid digest: MANIFEST_INVALID, though a
    // registry may name the digest problem (DIGEST_INVALID).
    let no_config = doc(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}));
    let bad_digest = doc(json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": valid_config,
        "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:zzz", "size": 3}],
    }));
    for (what, bytes) in [
        ("config missing", &no_config),
        ("layer digest sha256:zzz", &bad_digest),
    ] {
        let resp = reg.push_manifest(repo, "bad", OCI_MANIFEST, bytes);
        assert_error_for(what, resp, &[400], &["MANIFEST_INVALID", "DIGEST_INVALID"]);
        assert_eq!(
            reg.get_manifest(repo, "bad").status(),
            404,
            "{what}: nothing stored"
        );
    }

    // A Docker schema 1 manifest under its own media type.
    let schema1 = doc(json!({
        "schemaVersion": 1, "name": repo, "tag": "bad", "architecture": "amd64",
        "fsLayers": [], "history": [],
    }));
    assert_error_any(
        reg.push_manifest(
            repo,
            "bad",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &schema1,
        ),
        &[400],
        &["MANIFEST_INVALID", "UNSUPPORTED"],
    );
    assert_eq!(
        reg.get_manifest(repo, "bad").status(),
        404,
        "schema 1: nothing stored"
    );
}

/// "Pulling manifests": a tag MUST match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`; a PUT to
/// anything else is 400 (TAG_INVALID is a legacy code the spec allows, MANIFEST_INVALID the
/// generic one). A 128-character tag is still valid.
#[test]
fn invalid_tag_is_rejected() {
    let reg = Registry::start();
    let repo = "tags/invalid";
    let (manifest, _) = reg.push_image(repo, "ok", &[b"layer"]);

    let long_ok = "a".repeat(128);
    reg.push_manifest_ok(repo, &long_ok, OCI_MANIFEST, &manifest);

    let too_long = "a".repeat(129);
    for tag in ["-lead", ".dot", "tag+plus", "tag%21bang", too_long.as_str()] {
        let resp = reg.push_manifest(repo, tag, OCI_MANIFEST, &manifest);
        assert_error_for(
            &format!("PUT manifest with tag {tag:?}"),
            resp,
            &[400],
            &["TAG_INVALID", "MANIFEST_INVALID"],
        );
    }
    assert_error_any(
        reg.push_manifest(repo, "foo:bar", OCI_MANIFEST, &manifest),
        &[400],
        &["TAG_INVALID", "MANIFEST_INVALID", "DIGEST_INVALID"],
    );

    let tags = json_body(reg.get(&format!("/v2/{repo}/tags/list")));
    let mut expected = vec![long_ok.clone(), "ok".to_string()];
    expected.sort();
    assert_eq!(tags["tags"], json!(expected), "only the valid tags exist");
}

/// Artifacts (image-spec 1.1): `artifactType`, the empty config
/// `application/vnd.oci.empty.v1+json` (`{}`), and descriptors with inline `data` are
/// accepted and served byte for byte.
#[test]
fn artifact_manifest_with_empty_config_and_inline_data() {
    let reg = Registry::start();
    let repo = "artifacts/sbom";
    assert_eq!(base64(EMPTY_JSON), "e30=", "test helper sanity");
    let empty = reg.push_blob(repo, EMPTY_JSON);
    assert_eq!(
        empty, EMPTY_JSON_DIGEST,
        "the `{{}}` blob has the well-known digest"
    );
    let got = reg.get(&format!("/v2/{repo}/blobs/{EMPTY_JSON_DIGEST}"));
    assert_eq!(content_length(&got), Some(2));
    assert_eq!(body(got), EMPTY_JSON);

    let payload = br#"{"spdxVersion":"SPDX-2.3","name":"kiln-test"}"#;
    let payload_digest = reg.push_blob(repo, payload);
    let mut config = empty_descriptor();
    config["data"] = json!(base64(EMPTY_JSON));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": config,
        "layers": [{
            "mediaType": "application/spdx+json",
            "digest": payload_digest,
            "size": payload.len(),
            "data": base64(payload),
        }],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }))
    .expect("serialize artifact");
    let digest = reg.push_manifest_ok(repo, "sbom", OCI_MANIFEST, &manifest);
    let got = reg.get_manifest(repo, &digest);
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "Content-Type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(body(got), manifest);

    // An artifact whose only layer is the empty descriptor too.
    let minimal = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.marker.v1",
        "config": empty_descriptor(),
        "layers": [empty_descriptor()],
    }))
    .expect("serialize artifact");
    reg.push_manifest_ok(repo, "marker", OCI_MANIFEST, &minimal);
    assert_eq!(body(reg.get_manifest(repo, "marker")), minimal);
}

/// "Pushing Manifests with Subject": a registry with the referrers API MUST answer a PUT of
/// a manifest with `subject` with `OCI-Subject: <subject digest>`, and MUST accept it even
/// when the subject does not exist.
#[test]
fn manifest_with_subject_returns_oci_subject() {
    let reg = Registry::start();
    let repo = "subject/app";
    reg.push_blob(repo, EMPTY_JSON);
    let (subject, subject_digest) = reg.push_image(repo, "v1", &[b"image layer"]);

    let referrer = |subject: Value, kind: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": format!("application/vnd.example.{kind}.v1"),
            "config": empty_descriptor(),
            "layers": [empty_descriptor()],
            "subject": subject,
        }))
        .expect("serialize referrer")
    };

    let signature = referrer(descriptor(OCI_MANIFEST, &subject), "signature");
    let resp = reg.push_manifest(repo, &sha256(&signature), OCI_MANIFEST, &signature);
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "PUT manifest with subject"
    );
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(subject_digest.as_str()),
        "PUT manifest with subject: OCI-Subject"
    );
    assert_eq!(body(reg.get_manifest(repo, &sha256(&signature))), signature);

    // Subject that does not exist (yet).
    let dangling_subject = sha256(b"future image manifest");
    let early = referrer(
        json!({"mediaType": OCI_MANIFEST, "digest": dangling_subject, "size": 1234}),
        "early",
    );
    let resp = reg.push_manifest(repo, "early-bird", OCI_MANIFEST, &early);
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "a missing subject MUST be accepted"
    );
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(dangling_subject.as_str())
    );

    // An index may carry a subject too.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &signature)],
        "subject": descriptor(OCI_MANIFEST, &subject),
    }))
    .expect("serialize index");
    let resp = reg.push_manifest(repo, &sha256(&index), OCI_INDEX, &index);
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT index with subject");
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(subject_digest.as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Content discovery
// ---------------------------------------------------------------------------------------

/// Fetches `first` and every page its `Link: <...>; rel="next"` chain leads to, checking
/// each Link points at `path` with `n` and `last` = the page's final entry. Returns the
/// pages' entries under `key`.
fn collect_pages(reg: &Registry, first: &str, path: &str, key: &str, n: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = reg.resolve(first);
    loop {
        assert!(
            pages.len() < 100,
            "pagination of {first} does not terminate"
        );
        let resp = send(reg.client().get(url.clone()));
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        let next = next_link(reg, &resp);
        let doc = json_body(resp);
        let entries: Vec<String> = doc[key]
            .as_array()
            .unwrap_or_else(|| panic!("GET {url}: `{key}` is not an array: {doc}"))
            .iter()
            .map(|v| v.as_str().expect("entries are strings").to_string())
            .collect();
        assert!(
            entries.len() <= n,
            "GET {url}: {} entries for n={n}",
            entries.len()
        );
        let Some(next) = next else {
            pages.push(entries);
            return pages;
        };
        assert!(
            !entries.is_empty(),
            "GET {url}: empty page with a Link to {next}"
        );
        assert_eq!(next.path(), path, "Link of {url} should point at {path}");
        let q = query_pairs(&next);
        assert!(
            q.contains(&("n".to_string(), n.to_string())),
            "Link {next} should keep n={n}"
        );
        assert!(
            q.contains(&(
                "last".to_string(),
                entries.last().expect("non-empty").clone()
            )),
            "Link {next} should have last=<final entry of this page>"
        );
        pages.push(entries);
        url = next;
    }
}

/// "Listing Tags": tags in lexical order; `n` limits, `Link: <...>; rel="next"` paginates,
/// `n=0` is an empty list without Link, and `last` works alone or with `n`.
#[test]
fn tags_list_sorted_and_paginated() {
    let reg = Registry::start();
    let repo = "discovery/tags";
    let (manifest, _) = reg.push_image(repo, "seed", &[b"layer"]);
    // Lowercase only: lexical (case-insensitive) and byte order agree; numbers do not sort
    // numerically ("10" < "2", "1.10" < "1.9", "v10" < "v9").
    let pushed = [
        "v10", "latest", "1.10", "v9", "alpha", "1.9", "10", "2", "v1.0.0", "beta-2", "beta-10",
        "0", "a_b", "a-b", "a.b",
    ];
    for tag in pushed {
        reg.push_manifest_ok(repo, tag, OCI_MANIFEST, &manifest);
    }
    let mut all: Vec<String> = pushed.iter().map(|t| t.to_string()).collect();
    all.push("seed".to_string());
    all.sort();

    let doc = json_body(reg.get(&format!("/v2/{repo}/tags/list")));
    assert_eq!(doc["name"], json!(repo), "tags/list `name`");
    assert_eq!(
        doc["tags"],
        json!(all),
        "tags/list must be sorted lexically"
    );

    let path = format!("/v2/{repo}/tags/list");
    let pages = collect_pages(&reg, &format!("{path}?n=2"), &path, "tags", 2);
    assert!(
        pages.len() >= all.len() / 2,
        "n=2 should paginate, got {pages:?}"
    );
    assert_eq!(pages[0].len(), 2, "first page of n=2");
    assert_eq!(
        pages.concat(),
        all,
        "following Link headers visits every tag once, in order"
    );

    let resp = reg.get(&format!("{path}?n=0"));
    assert_eq!(resp.status(), StatusCode::OK, "n=0");
    assert!(
        header(&resp, "Link").is_none(),
        "n=0 MUST NOT include a Link header"
    );
    let doc = json_body(resp);
    assert!(
        doc["tags"].as_array().is_some_and(Vec::is_empty) || doc["tags"].is_null(),
        "n=0 MUST return an empty list, got {doc}"
    );

    let resp = reg.get(&format!("{path}?n=100"));
    assert!(
        header(&resp, "Link").is_none(),
        "no Link when everything fits"
    );
    assert_eq!(json_body(resp)["tags"], json!(all));

    let after =
        |last: &str| -> Vec<String> { all.iter().filter(|t| t.as_str() > last).cloned().collect() };
    let doc = json_body(reg.get(&format!("{path}?last=1.9")));
    assert_eq!(doc["tags"], json!(after("1.9")), "last= without n");
    let doc = json_body(reg.get(&format!("{path}?n=3&last=alpha")));
    assert_eq!(
        doc["tags"],
        json!(after("alpha")[..3].to_vec()),
        "n=3&last=alpha"
    );

    let final_tag = all.last().expect("tags").clone();
    let resp = reg.get(&format!("{path}?n=2&last={final_tag}"));
    assert!(
        header(&resp, "Link").is_none(),
        "no Link after the final tag"
    );
    let doc = json_body(resp);
    assert!(
        doc["tags"].as_array().is_some_and(Vec::is_empty) || doc["tags"].is_null(),
        "nothing after the final tag, got {doc}"
    );
}

/// `GET /v2/_catalog` (Docker registry API, which kiln serves): repositories sorted, with
/// nested names, and the same `n`/`last`/Link pagination as tags.
#[test]
fn catalog_lists_repositories_sorted_and_paginated() {
    let reg = Registry::start();
    let repos = [
        "zeta/x",
        "library/ubuntu",
        "a/b/c",
        "alpha",
        "a/b",
        "ab-c",
        "library/alpine",
    ];
    for repo in repos {
        reg.push_image(repo, "latest", &[repo.as_bytes()]);
    }
    let mut all: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    all.sort();

    let doc = json_body(reg.get("/v2/_catalog"));
    assert_eq!(
        doc["repositories"],
        json!(all),
        "catalog sorted, nested names included"
    );

    let pages = collect_pages(&reg, "/v2/_catalog?n=2", "/v2/_catalog", "repositories", 2);
    assert_eq!(
        pages.concat(),
        all,
        "following Link headers lists every repository once"
    );
    assert!(
        pages.len() >= 4,
        "n=2 over {} repositories should give 4 pages",
        all.len()
    );

    let resp = reg.get("/v2/_catalog?n=0");
    assert!(header(&resp, "Link").is_none(), "catalog n=0: no Link");
    let doc = json_body(resp);
    assert!(
        doc["repositories"].as_array().is_some_and(Vec::is_empty) || doc["repositories"].is_null(),
        "catalog n=0 should be empty, got {doc}"
    );

    let doc = json_body(reg.get("/v2/_catalog?last=alpha"));
    let expected: Vec<&String> = all.iter().filter(|r| r.as_str() > "alpha").collect();
    assert_eq!(doc["repositories"], json!(expected), "catalog last=alpha");
}

/// Builds a referrer manifest for the referrers test.
fn referrer_manifest(
    subject: &Value,
    artifact_type: Option<&str>,
    config: Value,
    annotations: Value,
) -> Vec<u8> {
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [empty_descriptor()],
        "subject": subject,
        "annotations": annotations,
    });
    if let Some(t) = artifact_type {
        doc["artifactType"] = json!(t);
    }
    serde_json::to_vec(&doc).expect("serialize referrer")
}

/// GET `/v2/<name>/referrers/<digest>` and return the index, checking status, Content-Type
/// and the index shape.
fn referrers(reg: &Registry, repo: &str, digest: &str, query: &str) -> (Value, Option<String>) {
    let resp = reg.get(&format!("/v2/{repo}/referrers/{digest}{query}"));
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GET referrers of {digest}{query}"
    );
    assert_eq!(
        header(&resp, "Content-Type").as_deref(),
        Some(OCI_INDEX),
        "referrers Content-Type MUST be the OCI index type"
    );
    let filters = header(&resp, "OCI-Filters-Applied");
    let doc = json_body(resp);
    assert_eq!(doc["schemaVersion"], json!(2), "referrers: schemaVersion 2");
    assert_eq!(
        doc["mediaType"],
        json!(OCI_INDEX),
        "referrers: index mediaType"
    );
    assert!(
        doc["manifests"].is_array(),
        "referrers: `manifests` MUST be a list: {doc}"
    );
    (doc, filters)
}

/// Descriptors of a referrers index keyed by digest.
fn by_digest(index: &Value) -> BTreeMap<String, Value> {
    index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().expect("descriptor digest").to_string(),
                d.clone(),
            )
        })
        .collect()
}

/// "Listing Referrers": an OCI index of descriptors (with artifactType and annotations) of
/// the manifests whose subject is the digest; unknown digests give an empty list; the
/// `artifactType` filter is applied and announced by `OCI-Filters-Applied: artifactType`.
#[test]
fn referrers_list_and_artifact_type_filter() {
    let reg = Registry::start();
    let repo = "referrers/app";
    reg.push_blob(repo, EMPTY_JSON);
    let (subject_bytes, subject) = reg.push_image(repo, "v1", &[b"the image"]);
    let subject_desc = descriptor(OCI_MANIFEST, &subject_bytes);

    let sbom_type = "application/vnd.example.sbom.v1";
    let sig_config = b"{\"signature\":true}";
    let sig_config_type = "application/vnd.example.signature.config.v1+json";
    let sig_config_digest = reg.push_blob(repo, sig_config);

    let sbom_annotations = json!({
        "org.example.kind": "sbom",
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
    });
    // A: explicit artifactType.
    let a = referrer_manifest(
        &subject_desc,
        Some(sbom_type),
        empty_descriptor(),
        sbom_annotations.clone(),
    );
    // B: no artifactType: the descriptor's artifactType is the config media type.
    let b = referrer_manifest(
        &subject_desc,
        None,
        json!({
            "mediaType": sig_config_type,
            "digest": sig_config_digest,
            "size": sig_config.len(),
        }),
        json!({"org.example.kind": "signature"}),
    );
    // C: an index referrer without artifactType: artifactType omitted.
    let c = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "subject": subject_desc,
        "annotations": {"org.example.kind": "bundle"},
    }))
    .expect("serialize index referrer");
    // Not referrers of `subject`: another subject, and the same subject in another repo.
    let other_subject = json!({"mediaType": OCI_MANIFEST, "digest": sha256(b"other"), "size": 5});
    let d = referrer_manifest(
        &other_subject,
        Some(sbom_type),
        empty_descriptor(),
        json!({"k": "d"}),
    );

    reg.push_manifest_ok(repo, &sha256(&a), OCI_MANIFEST, &a);
    reg.push_manifest_ok(repo, "sig", OCI_MANIFEST, &b);
    reg.push_manifest_ok(repo, &sha256(&c), OCI_INDEX, &c);
    reg.push_manifest_ok(repo, &sha256(&d), OCI_MANIFEST, &d);
    reg.push_blob("referrers/elsewhere", EMPTY_JSON);
    let e = referrer_manifest(
        &subject_desc,
        Some(sbom_type),
        empty_descriptor(),
        json!({"k": "e"}),
    );
    reg.push_manifest_ok("referrers/elsewhere", &sha256(&e), OCI_MANIFEST, &e);

    let expected: BTreeMap<String, Value> = [
        json!({
            "mediaType": OCI_MANIFEST, "digest": sha256(&a), "size": a.len(),
            "artifactType": sbom_type,
            "annotations": sbom_annotations,
        }),
        json!({
            "mediaType": OCI_MANIFEST, "digest": sha256(&b), "size": b.len(),
            "artifactType": sig_config_type,
            "annotations": {"org.example.kind": "signature"},
        }),
        json!({
            "mediaType": OCI_INDEX, "digest": sha256(&c), "size": c.len(),
            "annotations": {"org.example.kind": "bundle"},
        }),
    ]
    .into_iter()
    .map(|d| (d["digest"].as_str().expect("digest").to_string(), d))
    .collect();

    let (index, _) = referrers(&reg, repo, &subject, "");
    let got = by_digest(&index);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "referrers of the subject: exactly A, B and C"
    );
    for (digest, want) in &expected {
        let have = &got[digest];
        for field in ["mediaType", "digest", "size", "artifactType", "annotations"] {
            assert_eq!(
                have.get(field),
                want.get(field),
                "referrer {digest}: `{field}`"
            );
        }
    }

    for (filter, want) in [
        (sbom_type, vec![sha256(&a)]),
        (sig_config_type, vec![sha256(&b)]),
    ] {
        let mut url = reg.resolve(&format!("/v2/{repo}/referrers/{subject}"));
        url.query_pairs_mut().append_pair("artifactType", filter);
        let query = format!("?{}", url.query().expect("query"));
        let (index, filters) = referrers(&reg, repo, &subject, &query);
        let applied = filters.unwrap_or_default();
        assert!(
            applied.split(',').any(|f| f.trim() == "artifactType"),
            "artifactType filter: OCI-Filters-Applied should name artifactType, got {applied:?}"
        );
        let got: Vec<String> = by_digest(&index).into_keys().collect();
        assert_eq!(got, want, "referrers filtered by {filter}");
    }
    let (index, filters) = referrers(&reg, repo, &subject, "?artifactType=application%2Fnone");
    assert!(filters.is_some_and(|f| f.contains("artifactType")));
    assert!(
        by_digest(&index).is_empty(),
        "no referrer has that artifactType"
    );

    let (index, _) = referrers(&reg, repo, &sha256(b"nothing refers to this"), "");
    assert!(by_digest(&index).is_empty(), "unknown digest: empty list");

    let resp = reg.get(&format!("/v2/{repo}/referrers/sha256:zzz"));
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "an invalid digest MUST be 400"
    );

    // Deleting a referrer removes it from the list.
    assert_eq!(
        reg.delete(&format!("/v2/{repo}/manifests/{}", sha256(&a)))
            .status(),
        202
    );
    let (index, _) = referrers(&reg, repo, &subject, "");
    assert!(
        !by_digest(&index).contains_key(&sha256(&a)),
        "deleted referrer still listed"
    );
}

// ---------------------------------------------------------------------------------------
// Content management
// ---------------------------------------------------------------------------------------

/// "Deleting tags": DELETE of a tag is 202; the tag is gone, the manifest stays reachable by
/// digest and through other tags.
#[test]
fn delete_tag_keeps_manifest_by_digest() {
    let reg = Registry::start();
    let repo = "manage/tags";
    let (manifest, digest) = reg.push_image(repo, "keep", &[b"layer"]);
    reg.push_manifest_ok(repo, "drop", OCI_MANIFEST, &manifest);

    let resp = reg.delete(&format!("/v2/{repo}/manifests/drop"));
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "DELETE tag should be 202"
    );
    assert_error(reg.get_manifest(repo, "drop"), 404, "MANIFEST_UNKNOWN");
    assert_eq!(
        body(reg.get_manifest(repo, &digest)),
        manifest,
        "still reachable by digest"
    );
    assert_eq!(reg.get_manifest(repo, "keep").status(), StatusCode::OK);
    let tags = json_body(reg.get(&format!("/v2/{repo}/tags/list")));
    assert_eq!(tags["tags"], json!(["keep"]));
}

/// "Deleting Manifests": DELETE by digest is 202; afterwards the digest and every tag that
/// pointed at it are 404, and the tag list reflects it.
#[test]
fn delete_manifest_by_digest() {
    let reg = Registry::start();
    let repo = "manage/manifests";
    let (manifest, digest) = reg.push_image(repo, "v1", &[b"doomed"]);
    reg.push_manifest_ok(repo, "v1-alias", OCI_MANIFEST, &manifest);
    reg.push_image(repo, "other", &[b"survivor"]);

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{digest}"));
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "DELETE manifest by digest should be 202"
    );
    assert_error(reg.get_manifest(repo, &digest), 404, "MANIFEST_UNKNOWN");
    assert_eq!(reg.head_manifest(repo, &digest).status(), 404);
    assert_error(reg.get_manifest(repo, "v1"), 404, "MANIFEST_UNKNOWN");
    assert_error(reg.get_manifest(repo, "v1-alias"), 404, "MANIFEST_UNKNOWN");
    let tags = json_body(reg.get(&format!("/v2/{repo}/tags/list")));
    assert_eq!(
        tags["tags"],
        json!(["other"]),
        "tags of a deleted manifest are gone"
    );

    assert_error(
        reg.delete(&format!("/v2/{repo}/manifests/{digest}")),
        404,
        "MANIFEST_UNKNOWN",
    );
}

/// "Deleting Blobs": DELETE is 202, then GET/HEAD are 404 and a second DELETE is 404; the
/// same blob linked in another repository is unaffected.
#[test]
fn delete_blob() {
    let reg = Registry::start();
    let bytes = blob_bytes(131, 1200);
    let digest = reg.push_blob("manage/blobs-a", &bytes);
    reg.push_blob("manage/blobs-b", &bytes);

    let path = format!("/v2/manage/blobs-a/blobs/{digest}");
    assert_eq!(
        reg.delete(&path).status(),
        StatusCode::ACCEPTED,
        "DELETE blob should be 202"
    );
    assert_error(reg.get(&path), 404, "BLOB_UNKNOWN");
    assert_eq!(reg.head(&path).status(), 404, "HEAD after DELETE");
    assert_error(reg.delete(&path), 404, "BLOB_UNKNOWN");

    let other = reg.get(&format!("/v2/manage/blobs-b/blobs/{digest}"));
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "the blob is still linked in the other repository"
    );
    assert_eq!(body(other), bytes);
}

/// DELETE of content that does not exist is 404 with the matching code.
#[test]
fn delete_unknown_is_404() {
    let reg = Registry::start();
    let repo = "manage/unknown";
    reg.push_image(repo, "v1", &[b"x"]);
    let missing = sha256(b"missing");

    assert_error(
        reg.delete(&format!("/v2/{repo}/manifests/{missing}")),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        reg.delete(&format!("/v2/{repo}/manifests/nosuchtag")),
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        reg.delete(&format!("/v2/{repo}/blobs/{missing}")),
        404,
        "BLOB_UNKNOWN",
    );
    assert_error_any(
        reg.delete(&format!("/v2/manage/nowhere/manifests/{missing}")),
        &[404],
        &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
    );
    assert_error_any(
        reg.delete(&format!("/v2/manage/nowhere/blobs/{missing}")),
        &[404],
        &["NAME_UNKNOWN", "BLOB_UNKNOWN"],
    );
}

// ---------------------------------------------------------------------------------------
// Errors and bad input
// ---------------------------------------------------------------------------------------

/// A request whose body is shorter than its Content-Length (the client then closes its
/// side) must get a 4xx or a closed connection, never a 5xx, and store nothing. reqwest
/// always sends a correct length, so these requests are written by hand.
#[test]
fn content_length_mismatch_is_rejected_without_5xx() {
    let reg = Registry::start();
    let repo = "errors/length";
    let host = reg.addr();
    let bytes = blob_bytes(141, 10);
    let digest = sha256(&bytes);

    let short_body_head = |request_line: &str, content_type: &str, announced: usize| {
        [
            request_line.to_string(),
            format!("Host: {host}"),
            format!("Content-Type: {content_type}"),
            format!("Content-Length: {announced}"),
            "Connection: close".to_string(),
        ]
        .join("\n")
    };
    let check = |what: &str, outcome: RawOutcome| match outcome {
        RawOutcome::Closed => {}
        RawOutcome::Response { status, rest } => assert!(
            (400..500).contains(&status),
            "{what}: expected a 4xx or a closed connection, got {status}: {rest}"
        ),
    };

    // Monolithic PUT to a session.
    let upload = with_query(&reg.start_upload(repo), "digest", &digest);
    let target = format!("{}?{}", upload.path(), upload.query().unwrap_or_default());
    let head = short_body_head(
        &format!("PUT {target} HTTP/1.1"),
        "application/octet-stream",
        100,
    );
    check("PUT blob with short body", reg.raw(&head, &bytes, true));
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{digest}")).status(),
        404,
        "short PUT stored nothing"
    );

    // Single POST.
    let head = short_body_head(
        &format!("POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1"),
        "application/octet-stream",
        100,
    );
    check("single POST with short body", reg.raw(&head, &bytes, true));
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{digest}")).status(),
        404,
        "short POST stored nothing"
    );

    // Manifest PUT.
    let (manifest, _) = reg.push_image(repo, "seed", &[b"layer"]);
    let head = short_body_head(
        &format!("PUT /v2/{repo}/manifests/short HTTP/1.1"),
        OCI_MANIFEST,
        manifest.len() + 50,
    );
    check(
        "manifest PUT with short body",
        reg.raw(&head, &manifest, true),
    );
    assert_eq!(
        reg.get_manifest(repo, "short").status(),
        404,
        "short manifest PUT stored nothing"
    );

    // The server is still healthy.
    assert_eq!(reg.get("/v2/").status(), StatusCode::OK);
}

/// "Pulling manifests": `<name>` MUST match
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`. Invalid names
/// (uppercase, `..`, bad separators, over 255 characters) are 400 NAME_INVALID (or 404
/// NAME_UNKNOWN), never open an upload session, and create no repository.
#[test]
fn invalid_repository_names_are_rejected() {
    let reg = Registry::start();
    let long = vec!["a".repeat(64); 4].join("/"); // 259 characters
    let names = [
        "Upper/case",
        "UPPER",
        "-lead",
        "trail-",
        "a___b",
        "a..b",
        "a//b",
        "a/.hidden",
        long.as_str(),
    ];
    let codes = ["NAME_INVALID", "NAME_UNKNOWN"];
    let manifest = image_manifest(&sha256(b"{}"), 2, &[]);
    for name in names {
        let case = |what: &str| format!("{what} of invalid name {name:?}");
        let resp = reg.get(&format!("/v2/{name}/tags/list"));
        assert_error_for(&case("GET tags/list"), resp, &[400, 404], &codes);
        let resp = reg.get_manifest(name, "latest");
        assert_error_for(&case("GET manifest"), resp, &[400, 404], &codes);
        let resp = send(reg.request(Method::POST, &format!("/v2/{name}/blobs/uploads/")));
        assert_error_for(&case("POST upload"), resp, &[400, 404], &codes);
        let resp = reg.push_manifest(name, "latest", OCI_MANIFEST, &manifest);
        assert_error_for(&case("PUT manifest"), resp, &[400, 404], &codes);
    }

    // `..` segments, sent raw so no client normalizes them away.
    let host = reg.addr();
    for (method, path) in [
        ("GET", "/v2/a/../b/tags/list"),
        ("POST", "/v2/a/../b/blobs/uploads/"),
        ("POST", "/v2/../escape/blobs/uploads/"),
        ("GET", "/v2/a/%2e%2e/b/tags/list"),
        ("PUT", "/v2/a/../../manifests/latest"),
    ] {
        let head =
            format!("{method} {path} HTTP/1.1\nHost: {host}\nContent-Length: 0\nConnection: close");
        match reg.raw(&head, b"", false) {
            RawOutcome::Response { status, rest } => {
                assert!(
                    status == 400 || status == 404,
                    "{method} {path}: expected 400 NAME_INVALID (or 404), got {status}: {rest}"
                );
                assert!(
                    codes.iter().any(|c| rest.contains(c)),
                    "{method} {path}: expected NAME_INVALID or NAME_UNKNOWN in: {rest}"
                );
            }
            RawOutcome::Closed => panic!("{method} {path}: connection closed without a response"),
        }
    }

    let catalog = json_body(reg.get("/v2/_catalog"));
    let repos = catalog["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        repos.is_empty(),
        "no repository may be created by invalid names: {repos:?}"
    );
}

/// Assorted malformed requests get client errors, never a 5xx.
#[test]
fn bad_input_never_causes_5xx() {
    let reg = Registry::start();
    let repo = "errors/bad-input";
    let bytes = blob_bytes(151, 100);
    let digest = reg.push_blob(repo, &bytes);
    reg.push_image(repo, "v1", &[b"layer"]);
    let blob_path = format!("/v2/{repo}/blobs/{digest}");

    for range in [
        "bytes=abc",
        "bytes=9-1",
        "items=0-1",
        "bytes=",
        "bytes=0-1,5-6",
        "bytes=--1",
    ] {
        let resp = send(reg.request(Method::GET, &blob_path).header("Range", range));
        assert_not_5xx(resp, &format!("GET blob with Range: {range}"));
    }

    for path in [
        format!("/v2/{repo}/blobs/sha256:zzz"),
        format!("/v2/{repo}/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"),
        format!("/v2/{repo}/blobs/notadigest"),
        format!("/v2/{repo}/manifests/sha256:zzz"),
        format!("/v2/{repo}/manifests/sha256:totallywrong"),
        format!("/v2/{repo}/referrers/notadigest"),
        format!("/v2/{repo}/tags/list?n=abc"),
        format!("/v2/{repo}/tags/list?n=-1"),
        format!("/v2/{repo}/tags/list?n=99999999999999999999999"),
        "/v2/_catalog?n=abc".to_string(),
        format!("/v2/{repo}/blobs/uploads/not-a-session"),
    ] {
        let status = assert_not_5xx(reg.get(&path), &format!("GET {path}"));
        if path.contains("sha256:zzz") || path.contains("notadigest") || path.contains("md5:") {
            assert!(
                status == 400 || status == 404,
                "GET {path}: expected 400 or 404, got {status}"
            );
        }
    }
    assert_not_5xx(
        reg.delete(&format!("/v2/{repo}/blobs/sha256:zzz")),
        "DELETE bogus blob digest",
    );
    assert_not_5xx(
        reg.delete(&format!("/v2/{repo}/manifests/sha256:zzz")),
        "DELETE bogus manifest digest",
    );

    let mut url = reg.resolve(&format!("/v2/{repo}/blobs/uploads/"));
    url.query_pairs_mut()
        .append_pair("mount", "sha256:zzz")
        .append_pair("from", "Bad..Name");
    assert_not_5xx(
        send(reg.client().post(url)),
        "POST mount with bogus digest and name",
    );

    // PATCH with a Content-Range that is malformed or disagrees with the body.
    for content_range in ["abc", "5-2", "0-99"] {
        let upload = reg.start_upload(repo);
        let resp = send(
            reg.client()
                .patch(upload)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", content_range)
                .body(vec![7u8; 10]),
        );
        let status = assert_not_5xx(resp, &format!("PATCH with Content-Range: {content_range}"));
        assert!(
            (400..500).contains(&status),
            "PATCH of 10 bytes with Content-Range: {content_range} should be refused, got {status}"
        );
    }

    // Not the spec's `start-end` form: the registry may accept a superset, but no 5xx.
    for content_range in ["bytes 0-9/10", "0-"] {
        let upload = reg.start_upload(repo);
        let resp = send(
            reg.client()
                .patch(upload)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", content_range)
                .body(vec![7u8; 10]),
        );
        assert_not_5xx(resp, &format!("PATCH with Content-Range: {content_range}"));
    }

    // Closing PUT without a digest.
    let upload = reg.start_upload(repo);
    let resp = send(reg.client().put(upload).body(bytes.clone()));
    let status = assert_not_5xx(resp, "PUT upload without ?digest=");
    assert_eq!(status, 400, "PUT upload without ?digest= should be 400");

    // A large garbage manifest (below the 4 MB registries SHOULD accept, so it is parsed).
    let large = vec![b'{'; 1024 * 1024];
    let status = assert_not_5xx(
        reg.push_manifest(repo, "large", OCI_MANIFEST, &large),
        "1 MiB garbage manifest",
    );
    assert!(
        (400..500).contains(&status),
        "garbage manifest should be refused, got {status}"
    );

    assert_eq!(
        reg.get("/v2/").status(),
        StatusCode::OK,
        "server still healthy"
    );
}
