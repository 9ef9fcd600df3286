//! State VM instances share: shared data with CAS (one store per `vm_id`, as Envoy keys it),
//! shared queues (keyed by `vm_id`), metrics and the log (one per harness). Owned by one
//! harness instance: nothing is global, so tests in one process cannot see each other's state.

use crate::histogram::Histogram;
use crate::types::{LogLevel, MetricType, Status};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Locks a mutex even if a thread panicked while holding it: the data stays usable for
/// reporting, and a host must not fail because one test thread did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The key-value store. Envoy's rules: one CAS counter for the whole store, a write with CAS 0
/// is unconditional, and a non-zero CAS for a key that does not exist yet succeeds.
#[derive(Default)]
pub struct SharedData {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    last_cas: u32,
}

impl SharedData {
    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    pub fn set(&mut self, key: &[u8], value: &[u8], cas: u32) -> Status {
        if cas != 0 {
            if let Some((_, current)) = self.entries.get(key) {
                if *current != cas {
                    return Status::CasMismatch;
                }
            }
        }
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            // 0 means "no CAS" to the guest; never hand it out.
            self.last_cas = 1;
        }
        self.entries
            .insert(key.to_vec(), (value.to_vec(), self.last_cas));
        Status::Ok
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.entries.keys().cloned().collect()
    }
}

pub(crate) struct Queue {
    pub items: VecDeque<Vec<u8>>,
    /// The VM instance (worker index) and root context that registered the queue last: it
    /// alone gets `proxy_on_queue_ready` (proxy-wasm-cpp-host overwrites the owner on every
    /// registration, so Envoy's canary VM never keeps a queue).
    pub owner: (usize, u32),
}

#[derive(Default)]
pub(crate) struct Queues {
    pub by_name: HashMap<(String, Vec<u8>), u32>,
    pub queues: HashMap<u32, Queue>,
}

impl Queues {
    pub fn register(&mut self, vm_id: &str, name: &[u8], owner: (usize, u32)) -> u32 {
        let key = (vm_id.to_string(), name.to_vec());
        if let Some(id) = self.by_name.get(&key) {
            if let Some(q) = self.queues.get_mut(id) {
                q.owner = owner;
            }
            return *id;
        }
        let id = self.queues.len() as u32 + 1;
        self.by_name.insert(key, id);
        self.queues.insert(
            id,
            Queue {
                items: VecDeque::new(),
                owner,
            },
        );
        id
    }

    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        self.by_name
            .get(&(vm_id.to_string(), name.to_vec()))
            .copied()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Metric {
    pub name: String,
    pub kind: MetricType,
    /// Counters and gauges; a gauge may go below zero through increments.
    pub value: i64,
    pub histogram: Histogram,
}

/// Metrics by id; the same name always gets the same id in every VM instance, so all workers
/// add to one value, as Envoy's stats do.
#[derive(Default)]
pub(crate) struct Metrics {
    pub by_name: HashMap<String, u32>,
    pub metrics: Vec<Metric>,
}

impl Metrics {
    pub fn define(&mut self, kind: MetricType, name: &str) -> u32 {
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            histogram: Histogram::default(),
        });
        let id = self.metrics.len() as u32;
        self.by_name.insert(name.to_string(), id);
        id
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Metric> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.metrics.get_mut(i))
    }

    pub fn increment(&mut self, id: u32, delta: i64) -> Status {
        let Some(m) = self.get_mut(id) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricType::Counter if delta < 0 => Status::BadArgument,
            MetricType::Counter | MetricType::Gauge => {
                m.value = m.value.wrapping_add(delta);
                Status::Ok
            }
            MetricType::Histogram => Status::BadArgument,
        }
    }

    /// Envoy: recording on a counter adds, on a gauge sets, on a histogram records a sample.
    pub fn record(&mut self, id: u32, value: u64) -> Status {
        let Some(m) = self.get_mut(id) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricType::Counter => m.value = m.value.wrapping_add(value as i64),
            MetricType::Gauge => m.value = value as i64,
            MetricType::Histogram => m.histogram.record(value),
        }
        Status::Ok
    }

    pub fn get(&self, id: u32) -> Result<u64, Status> {
        let m = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.metrics.get(i))
            .ok_or(Status::NotFound)?;
        match m.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value as u64),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.metrics
            .iter()
            .filter(|m| m.kind != MetricType::Histogram)
            .map(|m| (m.name.clone(), m.value as u64))
            .collect()
    }

    pub fn histograms(&self) -> BTreeMap<String, Histogram> {
        self.metrics
            .iter()
            .filter(|m| m.kind == MetricType::Histogram)
            .map(|m| (m.name.clone(), m.histogram.clone()))
            .collect()
    }
}

/// One line the plugin logged (through `proxy_log` or stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    /// The plugin's name (its `name` option): which filter or service of the harness wrote it.
    pub plugin: String,
    /// Which VM instance wrote it: "canary", "main" or "worker N".
    pub instance: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules_are_envoys() {
        let mut d = SharedData::default();
        // A non-zero CAS for an absent key succeeds.
        assert_eq!(d.set(b"k", b"v1", 77), Status::Ok);
        let (_, cas1) = d.get(b"k").unwrap();
        assert_ne!(cas1, 0);
        // A stale CAS fails, the current one wins, CAS 0 always writes.
        assert_eq!(d.set(b"k", b"v2", cas1 + 100), Status::CasMismatch);
        assert_eq!(d.set(b"k", b"v2", cas1), Status::Ok);
        assert_eq!(d.set(b"k", b"v3", cas1), Status::CasMismatch);
        assert_eq!(d.set(b"k", b"v4", 0), Status::Ok);
        assert_eq!(d.get(b"k").unwrap().0, b"v4");
        // One counter for every key.
        assert_eq!(d.set(b"other", b"x", 0), Status::Ok);
        let (_, c_other) = d.get(b"other").unwrap();
        let (_, c_k) = d.get(b"k").unwrap();
        assert!(c_other > c_k);
    }

    #[test]
    fn metrics_shared_by_name() {
        let mut m = Metrics::default();
        let a = m.define(MetricType::Counter, "x.requests");
        let b = m.define(MetricType::Counter, "x.requests");
        assert_eq!(a, b);
        assert_eq!(m.increment(a, 2), Status::Ok);
        assert_eq!(m.increment(a, -1), Status::BadArgument);
        assert_eq!(m.record(a, 3), Status::Ok);
        assert_eq!(m.get(a).unwrap(), 5);
        let g = m.define(MetricType::Gauge, "x.records");
        assert_eq!(m.record(g, 9), Status::Ok);
        assert_eq!(m.increment(g, -4), Status::Ok);
        assert_eq!(m.get(g).unwrap(), 5);
        let h = m.define(MetricType::Histogram, "x.latency");
        assert_eq!(m.record(h, 9), Status::Ok);
        assert_eq!(m.get(h), Err(Status::BadArgument));
        assert_eq!(m.get(99), Err(Status::NotFound));
        assert_eq!(m.increment(99, 1), Status::NotFound);
        assert_eq!(m.snapshot().get("x.records"), Some(&5));
    }

    #[test]
    fn queues_register_once_last_owner_wins() {
        let mut q = Queues::default();
        let a = q.register("vm", b"q", (0, 1));
        let b = q.register("vm", b"q", (1, 1));
        assert_eq!(a, b);
        assert_eq!(q.queues.get(&a).unwrap().owner, (1, 1));
        assert_eq!(q.resolve("vm", b"q"), Some(a));
        assert_eq!(q.resolve("other", b"q"), None);
    }
}
