//! The registry's periodic jobs, run from `on_tick` of every VM (main thread and workers) and
//! deduplicated by `core::lease`: pruning stale records, pull polls, the etcd mirror. Each poll is
//! a `dispatch_http_call` from the root context; its answer comes back to the same VM.

use crate::core::config::Config;
use crate::core::counter::Counter;
use crate::core::jobs;
use crate::core::lease::{self, Outage};
use crate::core::registry::{self, PruneCursor, Scope};
use crate::core::{etcd, poll};
use crate::filter::abi::{self, buffer, level, map};
use crate::filter::shared::Shared;
use crate::filter::store::HostStore;
use std::collections::HashMap;

enum Pending {
    Target(String),
    Etcd,
}

pub struct Poller {
    vm_id: u32,
    cursor: PruneCursor,
    pending: HashMap<u32, Pending>,
}

pub fn tick_period_ms(scope: &Scope, cfg: &Config) -> u64 {
    lease::tick_period_ms(&jobs::intervals(scope, cfg))
}

impl Poller {
    pub fn new(vm_id: u32) -> Self {
        Poller {
            vm_id,
            cursor: PruneCursor::default(),
            pending: HashMap::new(),
        }
    }

    pub fn on_tick(&mut self, shared: &Shared) {
        let (cfg, scope, metrics) = (&shared.config, &shared.scope, &shared.metrics);
        let now = abi::now_ms();
        let mut store = HostStore;
        let me = self.vm_id;
        let due = |store: &mut HostStore, key: &str, interval: u64| {
            lease::claim(store, key, me, now, interval).unwrap_or(false)
        };
        match jobs::prune_tick(&mut store, scope, me, &mut self.cursor, now) {
            Ok(Some(p)) => {
                if p.removed > 0 || p.recounted {
                    abi::log(
                        level::DEBUG,
                        &format!(
                            "mixmode: pruned {} stale records{}",
                            p.removed,
                            if p.recounted { ", count corrected" } else { "" }
                        ),
                    );
                }
                if let Ok(n) = registry::count(&mut store, scope) {
                    metrics.set_records(n);
                }
            }
            Ok(None) => {}
            Err(e) => abi::log(level::WARN, &format!("mixmode: prune failed: {e:?}")),
        }
        if let (Some(p), Some(key)) = (&cfg.registry.poll, jobs::poll_lease_key(scope, cfg)) {
            if due(&mut store, &key, p.interval_ms) {
                for target in &p.targets {
                    let headers = poll::request_headers(p, target);
                    self.dispatch(
                        &p.cluster,
                        &headers,
                        None,
                        p.timeout_ms,
                        Pending::Target(target.clone()),
                        shared,
                    );
                }
            }
        }
        if let Some(e) = &cfg.registry.etcd {
            if due(&mut store, &jobs::etcd_lease_key(scope), e.poll_interval_ms) {
                let headers = etcd::request_headers(e);
                let body = etcd::request_body(cfg, e);
                self.dispatch(
                    &e.cluster,
                    &headers,
                    Some(body.as_bytes()),
                    e.timeout_ms,
                    Pending::Etcd,
                    shared,
                );
            }
        }
    }

    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&'static str, String)],
        body: Option<&[u8]>,
        timeout_ms: u32,
        what: Pending,
        shared: &Shared,
    ) {
        match abi::dispatch_http_call(cluster, headers, body, timeout_ms) {
            Ok(token) => {
                self.pending.insert(token, what);
            }
            // Unknown cluster, bad headers: no callback will come; a failed poll now.
            Err(status) => {
                let why = format!("dispatch via cluster {cluster:?} refused: {status}");
                self.failed(&what, &why, shared);
            }
        }
    }

    /// Handles a call's answer; false if the token was not one of ours.
    pub fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        shared: &Shared,
    ) -> bool {
        let (cfg, scope, metrics) = (&shared.config, &shared.scope, &shared.metrics);
        let Some(what) = self.pending.remove(&token) else {
            return false;
        };
        // A reset call has no headers (docs/envoy-facts.md#response-phase-and-calls).
        let status = if num_headers == 0 {
            None
        } else {
            abi::get_header(map::CALL_RESPONSE_HEADERS, ":status")
                .and_then(|s| crate::core::signal::parse_status(&s))
        };
        let body = if status.is_some() && body_size > 0 {
            abi::get_buffer(buffer::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = abi::now_ms();
        let mut store = HostStore;
        match &what {
            Pending::Target(target) => match poll::parse_answer(status, &body) {
                Some(answer) => match poll::apply(&mut store, cfg, target, &answer, now) {
                    Ok(u) => {
                        if let Some(n) = u.records {
                            metrics.set_records(n);
                        }
                        self.succeeded(&what, scope);
                    }
                    Err(e) => self.failed(&what, &format!("registry: {e:?}"), shared),
                },
                None => {
                    let why = match status {
                        None => "no answer".to_string(),
                        Some(200) => "answer is not {\"app\", \"version\"}".to_string(),
                        Some(s) => format!("status {s}"),
                    };
                    self.failed(&what, &why, shared);
                }
            },
            Pending::Etcd => {
                let Some(e) = &cfg.registry.etcd else {
                    return true;
                };
                match etcd::apply(&mut store, cfg, e, status, &body, now) {
                    Ok(a) => {
                        for s in &a.skipped {
                            abi::log(level::WARN, &format!("mixmode: etcd key skipped: {s}"));
                        }
                        if a.refused > 0 {
                            abi::log(
                                level::WARN,
                                &format!(
                                    "mixmode: {} etcd keys refused: registry.max_records ({}) reached",
                                    a.refused, cfg.registry.max_records
                                ),
                            );
                        }
                        if a.full {
                            abi::log(
                                level::DEBUG,
                                &format!(
                                    "mixmode: etcd snapshot {}: {} records, {} added, {} removed",
                                    a.revision, a.records, a.added, a.removed
                                ),
                            );
                            if let Ok(n) = registry::count(&mut store, scope) {
                                metrics.set_records(n);
                            }
                        }
                        if a.dropped {
                            abi::log(
                                level::DEBUG,
                                &format!(
                                    "mixmode: etcd answer of revision {} dropped (older than applied, or another VM applying)",
                                    a.revision
                                ),
                            );
                        }
                        self.succeeded(&what, scope);
                    }
                    Err(err) => self.failed(&what, &err.to_string(), shared),
                }
            }
        }
        true
    }

    fn job_name(what: &Pending) -> String {
        match what {
            Pending::Target(t) => format!("poll/{t}"),
            Pending::Etcd => etcd::JOB.to_string(),
        }
    }

    fn succeeded(&self, what: &Pending, scope: &Scope) {
        let key = scope.outage_key(&Self::job_name(what));
        if let Ok(Outage::Ended) = lease::note_outcome(&mut HostStore, &key, true) {
            abi::log(
                level::INFO,
                &format!("mixmode: registry sync {} recovered", Self::job_name(what)),
            );
        }
    }

    fn failed(&self, what: &Pending, why: &str, shared: &Shared) {
        let cfg = &shared.config;
        shared.metrics.count(Counter::RegistrySyncFailed);
        let job = Self::job_name(what);
        let key = shared.scope.outage_key(&job);
        // One log line per outage, not per poll (the counter counts every one).
        if let Ok(Outage::Started) = lease::note_outcome(&mut HostStore, &key, false) {
            let keeps = match what {
                Pending::Etcd => format!(
                    "the mirror keeps its last snapshot; records go stale after {} ms",
                    cfg.registry.stale_after_ms
                ),
                Pending::Target(_) => "the target is not refreshed and goes stale".to_string(),
            };
            abi::log(
                level::WARN,
                &format!(
                    "mixmode: registry sync {job} failing: {why}; {keeps} (counted in mixmode.registry_sync_failed, logged once per outage)"
                ),
            );
        }
    }
}
