//! kiln-client: moves images between the local store and OCI registries.
//!
//! One [`Client`] holds connections, learned endpoints and bearer tokens for every registry
//! it talks to. Callers (the `kiln` commands, the builder's `--push`, the node agent) give it
//! a [`CredentialProvider`] and a concurrency limit, then [`Client::resolve`],
//! [`Client::pull`] and [`Client::push`]. Pulled bytes are verified against their digests
//! before the store makes them visible; the caller holds the store's lease and sets names.

pub mod challenge;
pub mod credentials;
pub mod error;
pub mod progress;
pub mod pull;
pub mod push;
pub mod transport;

use std::sync::Arc;

pub use credentials::{Anonymous, CredentialProvider, Credentials, DockerConfig};
pub use error::ClientError;
pub use progress::{BlobKind, Event, Outcome, Progress, Silent};
pub use pull::{PullOptions, Pulled};
pub use push::{mount_sources, MountSources, Pushed};
pub use transport::{Scope, TransportOptions};

use transport::Transport;

/// Blobs moved at once unless the caller says otherwise (docker's default for pulls is 3,
/// for pushes 5).
pub const DEFAULT_CONCURRENCY: usize = 4;

pub struct Client {
    transport: Transport,
    concurrency: usize,
    retries: u32,
}

impl Client {
    pub fn new(
        options: TransportOptions,
        credentials: Arc<dyn CredentialProvider>,
    ) -> Result<Client, ClientError> {
        let retries = options.retries;
        Ok(Client {
            transport: Transport::new(options, credentials)?,
            concurrency: DEFAULT_CONCURRENCY,
            retries,
        })
    }

    /// How many blobs move at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Client {
        self.concurrency = concurrency.max(1);
        self
    }

    fn transport_retries(&self) -> u32 {
        self.retries
    }

    /// Checks `credentials` against `registry` (for `kiln login`): nothing is saved here.
    pub async fn check_login(
        &self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<(), ClientError> {
        self.transport.check_login(registry, credentials).await
    }
}
