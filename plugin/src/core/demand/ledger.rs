//! One VM's coalescing of needs (docs/design.md#draining-by-demand, `demand.coalesce_ms`): a
//! need is written to its shared bucket at most once per version per `coalesce_ms` window, and
//! the write covers the window ahead of it.
//!
//! Why: with affinity most requests of a rolling deploy are needs, and each write is a shared-data
//! read and CAS write (the largest part of a hinted request's cost, bench/results). The listing's
//! readers only ask "was this version needed in the last quiet period?", which a write per window
//! answers as well, provided no need is ever later than the time the listing shows.
//!
//! The rule that keeps that true: a write at `now` stamps `now + coalesce_ms` (the end of its
//! window), and the needs of that window on this VM are folded, not written; the first need after
//! the window writes again, carrying the folded count. So the listed `last_needed_ms` is never
//! earlier than a need of this VM and at most `coalesce_ms` later than the last one (a drain waits
//! up to that much longer, never less), and `needed_60s` trails by the needs folded since this
//! VM's last write, until the VM's next tick writes the folded needs of windows that have ended
//! (`due`): a version this VM stops seeing still gets its count. A write that fails gives its
//! count back and opens no window, so the next need or tick writes. Sans-IO: the time is a
//! parameter, the caller writes.

/// Versions a VM coalesces; a need of another version past these is written at once.
pub const MAX_VERSIONS: usize = 32;

/// What the caller writes now: `n` needs, counted now, with `last_needed_ms` raised to
/// `at_ms` (`demand::record_until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub n: u32,
    pub at_ms: u64,
}

#[derive(Debug)]
struct Open {
    version: String,
    /// The window of the last write ends here (exclusive).
    until_ms: u64,
    /// Needs folded into the window, written with the next write.
    folded: u32,
    /// The latest need of the version on this VM: what a tick's write stamps when the window's
    /// own write failed (`until_ms` 0).
    last_ms: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    open: Vec<Open>,
}

impl Ledger {
    /// A need of `version` at `now_ms`: what to write, or nothing (folded into a window this VM
    /// already wrote). `coalesce_ms` 0: every need is written as it happens.
    pub fn on_need(&mut self, version: &str, now_ms: u64, coalesce_ms: u64) -> Option<Write> {
        if coalesce_ms == 0 {
            return Some(Write {
                n: 1,
                at_ms: now_ms,
            });
        }
        let until_ms = now_ms.saturating_add(coalesce_ms);
        let Some(o) = self.open.iter_mut().find(|o| o.version == version) else {
            if self.open.len() < MAX_VERSIONS {
                self.open.push(Open {
                    version: version.to_string(),
                    until_ms,
                    folded: 0,
                    last_ms: now_ms,
                });
                return Some(Write {
                    n: 1,
                    at_ms: until_ms,
                });
            }
            return Some(Write {
                n: 1,
                at_ms: now_ms,
            });
        };
        o.last_ms = o.last_ms.max(now_ms);
        if now_ms < o.until_ms {
            o.folded = o.folded.saturating_add(1);
            return None;
        }
        let n = o.folded.saturating_add(1);
        o.folded = 0;
        o.until_ms = until_ms;
        Some(Write { n, at_ms: until_ms })
    }

    /// At a tick: the folded needs of every window that has ended, to write now, each stamped
    /// with its window's end (or, after a failed write, its latest need), which is never earlier
    /// than they happened. A write that fails goes back with `unwritten`.
    pub fn due(&mut self, now_ms: u64) -> Vec<(String, Write)> {
        let mut out = Vec::new();
        for o in self.open.iter_mut() {
            if o.folded > 0 && now_ms >= o.until_ms {
                out.push((
                    o.version.clone(),
                    Write {
                        n: o.folded,
                        at_ms: o.until_ms.max(o.last_ms),
                    },
                ));
                o.folded = 0;
            }
        }
        out
    }

