//! The registry's periodic jobs (docs/architecture.md#the-jobs), sans IO like the request path:
//! pruning stale records, pull polls (`core::poll`), the etcd mirror (`core::etcd`). Every VM
//! ticks; each job has a lease per scope (`core::lease`), so every configuration prunes and
//! mirrors its own records with its own limits, once per interval, whatever the number of VMs
//! and listeners.
//!
//! [`Jobs`] is driven by four events and answers with [`JobAction`]s; the glue
//! (`filter/poller.rs`) passes the time in and carries the actions out, deciding nothing:
//!
//! - [`Jobs::on_tick`]: what is due now (logs, the records gauge, the calls to send);
//! - [`Jobs::on_dispatched`] / [`Jobs::on_dispatch_refused`]: what became of a `Dispatch`;
//! - [`Jobs::on_call_answer`]: a call's answer (or its absence), applied to the registry.

mod answers;

use crate::core::config::Config;
use crate::core::counter::Counter;
use crate::core::lease;
use crate::core::registry::{self, PruneCursor, Pruned, RegistryError, Scope, SharedStore};
use crate::core::{etcd, poll};
use std::rc::Rc;

pub const PRUNE_JOB: &str = "prune";

/// What a call is for: one pull target, or the etcd mirror's range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Target(String),
    Etcd,
}

