//! Pull heartbeats (docs/design.md#pull-polls): the proxy asks each target `GET <poll.path>` and an
//! answer `{"app": …, "version": …}` refreshes that address's record in the filter's pool.

use crate::core::config::{is_token_text, Config, Poll};
use crate::core::json::{Reader, Struct};
use crate::core::registry::{self, Ident, Scope, Upserted};
use crate::core::store::{RegistryError, SharedStore};

/// The lease job name of the pull poller.
pub const JOB: &str = "poll";

/// Headers of the poll of `target`, sent through `poll.cluster` (an ORIGINAL_DST cluster that
/// honours `x-envoy-original-dst-host`).
pub fn request_headers(poll: &Poll, target: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".to_string()),
        (":path", poll.path.clone()),
        (":authority", target.to_string()),
        ("x-envoy-original-dst-host", target.to_string()),
        ("accept", "application/json".to_string()),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub app: String,
    pub version: String,
}

/// A usable answer, or None (no answer, not 200, not the JSON, fields that could not be keys):
/// then the target is not refreshed and goes stale.
pub fn parse_answer(status: Option<u16>, body: &[u8]) -> Option<Answer> {
    if status != Some(200) {
        return None;
    }
    let a = read_answer(body)?;
    (is_token_text(&a.app) && is_token_text(&a.version)).then_some(a)
}

/// `{"app": …, "version": …}`; other keys are ignored.
fn read_answer(body: &[u8]) -> Option<Answer> {
    const WHAT: Struct = Struct {
        name: "Answer",
        names: &["app", "version"],
        required: 0b11,
        deny_unknown: false,
    };
    let mut r = Reader::new(body);
    let mut a = Answer {
        app: String::new(),
        version: String::new(),
    };
    r.fields(&WHAT, |r, i| {
        let s = r.string()?;
        if i == 0 {
            a.app = s;
        } else {
            a.version = s;
        }
        Ok(())
    })
    .ok()?;
    r.end().ok()?;
    Some(a)
}

/// Refreshes `target`'s record from its answer.
pub fn apply<S: SharedStore + ?Sized>(
    store: &mut S,
    cfg: &Config,
    target: &str,
    answer: &Answer,
    now_ms: u64,
) -> Result<Upserted, RegistryError> {
    // Canonical form, as push heartbeats store it, so both are one record.
    let address = target
        .parse::<std::net::SocketAddr>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| target.to_string());
    let r = Ident {
        pool: &cfg.pool,
        app: &answer.app,
        version: &answer.version,
        address: &address,
    };
    registry::upsert(store, &Scope::of(cfg), &r, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::list;
    use crate::core::store::MemoryStore;

    fn cfg() -> Config {
        Config::parse(
            br#"{"app":"checkout","pool":"pa","registry":{"stale_after_ms":3000,
                 "poll":{"targets":["127.0.0.1:8081"],"interval_ms":1000}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn answers_are_parsed_and_garbage_refused() {
        let ok = br#"{"app":"checkout","version":"2","extra":1}"#;
        assert_eq!(
            parse_answer(Some(200), ok),
            Some(Answer {
                app: "checkout".into(),
                version: "2".into()
            })
        );
        for (status, body) in [
            (Some(500), &ok[..]),
            (None, &ok[..]),
            (Some(200), b"not json"),
            (Some(200), br#"{"app":"checkout"}"#),
            (Some(200), br#"{"app":"checkout","version":2}"#),
            (Some(200), br#"{"app":"check out","version":"2"}"#),
            (Some(200), br#"{"app":"","version":"2"}"#),
        ] {
            assert_eq!(parse_answer(status, body), None, "{body:?}");
        }
    }

    #[test]
    fn an_answer_refreshes_the_target_and_silence_lets_it_expire() {
        let c = cfg();
        let mut s = MemoryStore::default();
        let a = parse_answer(Some(200), br#"{"app":"checkout","version":"1"}"#).unwrap();
        apply(&mut s, &c, "127.0.0.1:8081", &a, 1000).unwrap();
        let a2 = parse_answer(Some(200), br#"{"app":"checkout","version":"2"}"#).unwrap();
        apply(&mut s, &c, "127.0.0.1:8081", &a2, 2000).unwrap();
        let l = list(&mut s, &Scope::of(&c), 4000).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].pool.as_str(), l[0].version.as_str()), ("pa", "2"));
        let l = list(&mut s, &Scope::of(&c), 5000).unwrap();
        assert!(l.is_empty());
    }

    #[test]
    fn headers_target_the_address() {
        let c = cfg();
        let h = request_headers(c.registry.poll.as_ref().unwrap(), "127.0.0.1:8081");
        assert!(h.contains(&(":path", "/.well-known/mixmode/version".to_string())));
        assert!(h.contains(&("x-envoy-original-dst-host", "127.0.0.1:8081".to_string())));
        assert!(h.contains(&(":authority", "127.0.0.1:8081".to_string())));
    }
}
