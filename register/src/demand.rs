//! Draining by demand (docs/design.md#draining-by-demand), the decision part: given what each
//! Envoy's demand listing said at one poll, and the time, is the draining server's version still
//! needed, quiet long enough to leave, or out of time? No I/O here: the polling loop
//! (`drain.rs`) feeds answers in and acts on the [`Decision`].

use std::fmt;

use serde_json::Value;

/// The version a draining server serves: what the Envoys' listings are searched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pool: String,
    pub app: String,
    pub version: String,
}

/// One entry of an Envoy's `GET <heartbeat.path>?demand` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub pool: String,
    pub app: String,
    pub version: String,
    /// Unix time (the Envoy's clock) of the last request that needed this version.
    pub last_needed_ms: u64,
    /// Requests that needed it in the last 60 s.
    pub needed_60s: u64,
}

/// Parses `{"demand": [{"pool", "app", "version", "last_needed_ms", "needed_60s"}, …]}`.
/// Anything else is an error, never an empty listing: an answer we cannot read must not look
/// like "nobody needs it".
pub fn parse_listing(body: &[u8]) -> Result<Vec<Need>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("demand listing is not JSON: {e}"))?;
    let entries = v
        .get("demand")
        .and_then(Value::as_array)
        .ok_or("demand listing has no \"demand\" array")?;
    entries
        .iter()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("demand entry without string {k:?}: {e}"))
            };
            let number = |k: &str| {
                e.get(k)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("demand entry without number {k:?}: {e}"))
            };
            Ok(Need {
                pool: text("pool")?,
                app: text("app")?,
                version: text("version")?,
                last_needed_ms: number("last_needed_ms")?,
                needed_60s: number("needed_60s")?,
            })
        })
        .collect()
}

/// What one listed Envoy answered at one poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Listing(Vec<Need>),
    /// No answer, a refusal or an unreadable body: counted as "still needed" (see [`Drain`]).
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long the version must go unneeded on every Envoy (`--quiet-ms`).
    pub quiet_ms: u64,
    /// When to give up waiting (`--max-wait-s`, in ms here).
    pub max_wait_ms: u64,
}

/// Why a drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Still needed (or not quiet long enough yet): poll again.
    Wait {
        /// How long the version has gone unneeded so far.
        quiet_for_ms: u64,
        /// The Envoys (indices into the answers) whose last answer failed.
        failed: Vec<usize>,
        /// Requests that needed the version in the last 60 s, summed over the Envoys.
        needed_60s: u64,
    },
    /// Not needed anywhere for `quiet_ms`: deregister and stop.
    Quiet { waited_ms: u64, quiet_for_ms: u64 },
    /// `max_wait_ms` passed while the version was still needed (or an Envoy did not answer).
    MaxWait { waited_ms: u64, quiet_for_ms: u64 },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Wait {
                quiet_for_ms,
                failed,
                needed_60s,
            } => {
                write!(
                    f,
                    "still needed: quiet for {quiet_for_ms} ms, {needed_60s} needs in the last 60 s"
                )?;
                if !failed.is_empty() {
                    write!(f, ", {} Envoy(s) not answering", failed.len())?;
                }
                Ok(())
            }
            Decision::Quiet {
                waited_ms,
                quiet_for_ms,
            } => write!(
                f,
                "not needed for {quiet_for_ms} ms on any Envoy; left after {waited_ms} ms"
            ),
            Decision::MaxWait {
                waited_ms,
                quiet_for_ms,
            } => write!(
                f,
                "still needed after {waited_ms} ms (max wait; quiet for only {quiet_for_ms} ms)"
            ),
        }
    }
}

/// One server's drain: started when it left the load balancer, fed each poll's answers.
///
/// The version counts as needed at the latest of:
/// - the drain's start: sessions in progress on this server surface as needs only at their next
///   step, so "never needed yet" is not "quiet" until `quiet_ms` have passed;
/// - any Envoy's `last_needed_ms` for the target (the Envoy's clock: skew between the hosts
///   shifts this, which the next rule makes up for);
/// - the local time of a poll that saw an Envoy's `last_needed_ms` or `needed_60s` grow since
///   its previous answer (a need that happened since the last poll, whatever the clocks say);
/// - the local time of a poll at which an Envoy did not answer: we cannot know it did not need
///   the version, so we assume it did (the safe side; the drain then ends at the latest at
///   `max_wait_ms`).
#[derive(Clone, Debug)]
pub struct Drain {
    target: Target,
    policy: Policy,
    started_ms: u64,
    needed_at_ms: u64,
    /// Per Envoy (index of its answer): what its previous listing said of the target.
    previous: Vec<Seen>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// No listing from this Envoy yet.
    Never,
    /// Its last listing did not name the target.
    Absent,
    /// `(last_needed_ms, needed_60s)` of its last listing.
    Present(u64, u64),
}

