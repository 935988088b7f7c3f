//! The image manager: `EnsureImageExists` of the kubelet — pull policies, per-(pod, image)
//! back-off, the kubelet's events, pull secrets matched by the keyring, serial or bounded
//! parallel pulls, and the node's platform chosen from an index.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_client::credentials::Fixed;
use kiln_client::{Client, Credentials, PullOptions, Silent, TransportOptions};
use kiln_image::{ImageStore, Platform, PullPolicy, Reference};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::events::Recorder;
use crate::keyring::Keyring;

/// Why a container's image is not ready; `reason` becomes its `waiting.reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    pub reason: &'static str,
    pub message: String,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// How the store names it (`repo:tag` or `repo@digest`).
    pub store_name: String,
    /// `repository@digest` of what was pulled: the containerStatus's `imageID`.
    pub image_id: String,
}

/// How many pulls run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullConcurrency {
    /// One at a time (`serializeImagePulls: true`, the default).
    Serial,
    /// Up to this many at once, or unbounded.
    Parallel(Option<u32>),
}

pub struct ImageManager {
    root: PathBuf,
    recorder: Recorder,
    backoff: Mutex<Backoff>,
    /// None: unbounded.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    node_keyring: Keyring,
    transport: TransportOptions,
    platform: Platform,
}

impl ImageManager {
    pub fn new(
        root: PathBuf,
        recorder: Recorder,
        concurrency: PullConcurrency,
        backoff: (Duration, Duration),
        node_keyring: Keyring,
        transport: TransportOptions,
    ) -> ImageManager {
        let slots = match concurrency {
            PullConcurrency::Serial => Some(1),
            PullConcurrency::Parallel(n) => n.map(|n| n.max(1) as usize),
        };
        ImageManager {
            root,
            recorder,
            backoff: Mutex::new(Backoff::new(backoff.0, backoff.1)),
            slots: slots.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            node_keyring,
            transport,
            platform: Platform::host(),
        }
    }

    /// Makes sure the image of `container` of `pod` is present, as its pull policy says.
    /// `secrets` are the pod's pull secrets as read from the API (Secret objects).
    pub async fn ensure(
        &self,
        pod: &Value,
        container: &crate::pod::Container,
        field_path: &str,
        secrets: &[Value],
    ) -> Result<Ensured, PullFailure> {
        let image = container.image.as_str();
        let event = |kind: &str, reason: &str, message: &str| {
            self.recorder
                .record(pod, kind, reason, message, Some(field_path))
        };
        let reference = match Reference::parse_normalized(image) {
            Ok(r) => r,
            Err(e) => {
                let message = format!(
                    "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: {e}"
                );
                event("Warning", "InspectFailed", &message);
                return Err(PullFailure {
                    reason: "InvalidImageName",
                    message,
                });
            }
        };
        let policy = PullPolicy::of(container.image_pull_policy.as_deref(), image);
        let present = self.present(&reference).await;
        if policy != PullPolicy::Always {
            if let Some(ensured) = present {
                event(
                    "Normal",
                    "Pulled",
                    &format!("Container image {image:?} already present on machine"),
                );
                return Ok(ensured);
            }
            if policy == PullPolicy::Never {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                event("Warning", "ErrImageNeverPull", &message);
                return Err(PullFailure {
                    reason: "ErrImageNeverPull",
                    message,
                });
            }
        }
        let key = format!(
            "{}_{image}",
            pod["metadata"]["uid"].as_str().unwrap_or_default()
        );
        let in_backoff = self
            .backoff
            .lock()
            .map(|b| b.is_in_backoff_since_update(&key, Instant::now()))
            .unwrap_or(false);
        if in_backoff {
            let message = format!("Back-off pulling image {image:?}");
            event("Normal", "BackOff", &message);
            return Err(PullFailure {
                reason: "ImagePullBackOff",
                message,
            });
        }
        event("Normal", "Pulling", &format!("Pulling image {image:?}"));
        let queued = Instant::now();
        let _slot = match &self.slots {
            Some(s) => Some(s.clone().acquire_owned().await.map_err(|_| PullFailure {
                reason: "ErrImagePull",
                message: "the node is shutting down".into(),
            })?),
            None => None,
        };
        let started = Instant::now();
        let keyring = match Keyring::for_pod(secrets, &self.node_keyring) {
            Ok(k) => k,
            Err(e) => {
                let message = format!("Failed to pull image {image:?}: {e}");
                event("Warning", "Failed", &message);
                return Err(PullFailure {
                    reason: "ErrImagePull",
                    message: e.to_string(),
                });
            }
        };
        // Every matching credential in turn; anonymous only when none matches.
        let mut credentials: Vec<Option<Credentials>> = keyring
            .lookup(&reference.repository())
            .into_iter()
            .map(|c| {
                Some(match c.identity_token {
                    Some(token) => Credentials::new("<token>", token),
                    None => Credentials::new(c.username, c.password),
                })
            })
            .collect();
        if credentials.is_empty() {
            credentials.push(None);
        }
        let mut errors = Vec::new();
        for credential in credentials {
            match self.pull(&reference, credential).await {
                Ok((ensured, size)) => {
                    if let Ok(mut b) = self.backoff.lock() {
                        b.reset(&key);
                    }
                    event(
                        "Normal",
                        "Pulled",
                        &format!(
                            "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {size} bytes.",
                            go_duration(started.elapsed()),
                            go_duration(queued.elapsed()),
                        ),
                    );
                    return Ok(ensured);
                }
                Err(e) => errors.push(e),
            }
        }
        if let Ok(mut b) = self.backoff.lock() {
            b.next(&key, Instant::now());
        }
        let error = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        let message = format!("Failed to pull image {image:?}: {error}");
        event("Warning", "Failed", &message);
        Err(PullFailure {
            reason: "ErrImagePull",
            message: error,
        })
    }