    /// The write `w` of `version` failed: its needs are folded again and its window closed, so
    /// the next need of the version writes them.
    pub fn unwritten(&mut self, version: &str, w: Write) {
        if let Some(o) = self.open.iter_mut().find(|o| o.version == version) {
            o.folded = o.folded.saturating_add(w.n);
            o.until_ms = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::demand::{list, record_until, Need};
    use crate::core::registry::{Limits, Scope};
    use crate::core::store::MemoryStore;

    const W: u64 = 100;

    #[test]
    fn the_first_need_writes_its_window_the_rest_of_it_fold_into_the_next_write() {
        let mut l = Ledger::default();
        assert_eq!(l.on_need("2", 1_000, W), Some(Write { n: 1, at_ms: 1_100 }));
        assert_eq!(l.on_need("2", 1_050, W), None);
        assert_eq!(l.on_need("2", 1_099, W), None);
        // Another version has its own window.
        assert_eq!(l.on_need("3", 1_099, W), Some(Write { n: 1, at_ms: 1_199 }));
        // The window's end is the next write's: its two folded needs with it.
        assert_eq!(l.on_need("2", 1_100, W), Some(Write { n: 3, at_ms: 1_200 }));
        assert_eq!(l.on_need("2", 5_000, W), Some(Write { n: 1, at_ms: 5_100 }));
    }

    #[test]
    fn zero_writes_every_need_at_its_time() {
        let mut l = Ledger::default();
        for t in [1_000, 1_000, 1_001] {
            assert_eq!(l.on_need("2", t, 0), Some(Write { n: 1, at_ms: t }));
        }
    }

    #[test]
    fn a_failed_write_gives_its_needs_to_the_next_need_at_once() {
        let mut l = Ledger::default();
        let w = l.on_need("2", 1_000, W).unwrap();
        assert_eq!(l.on_need("2", 1_010, W), None);
        l.unwritten("2", w);
        // Not folded into a window nobody wrote: written now, with the two before it.
        assert_eq!(l.on_need("2", 1_020, W), Some(Write { n: 3, at_ms: 1_120 }));
    }

    #[test]
    fn a_tick_writes_what_ended_windows_folded_and_nothing_else() {
        let mut l = Ledger::default();
        assert!(l.on_need("2", 1_000, W).is_some());
        assert_eq!(l.on_need("2", 1_050, W), None);
        assert_eq!(l.on_need("2", 1_090, W), None);
        assert!(l.on_need("3", 1_080, W).is_some());
        // Windows still open: their needs wait for the next need or a later tick.
        assert_eq!(l.due(1_099), vec![]);
        // Stamped at the window's end, which the listing already shows: never earlier than them.
        assert_eq!(
            l.due(1_100),
            vec![("2".to_string(), Write { n: 2, at_ms: 1_100 })]
        );
        assert_eq!(l.due(5_000), vec![]);
        // A failed write's needs carry no window: a tick stamps the latest of them.
        let w = l.on_need("3", 5_000, W).unwrap();
        l.unwritten("3", w);
        assert_eq!(l.on_need("3", 5_010, W), Some(Write { n: 2, at_ms: 5_110 }));
        assert_eq!(l.on_need("3", 5_020, W), None);
        let w = l.due(5_110).pop().unwrap();
        l.unwritten("3", w.1);
        assert_eq!(
            l.due(5_111),
            vec![("3".to_string(), Write { n: 1, at_ms: 5_020 })]
        );
    }

    #[test]
    fn past_its_versions_a_ledger_writes_through() {
        let mut l = Ledger::default();
        for v in 0..MAX_VERSIONS {
            assert!(l.on_need(&v.to_string(), 1_000, W).is_some());
        }
        for t in [1_000, 1_001] {
            assert_eq!(l.on_need("new", t, W), Some(Write { n: 1, at_ms: t }));
        }
        assert_eq!(l.on_need("0", 1_001, W), None);
    }

    /// xorshift64*: the schedules are the same on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
        }
    }

