//! Pushing: every blob an image (or index) needs — skipped when the registry has it, mounted
//! from another repository of the same registry when one holds it, else uploaded as one
//! streamed `PATCH` that resumes from the registry's acknowledged offset after a dropped
//! connection — then manifests, children before the index that lists them.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use kiln_image::model::{self, Document, MAX_DOCUMENT_SIZE};
use kiln_image::store::blobs::BlobStore;
use kiln_image::{Digest, ImageStore, Reference, StoreError, Target};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};

use crate::error::ClientError;
use crate::progress::{BlobKind, Event, Outcome, Progress};
use crate::pull::{descriptor_digest, parts};
use crate::transport::{registry_error, Scope};
use crate::Client;

/// Bytes read from the store per piece of an upload body.
const UPLOAD_PIECE: usize = 1 << 20;

/// Where blobs may be mounted from: digest -> repositories (paths) of the destination
/// registry that hold it.
pub type MountSources = HashMap<Digest, Vec<String>>;

#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A document to push, read from the store.
struct Doc {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
}

/// Repositories of `registry` that the store's names say hold each blob.
pub fn mount_sources(store: &ImageStore, registry: &str) -> Result<MountSources, StoreError> {
    let mut out: MountSources = HashMap::new();
    for entry in store.refs().list()? {
        if entry.name.domain() != registry {
            continue;
        }
        let repo = entry.name.path().to_string();
        let mut pending = vec![(entry.target.digest, entry.target.media_type)];
        let mut seen = HashSet::new();
        while let Some((digest, media_type)) = pending.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let list = out.entry(digest.clone()).or_default();
            if !list.contains(&repo) {
                list.push(repo.clone());
            }
            let is_doc = model::is_manifest_media_type(&media_type)
                || model::is_index_media_type(&media_type);
            if !is_doc || !store.blobs().contains(&digest) {
                continue;
            }
            let Ok(doc) = store.read_document(&digest, Some(&media_type)) else {
                continue;
            };
            for child in doc.children() {
                if let Ok(d) = model::descriptor_digest(child) {
                    pending.push((d, child.media_type().to_string()));
                }
            }
        }
    }
    Ok(out)
}