impl Drain {
    /// `now_ms`: Unix time in ms, the clock of the later calls to [`Drain::observe`].
    pub fn new(target: Target, policy: Policy, now_ms: u64) -> Drain {
        Drain {
            target,
            policy,
            started_ms: now_ms,
            needed_at_ms: now_ms,
            previous: Vec::new(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Takes one poll's answers (one per listed Envoy, always in the same order) and decides.
    pub fn observe(&mut self, now_ms: u64, answers: &[Answer]) -> Decision {
        if self.previous.len() < answers.len() {
            self.previous.resize(answers.len(), Seen::Never);
        }
        let mut failed = Vec::new();
        let mut needed_60s = 0;
        for (i, answer) in answers.iter().enumerate() {
            match answer {
                Answer::Failed(_) => {
                    failed.push(i);
                    self.needed_at_ms = self.needed_at_ms.max(now_ms);
                }
                Answer::Listing(needs) => {
                    let mine = needs
                        .iter()
                        .filter(|n| {
                            n.pool == self.target.pool
                                && n.app == self.target.app
                                && n.version == self.target.version
                        })
                        .fold(None, |acc: Option<(u64, u64)>, n| {
                            let (last, count) = acc.unwrap_or((0, 0));
                            Some((last.max(n.last_needed_ms), count + n.needed_60s))
                        });
                    if let Some((last, count)) = mine {
                        needed_60s += count;
                        self.needed_at_ms = self.needed_at_ms.max(last);
                        let grew = match self.previous.get(i).copied().unwrap_or(Seen::Never) {
                            Seen::Present(p_last, p_count) => last > p_last || count > p_count,
                            // Back after it decayed out of the listing: needed again.
                            Seen::Absent => true,
                            // The first listing: only its stamp tells when.
                            Seen::Never => false,
                        };
                        if grew {
                            self.needed_at_ms = self.needed_at_ms.max(now_ms);
                        }
                    }
                    if let Some(slot) = self.previous.get_mut(i) {
                        *slot = match mine {
                            Some((last, count)) => Seen::Present(last, count),
                            None => Seen::Absent,
                        };
                    }
                }
            }
        }
        let waited_ms = now_ms.saturating_sub(self.started_ms);
        // A need stamped in the future (an Envoy's clock ahead of ours) means quiet for 0 ms.
        let quiet_for_ms = now_ms.saturating_sub(self.needed_at_ms);
        if failed.is_empty() && quiet_for_ms >= self.policy.quiet_ms {
            Decision::Quiet {
                waited_ms,
                quiet_for_ms,
            }
        } else if waited_ms >= self.policy.max_wait_ms {
            Decision::MaxWait {
                waited_ms,
                quiet_for_ms,
            }
        } else {
            Decision::Wait {
                quiet_for_ms,
                failed,
                needed_60s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            pool: "default".into(),
            app: "checkout".into(),
            version: "1".into(),
        }
    }

    fn need(version: &str, last: u64, count: u64) -> Need {
        Need {
            pool: "default".into(),
            app: "checkout".into(),
            version: version.into(),
            last_needed_ms: last,
            needed_60s: count,
        }
    }

    const POLICY: Policy = Policy {
        quiet_ms: 300,
        max_wait_ms: 5_000,
    };
    const T0: u64 = 1_700_000_000_000;

    fn listing(needs: Vec<Need>) -> Answer {
        Answer::Listing(needs)
    }

    fn is_wait(d: &Decision) -> bool {
        matches!(d, Decision::Wait { .. })
    }

    #[test]
    fn parses_the_listing_and_refuses_anything_else() {
        let body = br#"{"demand": [{"pool": "default", "app": "checkout", "version": "1",
                        "last_needed_ms": 1700000000000, "needed_60s": 3}]}"#;
        assert_eq!(parse_listing(body).unwrap(), vec![need("1", T0, 3)]);
        assert_eq!(parse_listing(br#"{"demand": []}"#).unwrap(), vec![]);
        for bad in [
            &b"not json"[..],
            br#"{"records": []}"#,
            br#"{"demand": {}}"#,
            br#"{"demand": [{"pool": "p", "app": "a", "version": "1", "needed_60s": 1}]}"#,
            br#"{"demand": [{"pool": "p", "app": "a", "version": 1, "last_needed_ms": 1, "needed_60s": 1}]}"#,
        ] {
            assert!(parse_listing(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let e = parse_listing(br#"{"demand": [{"pool": "p"}]}"#).unwrap_err();
        assert!(e.contains("\"app\""), "{e}");
    }

    #[test]
    fn never_needed_leaves_after_quiet_ms_from_the_drain_start() {
        let mut d = Drain::new(target(), POLICY, T0);
        assert!(is_wait(&d.observe(T0 + 100, &[listing(vec![])])));
        assert!(is_wait(&d.observe(T0 + 299, &[listing(vec![])])));
        assert_eq!(
            d.observe(T0 + 300, &[listing(vec![])]),
            Decision::Quiet {
                waited_ms: 300,
                quiet_for_ms: 300
            }
        );
    }

    #[test]
    fn a_recent_need_on_any_envoy_keeps_it() {
        let mut d = Drain::new(target(), POLICY, T0);
        // Envoy B needed v1 at T0+400; other versions and apps do not count.
        let other_app = Need {
            app: "billing".into(),
            ..need("1", T0 + 5_000, 9)
        };
        let a = listing(vec![need("2", T0 + 1_000, 5), other_app]);
        let b = listing(vec![need("1", T0 + 400, 1)]);
        let d1 = d.observe(T0 + 500, &[a.clone(), b.clone()]);
        assert_eq!(
            d1,
            Decision::Wait {
                quiet_for_ms: 100,
                failed: vec![],
                needed_60s: 1
            }
        );
        assert!(is_wait(&d.observe(T0 + 699, &[a.clone(), b.clone()])));
        assert_eq!(
            d.observe(T0 + 700, &[a, b]),
            Decision::Quiet {
                waited_ms: 700,
                quiet_for_ms: 300
            }
        );
    }

    #[test]
    fn a_need_seen_to_grow_counts_now_whatever_the_envoy_clock_says() {
        let mut d = Drain::new(target(), POLICY, T0);
        // This Envoy's clock is 10 s behind: its stamps look old.
        let behind = |last, count| listing(vec![need("1", last, count)]);
        assert!(is_wait(&d.observe(T0 + 100, &[behind(T0 - 10_000, 1)])));
        // A new need (the stamp grew): quiet restarts at this poll, T0 + 250.
        assert!(is_wait(&d.observe(T0 + 250, &[behind(T0 - 9_900, 2)])));
        assert!(is_wait(&d.observe(T0 + 500, &[behind(T0 - 9_900, 2)])));
        assert!(matches!(
            d.observe(T0 + 550, &[behind(T0 - 9_900, 2)]),
            Decision::Quiet {
                quiet_for_ms: 300,
                ..
            }
        ));
    }

    #[test]
    fn a_stamp_ahead_of_our_clock_is_not_quiet() {
        let mut d = Drain::new(target(), POLICY, T0);
        let ahead = listing(vec![need("1", T0 + 60_000, 1)]);
        assert!(matches!(
            d.observe(T0 + 1_000, std::slice::from_ref(&ahead)),
            Decision::Wait {
                quiet_for_ms: 0,
                ..
            }
        ));
    }

    #[test]
    fn an_envoy_that_does_not_answer_counts_as_needing_it() {
        let mut d = Drain::new(target(), POLICY, T0);
        let quiet = listing(vec![]);
        let down = Answer::Failed("connection refused".into());
        let d1 = d.observe(T0 + 1_000, &[quiet.clone(), down.clone()]);
        assert_eq!(
            d1,
            Decision::Wait {
                quiet_for_ms: 0,
                failed: vec![1],
                needed_60s: 0
            }
        );
        // Back: quiet runs from the last failed poll.
        assert!(is_wait(
            &d.observe(T0 + 1_200, &[quiet.clone(), quiet.clone()])
        ));
        assert!(matches!(
            d.observe(T0 + 1_300, &[quiet.clone(), quiet]),
            Decision::Quiet {
                quiet_for_ms: 300,
                ..
            }
        ));
        // Never back: max wait.
        let mut d = Drain::new(target(), POLICY, T0);
        assert!(is_wait(&d.observe(T0 + 4_999, std::slice::from_ref(&down))));
        assert_eq!(
            d.observe(T0 + 5_000, &[down]),
            Decision::MaxWait {
                waited_ms: 5_000,
                quiet_for_ms: 0
            }
        );
    }

    #[test]
    fn needed_all_along_ends_at_max_wait_and_quiet_wins_a_tie() {
        let mut d = Drain::new(target(), POLICY, T0);
        let mut now = T0;
        loop {
            now += 100;
            let r = d.observe(now, &[listing(vec![need("1", now - 10, 7)])]);
            if !is_wait(&r) {
                assert_eq!(
                    r,
                    Decision::MaxWait {
                        waited_ms: 5_000,
                        // The stamp grew at this poll: needed now.
                        quiet_for_ms: 0
                    }
                );
                break;
            }
        }
        let mut d = Drain::new(target(), POLICY, T0);
        let r = d.observe(T0 + 5_000, &[listing(vec![need("1", T0 + 4_700, 1)])]);
        assert!(matches!(r, Decision::Quiet { .. }), "{r:?}");
        assert!(r.to_string().contains("not needed for 300 ms"), "{r}");
    }

    #[test]
    fn an_entry_that_decays_and_returns_is_a_new_need() {
        let mut d = Drain::new(target(), POLICY, T0);
        let stamp = T0 - 20_000;
        assert!(is_wait(
            &d.observe(T0 + 100, &[listing(vec![need("1", stamp, 1)])])
        ));
        assert!(is_wait(&d.observe(T0 + 200, &[listing(vec![])])));
        // Back with the same stamp: the Envoy forgot and saw a need again, count it now.
        assert!(is_wait(
            &d.observe(T0 + 400, &[listing(vec![need("1", stamp, 1)])])
        ));
        assert!(is_wait(&d.observe(T0 + 650, &[listing(vec![])])));
        assert!(matches!(
            d.observe(T0 + 700, &[listing(vec![])]),
            Decision::Quiet { .. }
        ));
    }
}