    /// The stored image a reference names, if any.
    async fn present(&self, reference: &Reference) -> Option<Ensured> {
        let root = self.root.clone();
        let reference = reference.clone();
        let platform = self.platform.clone();
        tokio::task::spawn_blocking(move || {
            let store = ImageStore::open(&root).ok()?;
            let key = reference.store_key();
            let entry = store.refs().get(&key).ok()??;
            // Only usable if the node's platform is there in full.
            store.image(&entry.target, &platform).ok()?;
            Some(Ensured {
                store_name: key.to_string(),
                image_id: format!("{}@{}", reference.repository(), entry.target.digest),
            })
        })
        .await
        .ok()?
    }

    async fn pull(
        &self,
        reference: &Reference,
        credential: Option<Credentials>,
    ) -> Result<(Ensured, u64), String> {
        let client = Client::new(self.transport.clone(), Arc::new(Fixed(credential)))
            .map_err(|e| e.to_string())?;
        let store = ImageStore::open(&self.root).map_err(|e| e.to_string())?;
        let lease = store.lease().map_err(|e| e.to_string())?;
        let options = PullOptions {
            platform: Some(self.platform.clone()),
            all_platforms: false,
        };
        let pulled = client
            .pull(store.blobs(), reference, &options, &Silent)
            .await
            .map_err(|e| e.to_string())?;
        let key = reference.store_key();
        store.tag(&pulled.target, &key).map_err(|e| e.to_string())?;
        drop(lease);
        let size = store
            .image(&pulled.target, &self.platform)
            .map(|i| i.content_size())
            .map_err(|e| e.to_string())?;
        Ok((
            Ensured {
                store_name: key.to_string(),
                image_id: format!("{}@{}", reference.repository(), pulled.digest),
            },
            size,
        ))
    }

    /// How long until the back-off of `image` for the pod `uid` lets a pull be tried.
    pub fn backoff_remaining(&self, uid: &str, image: &str) -> Duration {
        let key = format!("{uid}_{image}");
        self.backoff
            .lock()
            .map(|b| b.remaining(&key, Instant::now()))
            .unwrap_or_default()
    }

    /// Forgets the back-off entries older than their expiry.
    pub fn gc_backoff(&self) {
        if let Ok(mut b) = self.backoff.lock() {
            b.gc(Instant::now());
        }
    }
}

/// A duration as the kubelet's messages print it: truncated to milliseconds, then in Go's
/// `time.Duration.String` form (`552ms`, `1.234s`, `2m3.5s`).
pub fn go_duration(d: Duration) -> String {
    crate::config::format_go_duration(Duration::from_millis(d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(0)), "0s");
        assert_eq!(go_duration(ms(552)), "552ms");
        assert_eq!(go_duration(ms(1234)), "1.234s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(2000)), "2s");
        assert_eq!(go_duration(ms(123_500)), "2m3.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }
}
