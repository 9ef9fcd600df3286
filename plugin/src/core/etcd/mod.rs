//! The etcd mirror (docs/design.md#etcd-mirror): one poller per Envoy process reads the keys
//! `<prefix><pool>/<app>/<version>/<ip:port>` through etcd's JSON gateway (`POST /v3/kv/range`)
//! and mirrors them into the shared-data registry, where lookups stay local.
//!
//! - A mirrored record is fresh as long as the mirror is: its `last_seen` is the time of the last
//!   successful poll (`MIRROR_SEEN_KEY`), so a poll of an unchanged snapshot (same
//!   `header.revision`) writes one key, not one per record.
//! - A changed snapshot is diffed against the previous one (kept in shared data: the VM that
//!   polls can change): new keys are put, keys gone are removed at once.
//! - A failed poll changes nothing: the records keep their `last_seen` and go stale by
//!   themselves after `stale_after_ms`; no mass eviction on one failure. An answer that does
//!   not parse whole is a failed poll, even if it starts with the known revision.
//! - Revisions only go forward: an answer older than the applied one (a late answer of a call
//!   another VM made before) is dropped, and one apply at a time writes (a claim in the state
//!   key), so a late snapshot never brings back keys a newer one removed. (If etcd itself went
//!   back, e.g. restored from a backup, the older revision is taken once the applied one is
//!   `stale_after_ms` old.)
//! - Every key is the configuration's (`registry::Scope`): two configurations mirroring one
//!   etcd (the revision is cluster-wide) each keep their own snapshot, state and freshness.
//! - Push and etcd records of one `(pool, app, address)` are one record; when etcd drops the key
//!   the record stays only if a heartbeat refreshed it after the last poll that saw the key
//!   (the latest write wins).

mod answer;
mod mirror;

pub use answer::{decode, Mirrored, SyncError};
pub use mirror::{apply, Applied, Claim, Snapshot, State};

use crate::core::config::{Config, Etcd};

/// The lease job name of the etcd poller (one per scope).
pub const JOB: &str = "etcd";

/// The key range the mirror reads: its pool's keys, or every pool's with `cross_pool`.
pub fn range_prefix(cfg: &Config, etcd: &Etcd) -> String {
    if cfg.registry.cross_pool {
        etcd.prefix.clone()
    } else {
        format!("{}{}/", etcd.prefix, cfg.pool)
    }
}

pub fn request_headers(etcd: &Etcd) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".to_string()),
        (":path", "/v3/kv/range".to_string()),
        // etcd does not route on it; the cluster name tells operators what the call was.
        (":authority", etcd.cluster.clone()),
        ("content-type", "application/json".to_string()),
    ]
}

pub fn request_body(cfg: &Config, etcd: &Etcd) -> String {
    let prefix = range_prefix(cfg, etcd);
    format!(
        r#"{{"key":"{}","range_end":"{}"}}"#,
        b64_encode(prefix.as_bytes()),
        b64_encode(&prefix_end(prefix.as_bytes()))
    )
}

/// etcd's range end for a prefix: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    vec![0]
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(B64.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity((text.len() / 4).saturating_mul(3));
    let mut acc = 0u32;
    // Bits waiting in `acc`: always below 8 between characters, so never more than 14.
    let mut bits = 0u32;
    for c in text.bytes().take_while(|c| *c != b'=') {
        let v = match B64.iter().position(|b| *b == c) {
            Some(v) => u32::try_from(v).unwrap_or(0),
            None => return None,
        };
        acc = (acc << 6) | v;
        bits = bits.saturating_add(6);
        if let Some(rest) = bits.checked_sub(8) {
            bits = rest;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
            acc &= (1u32 << bits).saturating_sub(1);
        }
    }
    Some(out)
}

/// Its helpers build range answers for the jobs' tests too.
#[cfg(test)]
pub(crate) mod tests;