impl Call {
    /// The job's name in logs and in its outage key.
    pub fn job_name(&self) -> String {
        match self {
            Call::Target(t) => format!("poll/{t}"),
            Call::Etcd => etcd::JOB.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    /// Send this call; then tell [`Jobs::on_dispatched`] its token, or
    /// [`Jobs::on_dispatch_refused`] why the host refused it.
    Dispatch {
        cluster: String,
        headers: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
        timeout_ms: u32,
        what: Call,
    },
    Log {
        level: Level,
        text: String,
    },
    Count(Counter),
    /// Set the `registry_records` gauge.
    SetRecords(u64),
}

fn log(level: Level, text: String) -> JobAction {
    JobAction::Log { level, text }
}

/// One VM's jobs for one configuration: its prune cursor and the calls it awaits.
pub struct Jobs {
    vm: u32,
    /// Shared with the HTTP contexts (no copy: the .wasm carries no `Config::clone`).
    config: Rc<Config>,
    scope: Scope,
    cursor: PruneCursor,
    /// The calls in flight by token: a few (one per poll target and etcd), so a list; a
    /// HashMap cost the .wasm a copy of hashbrown (docs/module-size.md).
    pending: Vec<(u32, Call)>,
}

impl Jobs {
    /// `vm`: this VM's id (`lease::next_vm_id`), the holder name in the leases.
    pub fn new(vm: u32, config: Rc<Config>) -> Self {
        Jobs {
            vm,
            scope: Scope::of(&config),
            config,
            cursor: PruneCursor::default(),
            pending: Vec::new(),
        }
    }

    /// The tick period the glue asks the host for: it follows the shortest job interval.
    pub fn tick_period_ms(&self) -> u64 {
        lease::tick_period_ms(&intervals(&self.scope, &self.config))
    }

    /// Whether `token` is a call of these jobs awaiting its answer.
    pub fn owns(&self, token: u32) -> bool {
        self.pending.iter().any(|(t, _)| *t == token)
    }

    /// The jobs due at `now_ms` that this VM holds the lease of.
    pub fn on_tick<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
        now_ms: u64,
    ) -> Vec<JobAction> {
        let mut out = Vec::new();
        match prune_tick(store, &self.scope, self.vm, &mut self.cursor, now_ms) {
            Ok(Some(p)) => {
                if p.removed > 0 || p.recounted {
                    out.push(log(
                        Level::Debug,
                        format!(
                            "mixmode: pruned {} stale records{}",
                            p.removed,
                            if p.recounted { ", count corrected" } else { "" }
                        ),
                    ));
                }
                if let Ok(n) = registry::count(store, &self.scope) {
                    out.push(JobAction::SetRecords(n));
                }
            }
            Ok(None) => {}
            Err(e) => out.push(log(Level::Warn, format!("mixmode: prune failed: {e:?}"))),
        }
        let (vm, cfg, scope) = (self.vm, &self.config, &self.scope);
        let mut due = |key: &str, interval: u64| {
            lease::claim(store, key, vm, now_ms, interval).unwrap_or(false)
        };
        if let (Some(p), Some(key)) = (&cfg.registry.poll, poll_lease_key(scope, cfg)) {
            if due(&key, p.interval_ms) {
                out.extend(p.targets.iter().map(|target| JobAction::Dispatch {
                    cluster: p.cluster.clone(),
                    headers: poll::request_headers(p, target),
                    body: None,
                    timeout_ms: p.timeout_ms,
                    what: Call::Target(target.clone()),
                }));
            }
        }
        if let Some(e) = &cfg.registry.etcd {
            if due(&etcd_lease_key(scope), e.poll_interval_ms) {
                out.push(JobAction::Dispatch {
                    cluster: e.cluster.clone(),
                    headers: etcd::request_headers(e),
                    body: Some(etcd::request_body(cfg, e).into_bytes()),
                    timeout_ms: e.timeout_ms,
                    what: Call::Etcd,
                });
            }
        }
        out
    }

    /// The host took the call of a `Dispatch`: its answer will come with `token`.
    pub fn on_dispatched(&mut self, token: u32, what: Call) {
        match self.pending.iter_mut().find(|(t, _)| *t == token) {
            Some(p) => p.1 = what,
            None => self.pending.push((token, what)),
        }
    }

    /// The host refused the call of a `Dispatch` (`why`: what it said): no answer will come, a
    /// failed poll now.
    pub fn on_dispatch_refused<S: SharedStore + ?Sized>(
        &mut self,
        what: Call,
        why: &str,
        store: &mut S,
    ) -> Vec<JobAction> {
        let mut out = Vec::new();
        self.failed(store, &what, why, &mut out);
        out
    }

    /// The answer to call `token`: `status` None when there was none (reset, timeout), `body`
    /// empty then. None: not a call of these jobs (or one already answered), nothing done.
    pub fn on_call_answer<S: SharedStore + ?Sized>(
        &mut self,
        store: &mut S,
        token: u32,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Option<Vec<JobAction>> {
        let at = self.pending.iter().position(|(t, _)| *t == token)?;
        Some(match self.pending.swap_remove(at).1 {
            Call::Target(target) => self.target_answer(store, &target, status, body, now_ms),
            Call::Etcd => self.etcd_answer(store, status, body, now_ms),
        })
    }
}

/// The prune job at `now_ms`: Some(what it did) when this VM held the run.
pub fn prune_tick<S: SharedStore + ?Sized>(
    store: &mut S,
    scope: &Scope,
    vm: u32,
    cursor: &mut PruneCursor,
    now_ms: u64,
) -> Result<Option<Pruned>, RegistryError> {
    let key = scope.lease_key(PRUNE_JOB);
    if !lease::claim(store, &key, vm, now_ms, scope.prune_interval_ms())? {
        return Ok(None);
    }
    registry::prune(store, scope, now_ms, cursor).map(Some)
}

/// The lease key of the pull poll of `cfg`: named by its targets too, so two listeners of one
/// scope polling different targets both poll.
pub fn poll_lease_key(scope: &Scope, cfg: &Config) -> Option<String> {
    let p = cfg.registry.poll.as_ref()?;
    let mut parts: Vec<&str> = vec![&p.cluster, &p.path];
    parts.extend(p.targets.iter().map(String::as_str));
    Some(scope.lease_key(&lease::job_name(poll::JOB, &parts)))
}

pub fn etcd_lease_key(scope: &Scope) -> String {
    scope.lease_key(etcd::JOB)
}

/// Every job interval of `cfg` (the tick period follows the shortest).
pub fn intervals(scope: &Scope, cfg: &Config) -> Vec<u64> {
    let mut out = vec![scope.prune_interval_ms()];
    if let Some(p) = &cfg.registry.poll {
        out.push(p.interval_ms);
    }
    if let Some(e) = &cfg.registry.etcd {
        out.push(e.poll_interval_ms);
    }
    out
}

#[cfg(test)]
mod tests;
