//! What a transfer reports as it goes; the command line draws bars or prints lines from it.

use kiln_image::Digest;

/// How one blob's transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pulled: bytes fetched and verified.
    Downloaded,
    /// Pulled: already in the local store.
    AlreadyPresent,
    /// Pushed: bytes uploaded.
    Pushed,
    /// Pushed: the registry already had it in the repository.
    AlreadyExists,
    /// Pushed: linked from another repository of the same registry.
    Mounted { from: String },
}

/// Whether a blob is an image's config or one of its layers (or another manifest's blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Config,
    Layer,
}

#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A blob's transfer begins; `size` is from its descriptor.
    Started {
        digest: &'a Digest,
        size: u64,
        kind: BlobKind,
    },
    /// `bytes` more of the blob moved.
    Advanced { digest: &'a Digest, bytes: u64 },
    /// A transfer broke off and is tried again (from `resume_at` when the registry allows).
    Retrying {
        digest: &'a Digest,
        resume_at: u64,
        reason: &'a str,
    },
    /// The blob is done.
    Finished {
        digest: &'a Digest,
        outcome: Outcome,
    },
}

pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}
