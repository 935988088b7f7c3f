//! Pulling: a reference resolved to a manifest (an index narrowed to platforms), its blobs
//! fetched in parallel and verified as they are written, documents stored children first.
//! Nothing a registry sends is trusted: every byte is checked against its digest before the
//! store makes it visible.

use std::collections::HashSet;
use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use kiln_image::model::Descriptor;
use kiln_image::model::{self, media_types, Document, MAX_DOCUMENT_SIZE};
use kiln_image::store::blobs::{BlobStore, Expected};
use kiln_image::{Digest, Platform, Reference, StoreError, Target};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use crate::error::ClientError;
use crate::progress::{BlobKind, Event, Outcome, Progress};
use crate::transport::{error_text, registry_error, Scope};
use crate::Client;

/// Every manifest type kiln reads, as an `Accept` header.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Bytes gathered before a write to the store.
const WRITE_BATCH: usize = 1 << 20;

/// Which images of an index to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pull from an index [default: the host's].
    pub platform: Option<Platform>,
    /// Every platform of an index.
    pub all_platforms: bool,
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// What the pulled name should point at: the index (all platforms, or the host's), or
    /// the one manifest of another platform that was chosen.
    pub target: Target,
    /// The digest the registry serves for the reference (the index's, for an index).
    pub digest: Digest,
    /// Whether any blob had to be downloaded.
    pub downloaded: bool,
}

/// A manifest or index as fetched and verified.
pub struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub document: Document,
}

impl Client {
    /// `HEAD`s a reference: its digest, media type and size, without fetching it.
    pub async fn resolve(&self, reference: &Reference) -> Result<Target, ClientError> {
        let (registry, repo, wanted) = parts(reference);
        let path = format!("/v2/{repo}/manifests/{wanted}");
        let response = self
            .transport
            .send(registry, &Scope::pull(repo), Method::HEAD, &path, &|r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ClientError::ManifestUnknown {
                reference: reference.to_string(),
                errors: Vec::new(),
            });
        }
        if !status.is_success() {
            return Err(registry_error(response, format!("HEAD {reference}")).await);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let digest = match (reference.digest(), header("docker-content-digest")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => Digest::parse(&d).map_err(|e| ClientError::BadContent {
                what: format!("HEAD {reference}"),
                reason: format!("Docker-Content-Digest {d:?}: {e}"),
            })?,
            // Without the header only the bytes tell; fetch them.
            (None, None) => {
                let fetched = self.fetch_manifest(reference, &wanted).await?;
                return Ok(Target {
                    digest: fetched.digest,
                    media_type: fetched.media_type,
                    size: fetched.bytes.len() as u64,
                });
            }
        };
        let media_type = header("content-type").unwrap_or_default();
        let size = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        Ok(Target {
            digest,
            media_type,
            size,
        })
    }

