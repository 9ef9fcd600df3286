//! What a call's answer does: applied to the registry (`poll::apply`, `etcd::apply`), and the
//! outage bookkeeping every outcome goes through: one WARN when a job starts failing, one INFO
//! when it recovers, the counter on every failure.

use super::{log, Call, JobAction, Jobs, Level};
use crate::core::counter::Counter;
use crate::core::lease::{self, Outage};
use crate::core::registry::{self, SharedStore};
use crate::core::{etcd, poll};

impl Jobs {
    pub(super) fn target_answer<S: SharedStore + ?Sized>(
        &self,
        store: &mut S,
        target: &str,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Vec<JobAction> {
        let what = Call::Target(target.to_string());
        let mut out = Vec::new();
        let applied = match poll::parse_answer(status, body) {
            Some(answer) => poll::apply(store, &self.config, target, &answer, now_ms)
                .map_err(|e| format!("registry: {e:?}")),
            None => Err(match status {
                None => "no answer".to_string(),
                Some(200) => "answer is not {\"app\", \"version\"}".to_string(),
                Some(s) => format!("status {s}"),
            }),
        };
        match applied {
            Ok(u) => {
                if let Some(n) = u.records {
                    out.push(JobAction::SetRecords(n));
                }
                self.succeeded(store, &what, &mut out);
            }
            Err(why) => self.failed(store, &what, &why, &mut out),
        }
        out
    }

    pub(super) fn etcd_answer<S: SharedStore + ?Sized>(
        &self,
        store: &mut S,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Vec<JobAction> {
        let (cfg, what) = (&self.config, &Call::Etcd);
        let mut out = Vec::new();
        let Some(e) = &cfg.registry.etcd else {
            return out;
        };
        let a = match etcd::apply(store, cfg, e, status, body, now_ms) {
            Ok(a) => a,
            Err(err) => {
                self.failed(store, what, &err.to_string(), &mut out);
                return out;
            }
        };
        for s in &a.skipped {
            out.push(log(Level::Warn, format!("mixmode: etcd key skipped: {s}")));
        }
        if a.refused > 0 {
            out.push(log(
                Level::Warn,
                format!(
                    "mixmode: {} etcd keys refused: registry.max_records ({}) reached",
                    a.refused, cfg.registry.max_records
                ),
            ));
        }
        if a.full {
            out.push(log(
                Level::Debug,
                format!(
                    "mixmode: etcd snapshot {}: {} records, {} added, {} removed",
                    a.revision, a.records, a.added, a.removed
                ),
            ));
            if let Ok(n) = registry::count(store, &self.scope) {
                out.push(JobAction::SetRecords(n));
            }
        }
        if a.dropped {
            out.push(log(
                Level::Debug,
                format!(
                    "mixmode: etcd answer of revision {} dropped (older than applied, or another VM applying)",
                    a.revision
                ),
            ));
        }
        self.succeeded(store, what, &mut out);
        out
    }

    fn succeeded<S: SharedStore + ?Sized>(
        &self,
        store: &mut S,
        what: &Call,
        out: &mut Vec<JobAction>,
    ) {
        let job = what.job_name();
        let key = self.scope.outage_key(&job);
        if let Ok(Outage::Ended) = lease::note_outcome(store, &key, true) {
            out.push(log(
                Level::Info,
                format!("mixmode: registry sync {job} recovered"),
            ));
        }
    }

    pub(super) fn failed<S: SharedStore + ?Sized>(
        &self,
        store: &mut S,
        what: &Call,
        why: &str,
        out: &mut Vec<JobAction>,
    ) {
        out.push(JobAction::Count(Counter::RegistrySyncFailed));
        let job = what.job_name();
        let key = self.scope.outage_key(&job);
        // One log line per outage, not per poll (the counter counts every one).
        if let Ok(Outage::Started) = lease::note_outcome(store, &key, false) {
            let keeps = match what {
                Call::Etcd => format!(
                    "the mirror keeps its last snapshot; records go stale after {} ms",
                    self.config.registry.stale_after_ms
                ),
                Call::Target(_) => "the target is not refreshed and goes stale".to_string(),
            };
            out.push(log(
                Level::Warn,
                format!(
                    "mixmode: registry sync {job} failing: {why}; {keeps} (counted in mixmode.registry_sync_failed, logged once per outage)"
                ),
            ));
        }
    }
}