impl Client {
    /// Pushes what `target` names in the store to `destination` (a tag, or a digest).
    pub async fn push(
        &self,
        blobs: &BlobStore,
        target: &Target,
        destination: &Reference,
        mounts: &MountSources,
        progress: &Arc<dyn Progress>,
    ) -> Result<Pushed, ClientError> {
        // Gather documents depth-first: children before parents.
        let mut docs: Vec<Doc> = Vec::new();
        let mut layer_blobs: Vec<(Digest, u64, BlobKind)> = Vec::new();
        let mut seen = HashSet::new();
        self.collect(
            blobs,
            destination,
            target.digest.clone(),
            target.media_type.clone(),
            0,
            &mut docs,
            &mut layer_blobs,
            &mut seen,
        )?;
        let registry = destination.domain();
        let repo = destination.path();
        futures_util::stream::iter(layer_blobs.iter().map(|(digest, size, kind)| async move {
            let sources = mounts.get(digest).map(Vec::as_slice).unwrap_or(&[]);
            self.push_blob(
                blobs, registry, repo, digest, *size, *kind, sources, progress,
            )
            .await
        }))
        .buffer_unordered(self.concurrency)
        .try_collect::<Vec<()>>()
        .await?;

        let (_, _, top_ref) = parts(destination);
        let count = docs.len();
        for (i, doc) in docs.iter().enumerate() {
            let reference = if i + 1 == count {
                top_ref.clone()
            } else {
                doc.digest.to_string()
            };
            self.put_manifest(registry, repo, &reference, doc).await?;
        }
        let top = docs.last().ok_or_else(|| ClientError::BadContent {
            what: destination.to_string(),
            reason: "nothing to push".into(),
        })?;
        Ok(Pushed {
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
            size: top.bytes.len() as u64,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        blobs: &BlobStore,
        destination: &Reference,
        digest: Digest,
        media_type: String,
        depth: usize,
        docs: &mut Vec<Doc>,
        layer_blobs: &mut Vec<(Digest, u64, BlobKind)>,
        seen: &mut HashSet<Digest>,
    ) -> Result<(), ClientError> {
        if depth > 8 {
            return Err(ClientError::BadContent {
                what: destination.to_string(),
                reason: "indexes nested too deeply".into(),
            });
        }
        if !seen.insert(digest.clone()) {
            return Ok(());
        }
        if !blobs.contains(&digest) {
            return Err(ClientError::BadContent {
                what: destination.to_string(),
                reason: format!(
                    "{digest} ({media_type}) is not in the local store (pulled for another platform only?)"
                ),
            });
        }
        let bytes = blobs.read_small(&digest, MAX_DOCUMENT_SIZE)?;
        let document =
            Document::parse(&bytes, Some(&media_type)).map_err(|e| ClientError::BadContent {
                what: format!("{destination}: {digest}"),
                reason: e.to_string(),
            })?;
        match &document {
            Document::Index(index) => {
                for child in index.manifests() {
                    let d = descriptor_digest(child, destination)?;
                    self.collect(
                        blobs,
                        destination,
                        d,
                        child.media_type().to_string(),
                        depth + 1,
                        docs,
                        layer_blobs,
                        seen,
                    )?;
                }
            }
            Document::Manifest(manifest) => {
                let config = std::iter::once((manifest.config(), BlobKind::Config));
                let layers = manifest.layers().iter().map(|l| (l, BlobKind::Layer));
                for (desc, kind) in config.chain(layers) {
                    let d = descriptor_digest(desc, destination)?;
                    if seen.insert(d.clone()) {
                        if !blobs.contains(&d) {
                            return Err(ClientError::BadContent {
                                what: destination.to_string(),
                                reason: format!("blob {d} is not in the local store"),
                            });
                        }
                        layer_blobs.push((d, desc.size(), kind));
                    }
                }
            }
        }
        docs.push(Doc {
            digest,
            media_type,
            bytes,
        });
        Ok(())
    }

    async fn put_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        doc: &Doc,
    ) -> Result<(), ClientError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let body = Bytes::from(doc.bytes.clone());
        let media_type = doc.media_type.clone();
        let response = self
            .transport
            .send(registry, &Scope::push(repo), Method::PUT, &path, &|r| {
                r.header(CONTENT_TYPE, media_type.as_str())
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(registry_error(
                response,
                format!("PUT manifest {registry}/{repo}:{reference}"),
            )
            .await);
        }
        if let Some(served) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
        {
            if served.algorithm() == doc.digest.algorithm() && served != doc.digest {
                return Err(ClientError::DigestMismatch {
                    what: format!(
                        "manifest {registry}/{repo}:{reference} as stored by the registry"
                    ),
                    expected: doc.digest.clone(),
                    actual: served,
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        blobs: &BlobStore,
        registry: &str,
        repo: &str,
        digest: &Digest,
        size: u64,
        kind: BlobKind,
        sources: &[String],
        progress: &Arc<dyn Progress>,
    ) -> Result<(), ClientError> {
        progress.event(Event::Started { digest, size, kind });
        let push = Scope::push(repo);
        let exists = self
            .transport
            .send(
                registry,
                &push,
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &|r| r,
            )
            .await?;
        if exists.status().is_success() {
            progress.event(Event::Finished {
                digest,
                outcome: Outcome::AlreadyExists,
            });
            return Ok(());
        }
        let mut location = None;
        for from in sources.iter().filter(|s| s.as_str() != repo) {
            let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
            let response = self
                .transport
                .send(
                    registry,
                    &push.clone().and_pull(from),
                    Method::POST,
                    &path,
                    &|r| r.header(CONTENT_LENGTH, 0),
                )
                .await?;
            match response.status() {
                StatusCode::CREATED => {
                    progress.event(Event::Finished {
                        digest,
                        outcome: Outcome::Mounted { from: from.clone() },
                    });
                    return Ok(());
                }
                // Not mountable, but a session was opened: use it.
                StatusCode::ACCEPTED => {
                    location = response_location(&response);
                    break;
                }
                _ => {}
            }
        }
        let file = Arc::new(
            std::fs::File::open(blobs.path(digest))
                .map_err(|e| ClientError::Store(StoreError::io(blobs.path(digest), e)))?,
        );
        let what = format!("blob {digest} to {registry}/{repo}");
        let mut offset = 0u64;
        let mut failures = 0u32;
        loop {
            let session = match location.take() {
                Some(l) => l,
                None => self.start_upload(registry, repo).await?,
            };
            match self
                .upload_from(
                    registry, repo, &session, &file, offset, size, digest, progress,
                )
                .await
            {
                Ok(finished) => {
                    location = Some(finished);
                    break;
                }
                Err(reason) => {
                    failures += 1;
                    if failures > self.transport_retries() {
                        return Err(ClientError::Interrupted { what, reason });
                    }
                    // Ask the registry how much it kept; a lost session starts over.
                    match self.upload_status(registry, repo, &session).await {
                        Some(acknowledged) => {
                            offset = acknowledged;
                            location = Some(session);
                        }
                        None => offset = 0,
                    }
                    progress.event(Event::Retrying {
                        digest,
                        resume_at: offset,
                        reason: &reason,
                    });
                    tokio::time::sleep(std::time::Duration::from_millis(200 << failures.min(6)))
                        .await;
                }
            }
        }
        let session = location.unwrap_or_default();
        let separator = if session.contains('?') { '&' } else { '?' };
        let put = format!("{session}{separator}digest={digest}");
        let response = self
            .transport
            .send(registry, &push, Method::PUT, &put, &|r| {
                r.header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(registry_error(response, format!("finishing upload of {what}")).await);
        }
        progress.event(Event::Finished {
            digest,
            outcome: Outcome::Pushed,
        });
        Ok(())
    }

    async fn start_upload(&self, registry: &str, repo: &str) -> Result<String, ClientError> {
        let response = self
            .transport
            .send(
                registry,
                &Scope::push(repo),
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &|r| r.header(CONTENT_LENGTH, 0),
            )
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(ClientError::Unauthorized {
                registry: registry.to_string(),
                detail: format!(
                    "pushing to {repo}: {} (log in with kiln login {registry})",
                    response.status()
                ),
            });
        }
        if response.status() != StatusCode::ACCEPTED {
            return Err(registry_error(
                response,
                format!("starting an upload to {registry}/{repo}"),
            )
            .await);
        }
        response_location(&response).ok_or_else(|| ClientError::BadContent {
            what: format!("upload to {registry}/{repo}"),
            reason: "the registry gave no Location for the upload".into(),
        })
    }

    /// Sends the blob from `offset` to its end in one `PATCH`; returns the next Location,
    /// or why the transfer broke.
    #[allow(clippy::too_many_arguments)]
    async fn upload_from(
        &self,
        registry: &str,
        repo: &str,
        session: &str,
        file: &Arc<std::fs::File>,
        offset: u64,
        size: u64,
        digest: &Digest,
        progress: &Arc<dyn Progress>,
    ) -> Result<String, String> {
        if offset >= size && size > 0 {
            return Ok(session.to_string());
        }
        let length = size - offset;
        let content_range = format!("{offset}-{}", size.saturating_sub(1));
        let response = self
            .transport
            .send_once(registry, &Scope::push(repo), Method::PATCH, session, &|r| {
                let r = r
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, length);
                // A resumed upload says where it continues; a fresh one streams.
                let r = if offset > 0 {
                    r.header("content-range", content_range.as_str())
                } else {
                    r
                };
                r.body(reqwest::Body::wrap_stream(file_stream(
                    file.clone(),
                    offset,
                    size,
                    progress_hook(progress, digest),
                )))
            })
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::ACCEPTED && !response.status().is_success() {
            let status = response.status();
            let err = registry_error(response, "upload".into()).await;
            return Err(format!("PATCH answered {status}: {err}"));
        }
        Ok(response_location(&response).unwrap_or_else(|| session.to_string()))
    }

    /// How many bytes the registry holds for an upload session (`None`: session lost).
    async fn upload_status(&self, registry: &str, repo: &str, session: &str) -> Option<u64> {
        let response = self
            .transport
            .send(registry, &Scope::push(repo), Method::GET, session, &|r| r)
            .await
            .ok()?;
        if response.status() != StatusCode::NO_CONTENT && !response.status().is_success() {
            return None;
        }
        let range = response.headers().get(RANGE)?.to_str().ok()?;
        let end = range
            .trim()
            .trim_start_matches("bytes=")
            .split('-')
            .nth(1)?;
        end.trim().parse::<u64>().ok().map(|e| e + 1)
    }
}

fn response_location(response: &reqwest::Response) -> Option<String> {
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    // Relative to the request's URL.
    let url = response.url().join(location).ok()?;
    Some(url.to_string())
}

/// The bytes `offset..size` of `file`, read in pieces on the blocking pool; positional
/// reads, so every attempt has its own stream.
fn file_stream(
    file: Arc<std::fs::File>,
    offset: u64,
    size: u64,
    progress: ProgressHook,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::try_unfold(offset, move |position| {
        let file = file.clone();
        let progress = progress.clone();
        async move {
            if position >= size {
                return Ok(None);
            }
            let want = (size - position).min(UPLOAD_PIECE as u64) as usize;
            let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                let mut buf = vec![0u8; want];
                file.read_exact_at(&mut buf, position)?;
                Ok(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            progress(chunk.len() as u64);
            Ok(Some((Bytes::from(chunk), position + want as u64)))
        }
    })
}

/// Reports upload bytes from inside a request body (which must be `'static`).
type ProgressHook = Arc<dyn Fn(u64) + Send + Sync>;

fn progress_hook(progress: &Arc<dyn Progress>, digest: &Digest) -> ProgressHook {
    let progress = progress.clone();
    let digest = digest.clone();
    Arc::new(move |bytes| {
        progress.event(Event::Advanced {
            digest: &digest,
            bytes,
        })
    })
}