    /// Four VMs (four ledgers over one store), two versions, needs and ticks at random times on
    /// random VMs, one write in ten failing (the store busy past every CAS retry), 400 schedules.
    /// After every step: if a need was written or folded into a window, the listing shows it
    /// needed no earlier than it happened; the listing is never more than one window ahead of the
    /// last need; and no need is lost: the listed counts and the folded ones add up to all of
    /// them. A window after the last need, once every VM has ticked, all of them are listed.
    #[test]
    fn over_random_schedules_the_listing_never_shows_a_need_earlier_than_it_was() {
        let scope = Scope::new(
            &["pool-a", "checkout"],
            Limits {
                stale_after_ms: 15_000,
                max_records: 100,
            },
        );
        let versions = ["1", "2"];
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut store = MemoryStore::default();
            let mut vms: Vec<Ledger> = (0..4).map(|_| Ledger::default()).collect();
            let mut needs = [0u64; 2];
            let mut latest = [0u64; 2];
            // Anywhere in a 10-s counting period: the schedules cross period boundaries.
            let mut now = 1_000_000 + rng.next(10_000);
            fn need(version: &str) -> Need<'_> {
                Need {
                    pool: "pool-a",
                    app: "checkout",
                    version,
                }
            }
            // One write in ten fails: the store busy past every CAS retry.
            let write = |store: &mut MemoryStore, rng: &mut Rng, version: &str, now, w: Write| {
                if rng.next(10) == 0 {
                    store.inject_mismatches = 1_000;
                }
                let ok = record_until(store, &scope, &need(version), now, w.n, w.at_ms).is_ok();
                store.inject_mismatches = 0;
                ok
            };
            for _ in 0..200 {
                now += rng.next(60);
                let vm = &mut vms[usize::try_from(rng.next(4)).unwrap()];
                // One step in five is a tick of that VM instead of a need.
                let need_of = if rng.next(5) == 0 {
                    for (version, w) in vm.due(now) {
                        if !write(&mut store, &mut rng, &version, now, w) {
                            vm.unwritten(&version, w);
                        }
                    }
                    None
                } else {
                    let vi = usize::try_from(rng.next(2)).unwrap();
                    let version = versions[vi];
                    needs[vi] += 1;
                    latest[vi] = now;
                    let covered = match vm.on_need(version, now, W) {
                        None => true,
                        Some(w) => {
                            let ok = write(&mut store, &mut rng, version, now, w);
                            if !ok {
                                vm.unwritten(version, w);
                            }
                            ok
                        }
                    };
                    covered.then_some(version)
                };
                let listing = list(&mut store, &scope, now).unwrap();
                if let Some(version) = need_of {
                    let line = listing.iter().find(|d| d.version == version);
                    let line = line.unwrap_or_else(|| panic!("seed {seed}: {version} unlisted"));
                    assert!(line.last_needed_ms >= now, "seed {seed}: {line:?} at {now}");
                }
                for (i, v) in versions.iter().enumerate() {
                    let line = listing.iter().find(|d| d.version == *v);
                    let listed = line.map_or(0, |d| d.needed_60s);
                    if let Some(d) = line {
                        assert!(
                            d.last_needed_ms <= latest[i] + W,
                            "seed {seed}: {d:?} latest {} now {now} tick {}",
                            latest[i],
                            need_of.is_none()
                        );
                    }
                    let folded: u64 = vms
                        .iter()
                        .flat_map(|l| l.open.iter())
                        .filter(|o| o.version == *v)
                        .map(|o| u64::from(o.folded))
                        .sum();
                    assert_eq!(listed + folded, needs[i], "seed {seed}: version {v}");
                }
            }
            // Quiet after the schedule: one window later every VM ticks, the store answers, and
            // every need is listed, none left folded; the listing still covers the latest need.
            now += W;
            for vm in &mut vms {
                for (version, w) in vm.due(now) {
                    record_until(&mut store, &scope, &need(&version), now, w.n, w.at_ms).unwrap();
                }
            }
            let listing = list(&mut store, &scope, now).unwrap();
            for (i, v) in versions.iter().enumerate() {
                let listed = listing.iter().find(|d| d.version == *v);
                assert_eq!(
                    listed.map_or(0, |d| d.needed_60s),
                    needs[i],
                    "seed {seed}: {v}"
                );
                if let Some(d) = listed {
                    assert!(d.last_needed_ms >= latest[i], "seed {seed}: {d:?}");
                }
            }
            assert!(vms
                .iter()
                .flat_map(|l| l.open.iter())
                .all(|o| o.folded == 0));
        }
    }
}
