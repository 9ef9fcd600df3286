//! A store that lets the test decide whose next store operation runs (docs/design.md#registry-invariants).
//!
//! Each writer runs on its own thread against a `Handle`; every `get`/`set` parks the writer until
//! the controller grants it the store. The controller sees which writers are parked and what they
//! are about to do, and picks one (and, optionally, a fault for that operation: a CAS mismatch on
//! a write, a host error on any call). A run is therefore one deterministic schedule: a list of
//! choices. `explore` walks the tree of choices depth first (every interleaving, every single
//! fault at every step) or, where the tree is too big, draws a seeded sample of schedules.

use mixmode::core::store::{MemoryStore, SharedStore, StoreError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Mismatch,
    HostError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Set,
}

struct Inner {
    store: MemoryStore,
    /// What each parked writer is about to do (None: running or finished).
    parked: Vec<Option<Op>>,
    done: Vec<bool>,
    running: usize,
    turn: Option<(usize, Option<Fault>)>,
}

struct Shared {
    m: Mutex<Inner>,
    cv: Condvar,
}

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One writer's view of the scheduled store.
pub struct Handle {
    id: usize,
    shared: Arc<Shared>,
    ops: usize,
}

impl Handle {
    /// Store operations this writer has made so far.
    pub fn ops(&self) -> usize {
        self.ops
    }

    fn step<R>(&mut self, op: Op, f: impl FnOnce(&mut MemoryStore, Option<Fault>) -> R) -> R {
        self.ops += 1;
        let mut g = lock(&self.shared);
        g.parked[self.id] = Some(op);
        g.running -= 1;
        self.shared.cv.notify_all();
        loop {
            if let Some((who, fault)) = g.turn {
                if who == self.id {
                    g.turn = None;
                    g.parked[self.id] = None;
                    g.running += 1;
                    return f(&mut g.store, fault);
                }
            }
            g = self.shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl SharedStore for Handle {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.step(Op::Get, |s, fault| match fault {
            Some(_) => Err(StoreError::Other),
            None => s.get(key),
        })
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.step(Op::Set, |s, fault| match fault {
            Some(Fault::Mismatch) => Err(StoreError::CasMismatch),
            Some(Fault::HostError) => Err(StoreError::Other),
            None => s.set(key, value, cas),
        })
    }
}

/// Makes the choices of one run.
pub trait Chooser {
    /// One of the alternatives: (writer, fault) pairs, the ones without a fault first.
    fn choose(&mut self, alts: &[(usize, Option<Fault>)]) -> usize;
}

/// Depth-first enumeration of the choice tree.
#[derive(Default)]
pub struct Dfs {
    prefix: Vec<usize>,
    taken: Vec<(usize, usize)>,
}

impl Chooser for Dfs {
    fn choose(&mut self, alts: &[(usize, Option<Fault>)]) -> usize {
        let n = alts.len();
        let k = self.taken.len();
        let c = self.prefix.get(k).copied().unwrap_or(0).min(n - 1);
        self.taken.push((c, n));
        c
    }
}

impl Dfs {
    /// Moves to the next schedule; false when the tree is exhausted.
    pub fn advance(&mut self) -> bool {
        while let Some((c, n)) = self.taken.pop() {
            if c + 1 < n {
                self.prefix = self.taken.iter().map(|(c, _)| *c).collect();
                self.prefix.push(c + 1);
                self.taken.clear();
                return true;
            }
        }
        false
    }
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeded uniformly random choices at every step.
pub struct Sample(pub u64);

impl Chooser for Sample {
    fn choose(&mut self, alts: &[(usize, Option<Fault>)]) -> usize {
        (next(&mut self.0) % alts.len() as u64) as usize
    }
}

/// Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): writers run by random
/// priority, the running one drops to the lowest at a few random steps, and one random step
/// gets a fault. Finds ordering bugs of small depth (one writer entirely before another's
/// middle) that uniform sampling almost never produces.
pub struct Pct {
    rng: u64,
    prio: Vec<u64>,
    changes: Vec<usize>,
    fault_step: usize,
    step: usize,
}

impl Pct {
    pub fn new(seed: u64, writers: usize, steps: usize, depth: usize) -> Pct {
        let mut rng = seed ^ 0x5eed;
        let prio = (0..writers).map(|_| next(&mut rng) | 1 << 63).collect();
        let changes = (0..depth)
            .map(|_| (next(&mut rng) % steps.max(1) as u64) as usize)
            .collect();
        let fault_step = (next(&mut rng) % (steps.max(1) as u64 * 2)) as usize;
        Pct {
            rng,
            prio,
            changes,
            fault_step,
            step: 0,
        }
    }
}

impl Chooser for Pct {
    fn choose(&mut self, alts: &[(usize, Option<Fault>)]) -> usize {
        self.step += 1;
        let best = |prio: &[u64]| {
            alts.iter()
                .filter(|(_, f)| f.is_none())
                .map(|(w, _)| *w)
                .max_by_key(|w| prio[*w])
                .unwrap_or(0)
        };
        if self.changes.contains(&self.step) {
            let w = best(&self.prio);
            self.prio[w] = next(&mut self.rng) >> 8;
        }
        let w = best(&self.prio);
        if self.step == self.fault_step {
            let faults: Vec<usize> = (0..alts.len())
                .filter(|i| alts[*i].0 == w && alts[*i].1.is_some())
                .collect();
            if !faults.is_empty() {
                return faults[(next(&mut self.rng) % faults.len() as u64) as usize];
            }
        }
        alts.iter()
            .position(|(x, f)| *x == w && f.is_none())
            .unwrap_or(0)
    }
}

pub type Writer<'a, R> = &'a (dyn Fn(&mut Handle) -> R + Sync);

/// One step of a schedule: which writer ran, with which fault.
pub type Step = (usize, Option<Fault>);

/// The check of a schedule's end state and the writers' results.
pub type Check<'a, R> = &'a dyn Fn(&mut MemoryStore, &[R]) -> Result<(), String>;

/// Runs the writers on `store` under `chooser`; at most `faults` operations get a fault. Returns
/// the store afterwards, each writer's result, and the schedule (writer, fault) step by step.
pub fn run<R: Send>(
    store: MemoryStore,
    writers: &[Writer<'_, R>],
    chooser: &mut dyn Chooser,
    faults: usize,
) -> (MemoryStore, Vec<R>, Vec<Step>) {
    let n = writers.len();
    let shared = Arc::new(Shared {
        m: Mutex::new(Inner {
            store,
            parked: vec![None; n],
            done: vec![false; n],
            running: n,
            turn: None,
        }),
        cv: Condvar::new(),
    });
    let mut trace = Vec::new();
    let results = std::thread::scope(|scope| {
        let threads: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(id, w)| {
                let shared = shared.clone();
                scope.spawn(move || {
                    let mut h = Handle {
                        id,
                        shared: shared.clone(),
                        ops: 0,
                    };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w(&mut h)));
                    let mut g = lock(&shared);
                    g.done[id] = true;
                    g.running -= 1;
                    shared.cv.notify_all();
                    drop(g);
                    r
                })
            })
            .collect();
        let mut left = faults;
        let mut g = lock(&shared);
        loop {
            while g.running > 0 || g.turn.is_some() {
                g = shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            let ready: Vec<(usize, Op)> = g
                .parked
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|op| (i, op)))
                .collect();
            if ready.is_empty() {
                break;
            }
            // Alternatives: each ready writer without a fault, then (while faults are left) each
            // with each fault its operation can get.
            let mut alts: Vec<(usize, Option<Fault>)> =
                ready.iter().map(|(i, _)| (*i, None)).collect();
            if left > 0 {
                for (i, op) in &ready {
                    if *op == Op::Set {
                        alts.push((*i, Some(Fault::Mismatch)));
                    }
                    alts.push((*i, Some(Fault::HostError)));
                }
            }
            let pick = alts[chooser.choose(&alts)];
            if pick.1.is_some() {
                left -= 1;
            }
            trace.push(pick);
            g.turn = Some(pick);
            shared.cv.notify_all();
        }
        drop(g);
        threads
            .into_iter()
            .map(|t| match t.join() {
                Ok(Ok(r)) => r,
                Ok(Err(p)) | Err(p) => std::panic::resume_unwind(p),
            })
            .collect::<Vec<R>>()
    });
    let store = match Arc::try_unwrap(shared) {
        Ok(s) => s.m.into_inner().unwrap_or_else(|p| p.into_inner()).store,
        Err(_) => panic!("a writer outlived its run"),
    };
    (store, results, trace)
}

