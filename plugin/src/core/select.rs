//! Candidate selection among the records of the session's version.

use crate::core::config::Selection;
use crate::core::registry::Entry;
use std::net::SocketAddr;

/// Two spellings of one address (`[::1]:80` / `[0:0:0:0:0:0:0:1]:80`) are the same peer.
fn same_address(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Picks one fresh entry that is not in `exclude` (the server that failed, peers already tried).
/// `random` is a fresh random number from the caller.
pub fn select<'a>(
    entries: &'a [Entry],
    now_ms: u64,
    stale_after_ms: u64,
    exclude: &[String],
    selection: Selection,
    random: u64,
) -> Option<&'a Entry> {
    let mut candidates = entries.iter().filter(|e| {
        e.is_fresh(now_ms, stale_after_ms) && !exclude.iter().any(|x| same_address(x, &e.address))
    });
    match selection {
        Selection::Freshest => candidates.fold(None, |best: Option<&Entry>, e| match best {
            Some(b) if b.last_seen_ms >= e.last_seen_ms => Some(b),
            _ => Some(e),
        }),
        Selection::Random => {
            let all: Vec<&Entry> = candidates.by_ref().collect();
            let n = u64::try_from(all.len()).ok()?;
            if n == 0 {
                return None;
            }
            let i = usize::try_from(random % n).ok()?;
            all.get(i).copied()
        }
    }
}

/// splitmix64: turns a seed (time, context id, attempt) into a well-mixed random number.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;
    use std::collections::HashSet;

    fn e(addr: &str, last: u64) -> Entry {
        Entry {
            address: addr.into(),
            first_seen_ms: 0,
            last_seen_ms: last,
        }
    }

    #[test]
    fn freshest_takes_the_latest_heartbeat() {
        let es = [
            e("10.0.0.1:80", 5),
            e("10.0.0.2:80", 9),
            e("10.0.0.3:80", 7),
        ];
        let got = select(&es, 10, 100, &[], Selection::Freshest, 0).unwrap();
        assert_eq!(got.address, "10.0.0.2:80");
    }

    #[test]
    fn excluded_and_stale_entries_are_never_chosen() {
        let es = [
            e("10.0.0.1:80", 5),
            e("10.0.0.2:80", 9),
            e("10.0.0.3:80", 0),
        ];
        let ex = vec!["10.0.0.2:80".to_string()];
        for r in 0..50 {
            for sel in [Selection::Random, Selection::Freshest] {
                let got = select(&es, 100, 96, &ex, sel, mix(r)).unwrap();
                assert_eq!(got.address, "10.0.0.1:80");
            }
        }
        let ex = vec!["10.0.0.1:80".to_string(), "10.0.0.2:80".to_string()];
        assert!(select(&es, 100, 96, &ex, Selection::Random, 1).is_none());
    }

    #[test]
    fn exclusion_compares_addresses_not_spellings() {
        let es = [e("[::1]:80", 5)];
        let ex = vec!["[0:0:0:0:0:0:0:1]:80".to_string()];
        assert!(select(&es, 5, 100, &ex, Selection::Random, 0).is_none());
    }

    #[test]
    fn random_reaches_every_candidate() {
        let es = [
            e("10.0.0.1:80", 5),
            e("10.0.0.2:80", 5),
            e("10.0.0.3:80", 5),
        ];
        let seen: HashSet<String> = (0..64)
            .map(|i| {
                select(&es, 5, 100, &[], Selection::Random, mix(i))
                    .unwrap()
                    .address
                    .clone()
            })
            .collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn empty_set_has_no_candidate() {
        assert!(select(&[], 0, 100, &[], Selection::Freshest, 0).is_none());
    }
}