    /// Fetches a manifest or index (`wanted`: a tag or digest) and verifies its digest.
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
        wanted: &str,
    ) -> Result<Fetched, ClientError> {
        let (registry, repo, _) = parts(reference);
        let path = format!("/v2/{repo}/manifests/{wanted}");
        let what = format!("{}/{}:{wanted}", reference.domain(), reference.path());
        let what = what
            .replace(":sha256:", "@sha256:")
            .replace(":sha512:", "@sha512:");
        let response = self
            .transport
            .send(registry, &Scope::pull(repo), Method::GET, &path, &|r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let errors = match registry_error(response, what.clone()).await {
                ClientError::Registry { errors, .. } => errors,
                _ => Vec::new(),
            };
            return Err(ClientError::ManifestUnknown {
                reference: what,
                errors,
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ClientError::Unauthorized {
                registry: registry.to_string(),
                detail: format!("pulling {what}: {status} (log in with kiln login {registry})"),
            });
        }
        if !status.is_success() {
            return Err(registry_error(response, format!("GET manifest {what}")).await);
        }
        let declared_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let served_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        if response.content_length().unwrap_or(0) > MAX_DOCUMENT_SIZE {
            return Err(ClientError::BadContent {
                what,
                reason: format!("manifest larger than {MAX_DOCUMENT_SIZE} bytes"),
            });
        }
        let bytes = read_limited(response, MAX_DOCUMENT_SIZE, &what).await?;
        // By digest: the bytes must hash to it. By tag: they must hash to what the registry
        // says they are, when it says.
        let expected = Digest::parse(wanted).ok().or(served_digest);
        let digest = match expected {
            Some(expected) => {
                let actual = Digest::of_bytes(expected.algorithm(), &bytes);
                if actual != expected {
                    return Err(ClientError::DigestMismatch {
                        what,
                        expected,
                        actual,
                    });
                }
                actual
            }
            None => Digest::sha256_of(&bytes),
        };
        let document = Document::parse(&bytes, declared_type.as_deref()).map_err(|e| {
            ClientError::BadContent {
                what: what.clone(),
                reason: e.to_string(),
            }
        })?;
        let media_type = declared_type
            .filter(|t| model::is_manifest_media_type(t) || model::is_index_media_type(t))
            .unwrap_or_else(|| match &document {
                Document::Index(_) => media_types::OCI_INDEX.to_string(),
                Document::Manifest(_) => media_types::OCI_MANIFEST.to_string(),
            });
        Ok(Fetched {
            digest,
            media_type,
            bytes,
            document,
        })
    }

    /// Pulls `reference` into `blobs`. The caller holds the store's lease and names the
    /// returned target.
    pub async fn pull(
        &self,
        blobs: &BlobStore,
        reference: &Reference,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Pulled, ClientError> {
        let (_, _, wanted) = parts(reference);
        let top = self.fetch_manifest(reference, &wanted).await?;
        let host = Platform::host();
        let platform = options.platform.clone().unwrap_or_else(|| host.clone());

        // Documents in the order they are stored: children before their parents.
        let mut documents: Vec<Fetched> = Vec::new();
        let mut manifests: Vec<Fetched> = Vec::new();
        let mut target = Target {
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
            size: top.bytes.len() as u64,
        };
        let mut pending = vec![(top, 0usize)];
        while let Some((doc, depth)) = pending.pop() {
            match &doc.document {
                Document::Manifest(_) => manifests.push(doc),
                Document::Index(index) => {
                    if depth >= 8 {
                        return Err(ClientError::BadContent {
                            what: reference.to_string(),
                            reason: "indexes nested too deeply".into(),
                        });
                    }
                    let children: Vec<&Descriptor> = if options.all_platforms {
                        index.manifests().iter().collect()
                    } else {
                        let chosen = index
                            .manifests()
                            .iter()
                            .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)));
                        let chosen = match chosen {
                            Some(c) => Some(c),
                            // An index of indexes (or of platform-less entries) is followed
                            // through its nested indexes.
                            None => index
                                .manifests()
                                .iter()
                                .find(|d| model::is_index_media_type(d.media_type().as_ref())),
                        };
                        let Some(chosen) = chosen else {
                            return Err(ClientError::NoPlatform {
                                reference: reference.to_string(),
                                platform: platform.to_string(),
                                available: available_platforms(index.manifests()),
                            });
                        };
                        // Another platform than the host's is named directly, so that the
                        // name resolves to what was pulled.
                        if depth == 0
                            && options.platform.as_ref().is_some_and(|p| *p != host)
                            && model::is_manifest_media_type(chosen.media_type().as_ref())
                        {
                            target = Target {
                                digest: descriptor_digest(chosen, reference)?,
                                media_type: chosen.media_type().to_string(),
                                size: chosen.size(),
                            };
                        }
                        vec![chosen]
                    };
                    for child in children {
                        let digest = descriptor_digest(child, reference)?;
                        let fetched = self.fetch_manifest(reference, &digest.to_string()).await?;
                        pending.push((fetched, depth + 1));
                    }
                    documents.push(doc);
                }
            }
        }

        // Blobs of every chosen manifest, each once, skipping what the store has.
        let mut seen = HashSet::new();
        let mut wanted_blobs = Vec::new();
        for m in &manifests {
            let Document::Manifest(manifest) = &m.document else {
                continue;
            };
            let config = std::iter::once((manifest.config(), BlobKind::Config));
            let layers = manifest.layers().iter().map(|l| (l, BlobKind::Layer));
            for (desc, kind) in config.chain(layers) {
                let digest = descriptor_digest(desc, reference)?;
                if seen.insert(digest.clone()) {
                    wanted_blobs.push((digest, desc.size(), kind));
                }
            }
        }
        let mut downloaded = false;
        let mut missing = Vec::new();
        for (digest, size, kind) in wanted_blobs {
            if blobs.contains(&digest) {
                progress.event(Event::Started {
                    digest: &digest,
                    size,
                    kind,
                });
                progress.event(Event::Finished {
                    digest: &digest,
                    outcome: Outcome::AlreadyPresent,
                });
            } else {
                missing.push((digest, size, kind));
            }
        }
        if !missing.is_empty() {
            downloaded = true;
            let repo = reference.path();
            let registry = reference.domain();
            futures_util::stream::iter(missing.into_iter().map(
                |(digest, size, kind)| async move {
                    self.fetch_blob(blobs, registry, repo, &digest, size, kind, progress)
                        .await
                },
            ))
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        }

        // Manifests, then the indexes above them (pushed last, so stored last).
        for doc in manifests.iter().chain(documents.iter().rev()) {
            blobs
                .put_bytes(
                    &doc.bytes,
                    Expected::digest(doc.digest.clone(), Some(doc.bytes.len() as u64)),
                )
                .map_err(ClientError::Store)?;
        }
        let digest = documents
            .last()
            .or(manifests.first())
            .map(|d| d.digest.clone())
            .unwrap_or_else(|| target.digest.clone());
        Ok(Pulled {
            target,
            digest,
            downloaded,
        })
    }

    /// Downloads one blob into the store, resuming with `Range` after a dropped connection.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob(
        &self,
        blobs: &BlobStore,
        registry: &str,
        repo: &str,
        digest: &Digest,
        size: u64,
        kind: BlobKind,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        progress.event(Event::Started { digest, size, kind });
        let path = format!("/v2/{repo}/blobs/{digest}");
        let what = format!("blob {digest} of {registry}/{repo}");
        let mut writer = blobs.writer(Expected::digest(digest.clone(), Some(size)))?;
        let mut failures = 0u32;
        loop {
            let offset = writer.written();
            let range = (offset > 0).then(|| format!("bytes={offset}-"));
            let response = self
                .transport
                .send(
                    registry,
                    &Scope::pull(repo),
                    Method::GET,
                    &path,
                    &|r| match &range {
                        Some(v) => r.header(RANGE, v),
                        None => r,
                    },
                )
                .await?;
            match response.status() {
                StatusCode::OK if offset > 0 => {
                    // The registry ignored the range: start over.
                    progress.event(Event::Retrying {
                        digest,
                        resume_at: 0,
                        reason: "the registry cannot resume; starting over",
                    });
                    writer = blobs.writer(Expected::digest(digest.clone(), Some(size)))?;
                }
                StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
                StatusCode::NOT_FOUND => {
                    return Err(registry_error(response, format!("GET {what}")).await)
                }
                _ => return Err(registry_error(response, format!("GET {what}")).await),
            }
            let mut body = response.bytes_stream();
            let mut broke = None;
            // Hashing and writing run on a blocking thread, fed 1 MiB at a time (network
            // reads come in pieces of a few KiB), so the transfer never waits for the disk.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let sink = tokio::task::spawn_blocking(move || {
                let mut failure = None;
                while let Some(batch) = rx.blocking_recv() {
                    if let Err(e) = writer.write_all(&batch) {
                        failure = Some(e);
                        break;
                    }
                }
                (writer, failure)
            });
            let mut received = offset;
            let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
            let mut too_long = false;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        received += bytes.len() as u64;
                        if received > size {
                            too_long = true;
                            break;
                        }
                        pending.extend_from_slice(&bytes);
                        if pending.len() >= WRITE_BATCH {
                            let full =
                                std::mem::replace(&mut pending, Vec::with_capacity(WRITE_BATCH));
                            if tx.send(full).await.is_err() {
                                break; // the writer failed; its error is collected below
                            }
                        }
                        progress.event(Event::Advanced {
                            digest,
                            bytes: bytes.len() as u64,
                        });
                    }
                    Err(e) => {
                        broke = Some(error_text(&e));
                        break;
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(pending).await;
            }
            drop(tx);
            let (returned, failure) = sink.await.map_err(|e| ClientError::Interrupted {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            writer = returned;
            if let Some(e) = failure {
                return Err(ClientError::Store(StoreError::io(blobs.path(digest), e)));
            }
            if too_long {
                return Err(ClientError::BadContent {
                    what,
                    reason: format!(
                        "the registry sent more than the {size} bytes its descriptor has"
                    ),
                });
            }
            if broke.is_none() && writer.written() < size {
                broke = Some(format!(
                    "connection closed after {} of {size} bytes",
                    writer.written()
                ));
            }
            let Some(reason) = broke else { break };
            failures += 1;
            if failures > self.transport_retries() {
                return Err(ClientError::Interrupted { what, reason });
            }
            progress.event(Event::Retrying {
                digest,
                resume_at: writer.written(),
                reason: &reason,
            });
            tokio::time::sleep(std::time::Duration::from_millis(200 << failures.min(6))).await;
        }
        // The commit's fsync waits for the disk: not on an async worker.
        let committed = tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| ClientError::Interrupted {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        match committed {
            Ok(_) => {}
            Err(StoreError::DigestMismatch { expected, actual }) => {
                return Err(ClientError::DigestMismatch {
                    what,
                    expected,
                    actual,
                })
            }
            Err(e) => return Err(ClientError::Store(e)),
        }
        progress.event(Event::Finished {
            digest,
            outcome: Outcome::Downloaded,
        });
        Ok(())
    }
}

