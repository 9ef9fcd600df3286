//! What every HTTP context of a configured plugin shares with its root context: a leaf module,
//! so that the root (which creates it) and the HTTP code (which reads it) do not import
//! each other.

use crate::core::budget::Budget;
use crate::core::config::Config;
use crate::core::demand::ledger::Ledger;
use crate::core::lookup::LookupCache;
use crate::core::registry::Scope;
use crate::filter::metrics::Metrics;
use std::cell::RefCell;
use std::rc::Rc;

/// What every HTTP context of a configured plugin shares.
pub struct Shared {
    /// Shared with the root's jobs (`core::jobs::Jobs`).
    pub config: Rc<Config>,
    /// The configuration's part of the registry.
    pub scope: Scope,
    pub metrics: Metrics,
    pub cache: RefCell<LookupCache>,
    /// This VM's needs folded between demand writes (`demand.coalesce_ms`).
    pub needs: RefCell<Ledger>,
    /// The VM's replay budget, shared by every configuration in the VM.
    pub budget: Rc<Budget>,
}