/// What exploring one scenario found.
#[derive(Debug, Default)]
pub struct Explored {
    pub schedules: usize,
    pub violations: usize,
    pub exhaustive: bool,
    pub first: Option<String>,
}

/// Every schedule (up to `limit`; past it, `sample` seeded random schedules instead), each
/// checked by `check` on the final store and the writers' results.
pub fn explore<R: Send + std::fmt::Debug>(
    setup: &dyn Fn() -> MemoryStore,
    writers: &[Writer<'_, R>],
    faults: usize,
    limit: usize,
    sample: usize,
    check: Check<'_, R>,
) -> Explored {
    let mut out = Explored::default();
    let record = |out: &mut Explored, mut store: MemoryStore, results: Vec<R>, trace: Vec<_>| {
        out.schedules += 1;
        if let Err(why) = check(&mut store, &results) {
            out.violations += 1;
            if out.first.is_none() {
                out.first = Some(format!(
                    "{why}\n  results {results:?}\n  schedule {trace:?}"
                ));
            }
        }
    };
    let mut dfs = Dfs::default();
    loop {
        let (store, results, trace) = run(setup(), writers, &mut dfs, faults);
        record(&mut out, store, results, trace);
        if !dfs.advance() {
            out.exhaustive = true;
            return out;
        }
        if out.schedules >= limit {
            break;
        }
    }
    // Too many: a seeded sample instead (the DFS runs so far are not counted twice), half
    // uniformly random, half PCT with up to 3 priority changes over the length DFS saw.
    let steps = dfs.prefix.len().max(1);
    out.schedules = 0;
    out.violations = 0;
    out.first = None;
    for seed in 0..sample as u64 {
        let (store, results, trace) = if seed % 2 == 0 {
            run(setup(), writers, &mut Sample(seed), faults)
        } else {
            let mut pct = Pct::new(seed, writers.len(), steps, (seed % 4) as usize);
            run(setup(), writers, &mut pct, faults)
        };
        record(&mut out, store, results, trace);
    }
    out
}