/// `(registry, repository path, tag or digest to ask for)`.
pub(crate) fn parts(reference: &Reference) -> (&str, &str, String) {
    let wanted = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    (reference.domain(), reference.path(), wanted)
}

pub(crate) fn descriptor_digest(
    d: &Descriptor,
    reference: &Reference,
) -> Result<Digest, ClientError> {
    model::descriptor_digest(d).map_err(|e| ClientError::BadContent {
        what: reference.to_string(),
        reason: e.to_string(),
    })
}

fn available_platforms(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

async fn read_limited(
    response: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Interrupted {
            what: what.to_string(),
            reason: error_text(&e),
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(ClientError::BadContent {
                what: what.to_string(),
                reason: format!("manifest larger than {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Client {
    /// The manifests that name `subject` (a digest in `repository`) as their subject, as the
    /// referrers API lists them — filtered by `artifact_type` when given. Registries without
    /// the API are read through the tag schema the spec gives for them (`sha256-<hex>`).
    pub async fn referrers(
        &self,
        repository: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let registry = repository.domain();
        let repo = repository.path();
        let mut path = format!("/v2/{repo}/referrers/{subject}");
        if let Some(t) = artifact_type {
            path.push_str("?artifactType=");
            path.push_str(&t.replace('+', "%2B"));
        }
        let response = self
            .transport
            .send(registry, &Scope::pull(repo), Method::GET, &path, &|r| {
                r.header(ACCEPT, media_types::OCI_INDEX)
            })
            .await?;
        let what = format!("referrers of {registry}/{repo}@{subject}");
        let (bytes, filtered) = if response.status().is_success() {
            let filtered = response.headers().contains_key("oci-filters-applied");
            (
                read_limited(response, MAX_DOCUMENT_SIZE, &what).await?,
                filtered,
            )
        } else if response.status() == StatusCode::NOT_FOUND {
            // No referrers API: the fallback tag holds an index of them, if any exist.
            let tag = format!("{}-{}", subject.algorithm().name(), subject.hex());
            match self.fetch_manifest(repository, &tag).await {
                Ok(fetched) => (fetched.bytes, false),
                Err(ClientError::ManifestUnknown { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        } else {
            return Err(registry_error(response, format!("GET {what}")).await);
        };
        let index = match Document::parse(&bytes, Some(media_types::OCI_INDEX)) {
            Ok(Document::Index(index)) => index,
            Ok(Document::Manifest(_)) => {
                return Err(ClientError::BadContent {
                    what,
                    reason: "expected an image index".into(),
                })
            }
            Err(e) => {
                return Err(ClientError::BadContent {
                    what,
                    reason: e.to_string(),
                })
            }
        };
        let mut out: Vec<Descriptor> = index.manifests().to_vec();
        if let (Some(t), false) = (artifact_type, filtered) {
            out.retain(|d| {
                d.artifact_type()
                    .as_ref()
                    .is_some_and(|a| a.to_string() == t)
            });
        }
        Ok(out)
    }
}
