use super::*;
use crate::core::etcd::tests::{answer, kv, raw_kv};
use crate::core::registry::{Ident, Limits, MemoryStore};

const TARGET: &str = "127.0.0.1:8081";

fn cfg(registry: &str) -> Rc<Config> {
    Rc::new(Config::parse(
        format!(
            r#"{{"app":"checkout","pool":"pa","registry":{{"stale_after_ms":3000,{registry}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap())
}

fn poll_cfg() -> Rc<Config> {
    cfg(&format!(
        r#""poll":{{"targets":["{TARGET}"],"interval_ms":1000}}"#
    ))
}

fn etcd_cfg() -> Rc<Config> {
    cfg(r#""etcd":{"poll_interval_ms":1000}"#)
}

fn logs(actions: &[JobAction]) -> Vec<(Level, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            JobAction::Log { level, text } => Some((*level, text.as_str())),
            _ => None,
        })
        .collect()
}

fn failures(actions: &[JobAction]) -> usize {
    actions
        .iter()
        .filter(|a| **a == JobAction::Count(Counter::RegistrySyncFailed))
        .count()
}

fn records(actions: &[JobAction]) -> Option<u64> {
    actions.iter().rev().find_map(|a| match a {
        JobAction::SetRecords(n) => Some(*n),
        _ => None,
    })
}

/// Ticks at `now` and tells the jobs the host took every call, tokens from `token` on: the
/// calls sent.
fn tick_and_send(j: &mut Jobs, s: &mut MemoryStore, now: u64, token: u32) -> Vec<(u32, Call)> {
    let mut sent = Vec::new();
    for a in j.on_tick(s, now) {
        if let JobAction::Dispatch { what, .. } = a {
            let t = token + u32::try_from(sent.len()).unwrap();
            j.on_dispatched(t, what.clone());
            sent.push((t, what));
        }
    }
    sent
}

/// A pull poll's call: the target's request through the poll cluster, once per interval.
#[test]
fn a_due_poll_dispatches_each_target_once_per_interval() {
    let c = poll_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    let actions = j.on_tick(&mut s, 1000);
    let p = c.registry.poll.as_ref().unwrap();
    assert!(actions.contains(&JobAction::Dispatch {
        cluster: p.cluster.clone(),
        headers: poll::request_headers(p, TARGET),
        body: None,
        timeout_ms: p.timeout_ms,
        what: Call::Target(TARGET.into()),
    }));
    // Within the interval, by this VM or another: nothing to send.
    let again = |j: &mut Jobs, s: &mut MemoryStore, t| {
        j.on_tick(s, t)
            .iter()
            .filter(|a| matches!(a, JobAction::Dispatch { .. }))
            .count()
    };
    assert_eq!(again(&mut j, &mut s, 1500), 0);
    assert_eq!(again(&mut Jobs::new(2, c.clone()), &mut s, 1500), 0);
    assert_eq!(again(&mut j, &mut s, 2000), 1);
}

/// Failure, failure: one WARN; success: one INFO; failure again: one WARN. Every failure counts.
#[test]
fn an_outage_is_logged_once_and_its_recovery_once() {
    let c = poll_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    let ok = br#"{"app":"checkout","version":"2"}"#;
    let answer_at = |j: &mut Jobs, s: &mut MemoryStore, k: u32, status, body: &[u8]| {
        let now = 1000 * u64::from(k);
        let sent = tick_and_send(j, s, now, k);
        assert_eq!(sent, vec![(k, Call::Target(TARGET.into()))]);
        j.on_call_answer(s, k, status, body, now).unwrap()
    };
    let warn = format!(
        "mixmode: registry sync poll/{TARGET} failing: no answer; the target is not refreshed and \
         goes stale (counted in mixmode.registry_sync_failed, logged once per outage)"
    );

    let a = answer_at(&mut j, &mut s, 1, None, b"");
    assert_eq!(logs(&a), vec![(Level::Warn, warn.as_str())]);
    assert_eq!(failures(&a), 1);

    let a = answer_at(&mut j, &mut s, 2, Some(500), b"");
    assert_eq!(logs(&a), vec![]);
    assert_eq!(failures(&a), 1);

    let a = answer_at(&mut j, &mut s, 3, Some(200), ok);
    let recovered = format!("mixmode: registry sync poll/{TARGET} recovered");
    assert_eq!(logs(&a), vec![(Level::Info, recovered.as_str())]);
    assert_eq!(failures(&a), 0);
    assert_eq!(records(&a), Some(1), "the new record is counted");

    let a = answer_at(&mut j, &mut s, 4, Some(200), b"not json");
    let garbage = warn.replace("no answer", r#"answer is not {"app", "version"}"#);
    assert_eq!(logs(&a), vec![(Level::Warn, garbage.as_str())]);
    assert_eq!(failures(&a), 1);

    let a = answer_at(&mut j, &mut s, 5, Some(200), ok);
    assert_eq!(logs(&a), vec![(Level::Info, recovered.as_str())]);
    assert_eq!(records(&a), None, "a refresh does not read the count");
}

/// The outage is the job's, not the VM's: another VM's failure continues it silently.
#[test]
fn an_outage_spans_vms() {
    let c = poll_cfg();
    let mut s = MemoryStore::default();
    let what = Call::Target(TARGET.into());
    let a = Jobs::new(1, c.clone()).on_dispatch_refused(what.clone(), "x", &mut s);
    assert_eq!(logs(&a).len(), 1);
    let a = Jobs::new(2, c.clone()).on_dispatch_refused(what, "x", &mut s);
    assert_eq!((logs(&a).len(), failures(&a)), (0, 1));
}

/// The host refused the call: no answer will come; a failed poll, counted and logged.
#[test]
fn a_refused_dispatch_is_a_failed_poll() {
    let c = etcd_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    let why = r#"dispatch via cluster "mixmode_etcd" refused: BadArgument"#;
    let a = j.on_dispatch_refused(Call::Etcd, why, &mut s);
    assert_eq!(failures(&a), 1);
    let text = format!(
        "mixmode: registry sync etcd failing: {why}; the mirror keeps its last snapshot; records \
         go stale after 3000 ms (counted in mixmode.registry_sync_failed, logged once per outage)"
    );
    assert_eq!(logs(&a), vec![(Level::Warn, text.as_str())]);
    let a = j.on_dispatch_refused(Call::Etcd, why, &mut s);
    assert_eq!((failures(&a), logs(&a).len()), (1, 0));
}

/// An answer is handled once, for a call these jobs sent; any other token is not theirs.
#[test]
fn tokens_are_answered_once_and_others_are_not_ours() {
    let c = poll_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    assert!(j.on_call_answer(&mut s, 7, None, b"", 1000).is_none());
    let sent = tick_and_send(&mut j, &mut s, 1000, 7);
    assert_eq!(sent.len(), 1);
    assert!(j.owns(7) && !j.owns(8));
    assert!(j.on_call_answer(&mut s, 8, Some(200), b"", 1000).is_none());
    let first = j.on_call_answer(&mut s, 7, None, b"", 1000).unwrap();
    assert_eq!(failures(&first), 1);
    assert!(!j.owns(7));
    assert!(j.on_call_answer(&mut s, 7, None, b"", 1000).is_none());
}

/// A dispatch the host refused leaves no pending token behind.
#[test]
fn only_dispatched_calls_await_an_answer() {
    let c = etcd_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    let actions = j.on_tick(&mut s, 1000);
    let Some(JobAction::Dispatch { what, body, .. }) = actions
        .into_iter()
        .find(|a| matches!(a, JobAction::Dispatch { .. }))
    else {
        panic!("no etcd call");
    };
    let e = c.registry.etcd.as_ref().unwrap();
    assert_eq!(body, Some(etcd::request_body(&c, e).into_bytes()));
    j.on_dispatch_refused(what, "refused", &mut s);
    assert!(!j.owns(0) && !j.owns(1));
}

/// Keys the mirror did not take are logged one by one; a full snapshot sets the records gauge.
#[test]
fn skipped_etcd_keys_are_logged_and_a_snapshot_sets_the_gauge() {
    let c = etcd_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    let sent = tick_and_send(&mut j, &mut s, 1000, 1);
    assert_eq!(sent, vec![(1, Call::Etcd)]);
    let good = kv("pa", "checkout", "1", "127.0.0.1:8081", 2);
    let not_json = raw_kv("/mixmode/pa/checkout/2/127.0.0.1:8083", "garbage", 3);
    let a = j
        .on_call_answer(&mut s, 1, Some(200), &answer(3, &[good, not_json]), 1000)
        .unwrap();
    let l = logs(&a);
    let skipped: Vec<_> = l
        .iter()
        .filter(|(_, t)| t.starts_with("mixmode: etcd key skipped: "))
        .collect();
    assert_eq!(skipped.len(), 1, "{l:?}");
    assert_eq!(skipped[0].0, Level::Warn);
    assert!(skipped[0].1.contains("127.0.0.1:8083"), "{l:?}");
    assert!(
        l.contains(&(
            Level::Debug,
            "mixmode: etcd snapshot 3: 1 records, 1 added, 0 removed"
        )),
        "{l:?}"
    );
    assert_eq!(records(&a), Some(1));
    assert_eq!(failures(&a), 0);

    // The same revision again: only freshness moves, no snapshot, no gauge.
    let sent = tick_and_send(&mut j, &mut s, 2000, 2);
    assert_eq!(sent.len(), 1);
    let a = j
        .on_call_answer(&mut s, 2, Some(200), &answer(3, &[]), 2000)
        .unwrap();
    assert_eq!((logs(&a), records(&a)), (vec![], None));
}

/// An etcd answer that is not one fails the poll with etcd's reason.
#[test]
fn a_bad_etcd_answer_fails_the_poll() {
    let c = etcd_cfg();
    let mut s = MemoryStore::default();
    let mut j = Jobs::new(1, c.clone());
    tick_and_send(&mut j, &mut s, 1000, 1);
    let a = j.on_call_answer(&mut s, 1, Some(503), b"", 1000).unwrap();
    assert_eq!(failures(&a), 1);
    let l = logs(&a);
    assert_eq!(l.len(), 1);
    assert!(
        l[0].1
            .starts_with("mixmode: registry sync etcd failing: status 503; "),
        "{l:?}"
    );
}

/// The prune job removes stale records and sets the gauge to what is left.
#[test]
fn a_prune_run_sets_the_records_gauge() {
    let c = cfg(r#""max_records":100"#);
    let scope = Scope::of(&c);
    let mut s = MemoryStore::default();
    let r = |address| Ident {
        pool: "pa",
        app: "checkout",
        version: "1",
        address,
    };
    registry::upsert(&mut s, &scope, &r("127.0.0.1:8081"), 0).unwrap();
    registry::upsert(&mut s, &scope, &r("127.0.0.1:8082"), 2000).unwrap();
    let mut j = Jobs::new(1, c.clone());
    let (mut pruned, mut last) = (Vec::new(), 0);
    // Prune walks the buckets over several runs; within stale_after_ms it has been through all.
    for t in (3500..=8000u64).step_by(250) {
        let a = j.on_tick(&mut s, t);
        last = t;
        if let Some(n) = records(&a) {
            pruned.extend(logs(&a).iter().map(|(l, t)| (*l, t.to_string())));
            if n == 1 {
                break;
            }
        }
    }
    assert_eq!(registry::count(&mut s, &scope).unwrap(), 1);
    assert!(
        pruned.contains(&(Level::Debug, "mixmode: pruned 1 stale records".to_string())),
        "{pruned:?}"
    );
    // No lease due: nothing at all.
    assert_eq!(j.on_tick(&mut s, last), vec![]);
}

/// The tick period follows the shortest job interval.
#[test]
fn the_tick_follows_the_shortest_interval() {
    assert_eq!(Jobs::new(1, poll_cfg()).tick_period_ms(), 250);
}

fn scope(id: &str, stale: u64) -> Scope {
    Scope::new(
        &[id],
        Limits {
            stale_after_ms: stale,
            max_records: 100,
        },
    )
}

/// Two scopes in one store: each prunes on its own lease, with its own limits.
#[test]
fn scopes_prune_apart() {
    let mut s = MemoryStore::default();
    let long = scope("a", 60_000);
    let short = scope("b", 15_000);
    let r = |pool| Ident {
        pool,
        app: "app",
        version: "1",
        address: "10.0.0.1:80",
    };
    registry::upsert(&mut s, &long, &r("pa"), 0).unwrap();
    registry::upsert(&mut s, &short, &r("pb"), 0).unwrap();
    let (mut c1, mut c2) = (PruneCursor::default(), PruneCursor::default());
    for t in (0..=20_000u64).step_by(500) {
        prune_tick(&mut s, &long, 1, &mut c1, t).unwrap();
        prune_tick(&mut s, &short, 2, &mut c2, t).unwrap();
    }
    assert_eq!(registry::count(&mut s, &long).unwrap(), 1);
    assert_eq!(registry::count(&mut s, &short).unwrap(), 0);
}
