//! Where compiled components are kept between runs: the cache trait the server implements
//! over its store, and the holding pen that keeps an upload's artifact until it is accepted.

/// Where compiled components are kept between runs, keyed by content hash and engine
/// configuration (`{sha256}-{engine fingerprint}`).
pub trait ArtifactCache {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&self, key: &str, artifact: Vec<u8>);
}

/// A cache that reads through to another one but keeps what a load would put in memory until
/// told to [`keep`](Self::keep) it: an upload's compiled artifact reaches the store only once
/// the upload is accepted.
pub struct PendingArtifacts<'a> {
    cache: &'a dyn ArtifactCache,
    pending: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

impl<'a> PendingArtifacts<'a> {
    pub fn new(cache: &'a dyn ArtifactCache) -> Self {
        PendingArtifacts {
            cache,
            pending: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// What a load put, to be stored later with [`ArtifactCache::put`].
    pub fn into_pending(self) -> Vec<(String, Vec<u8>)> {
        self.pending
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ArtifactCache for PendingArtifacts<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key)
    }
    fn put(&self, key: &str, artifact: Vec<u8>) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((key.to_string(), artifact));
    }
}

/// No cache: always compile.
pub struct NoCache;

impl ArtifactCache for NoCache {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _: &str, _: Vec<u8>) {}
}
