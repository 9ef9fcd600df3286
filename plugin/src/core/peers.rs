//! Where a rescue's candidates come from: the `PeerSource` seam between the decisions
//! (`core::redispatch`, `core::affinity`) and the registry, so that neither decision module
//! depends on the other and tests can hand in a fixed list.

use crate::core::config::Selection;
use crate::core::lookup::{pick, LookupCache, Query};
use crate::core::registry::Scope;
use crate::core::store::SharedStore;

/// Where candidates come from: the registry in the filter, a list in tests.
pub trait PeerSource {
    /// One fresh peer of `version` not in `exclude`.
    fn pick(&mut self, version: &str, exclude: &[String], random: u64) -> Option<String>;
}

/// The registry as a peer source: reads only the set of `(pool, app, version)`.
pub struct RegistryPeers<'a, S> {
    pub store: &'a mut S,
    pub cache: &'a mut LookupCache,
    pub pool: &'a str,
    pub app: &'a str,
    pub cross_pool: bool,
    /// The configuration's part of the registry (`registry::Scope::of`).
    pub scope: &'a Scope,
    pub selection: Selection,
    pub now_ms: u64,
}

impl<S: SharedStore> PeerSource for RegistryPeers<'_, S> {
    fn pick(&mut self, version: &str, exclude: &[String], random: u64) -> Option<String> {
        let q = Query {
            pool: self.pool,
            app: self.app,
            version,
            cross_pool: self.cross_pool,
            selection: self.selection,
            now_ms: self.now_ms,
        };
        pick(self.store, self.scope, self.cache, &q, exclude, random)
            .ok()
            .flatten()
    }
}
