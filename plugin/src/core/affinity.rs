//! Version affinity (docs/design.md#version-affinity), sans IO: the cookie that remembers a session's version after
//! a rescue, and the host hint that lets Envoy's stateful session filter send the session's next
//! requests to a server of that version. Randomness comes in as a parameter, like in
//! `core::redispatch`; the registry comes in as a `PeerSource` (`core::peers`).

use crate::core::config::Affinity;
use crate::core::counter::Counter;
use crate::core::etcd::b64_encode;
use crate::core::pairs::RawPairs;
use crate::core::peers::PeerSource;
use crate::core::signal::version_text;

/// RFC 6265 §4.1.1 `cookie-octet`: printable ASCII without DQUOTE, comma, semicolon, backslash.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// The `set-cookie` value that remembers `version`, or None when the version cannot be a cookie
/// value (it would be refused by browsers, or worse, split into attributes).
pub fn set_cookie(cfg: &Affinity, version: &str) -> Option<Vec<u8>> {
    if version.is_empty() || !version.bytes().all(is_cookie_octet) {
        return None;
    }
    let secure = if cfg.secure { "; Secure" } else { "" };
    Some(
        format!(
            "{}={version}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            cfg.cookie, cfg.max_age_s
        )
        .into_bytes(),
    )
}

/// The value of cookie `name` in `cookie` header values (several headers, several cookies each:
/// `a=1; b=2`). The first occurrence counts. A value that is not a version the filter would
/// have set (cookie-octets, the registry's version rules) is no value: a forged cookie can only
/// name a version, never smuggle bytes into a lookup.
pub fn cookie_version<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
) -> Option<&'a str> {
    let name = name.as_bytes();
    for header in headers {
        for pair in header.split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (Some(n), Some(v)) = (pair.get(..eq), pair.get(eq.saturating_add(1)..)) else {
                continue;
            };
            if n.trim_ascii() != name {
                continue;
            }
            let v = v.trim_ascii();
            // RFC 6265 allows the value in double quotes.
            let v = v
                .strip_prefix(b"\"")
                .and_then(|x| x.strip_suffix(b"\""))
                .unwrap_or(v);
            if v.is_empty() || !v.iter().all(|b| is_cookie_octet(*b)) {
                return None;
            }
            return version_text(v);
        }
    }
    None
}

/// The request header value Envoy's header-based stateful session reads: `base64("ip:port")`.
pub fn host_hint_value(address: &str) -> String {
    b64_encode(address.as_bytes())
}

/// What to do with a request's headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestPlan {
    /// Set `host_header` to this value (replacing any copy the client sent).
    pub hint: Option<String>,
    /// The peer (`ip:port`) the hint names: the request counts as a need of the cookie's version
    /// only if this peer served it ([`served_as_hinted`]).
    pub peer: Option<String>,
    /// Remove the client's `host_header` (only when there is no hint to write over it).
    pub remove_client_header: bool,
    pub counter: Option<Counter>,
}

impl RequestPlan {
    /// Nothing to do: the happy path makes no host call.
    pub fn is_noop(&self) -> bool {
        self.hint.is_none() && !self.remove_client_header && self.counter.is_none()
    }
}

/// What the request headers say (`raw`: the ABI's serialized map the filter already holds, so
/// reading it costs no host call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The version the affinity cookie names.
    pub version: Option<&'a str>,
    /// The client sent `host_header` itself.
    pub client_header: bool,
}

impl RequestFacts<'_> {
    /// Neither the cookie nor a forged header: the happy path, no lookup, no host call.
    pub fn is_nothing(&self) -> bool {
        self.version.is_none() && !self.client_header
    }
}

pub fn read_request<'a>(cfg: &Affinity, raw: &'a [u8]) -> RequestFacts<'a> {
    let mut client_header = false;
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in RawPairs::new(raw).map_while(Result::ok) {
        if name.eq_ignore_ascii_case(b"cookie") {
            cookies.push(value);
        } else if name.eq_ignore_ascii_case(cfg.host_header.as_bytes()) {
            client_header = true;
        }
    }
    RequestFacts {
        version: cookie_version(cookies, &cfg.cookie),
        client_header,
    }
}

/// Decides what the request gets: a hint toward a fresh peer of the cookie's version (chosen by
/// `peers` with the rescue's selection rule; `random` a fresh random number), and the removal
/// of a client's own `host_header`. Nothing is asked of `peers` without the cookie.
pub fn on_request(facts: &RequestFacts, peers: &mut dyn PeerSource, random: u64) -> RequestPlan {
    let mut plan = RequestPlan {
        remove_client_header: facts.client_header,
        ..RequestPlan::default()
    };
    let Some(version) = facts.version else {
        return plan;
    };
    match peers.pick(version, &[], random) {
        Some(peer) => {
            plan.hint = Some(host_hint_value(&peer));
            plan.peer = Some(peer);
            plan.remove_client_header = false;
            plan.counter = Some(Counter::AffinityRouted);
        }
        None => plan.counter = Some(Counter::AffinityMiss),
    }
    plan
}

/// Whether the hinted peer served the request: Envoy follows a hint only to a healthy member of
/// the cluster, so a server that has left the load balancer (draining) but is still registered
/// is hinted and not reached. Only a request the hinted server served needs the cookie's version
/// (docs/design.md#draining-by-demand); otherwise a cookie that outlived its session would keep
/// an old version needed for ever.
pub fn served_as_hinted(peer: &str, upstream: Option<&str>) -> bool {
    upstream == Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{Config, Selection};
    use crate::core::etcd::b64_decode;
    use crate::core::lookup::LookupCache;
    use crate::core::pairs::serialize_pairs;
    use crate::core::peers::RegistryPeers;
    use crate::core::registry::{upsert, Ident, Limits, Scope};
    use crate::core::store::MemoryStore;
    use std::collections::HashSet;

    fn affinity(extra: &str) -> Affinity {
        Config::parse(format!(r#"{{"app":"a","affinity":{{{extra}}}}}"#).as_bytes())
            .unwrap()
            .affinity
            .unwrap()
    }

    fn raw(list: &[(&str, &str)]) -> Vec<u8> {
        let v: Vec<(&[u8], &[u8])> = list
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        serialize_pairs(&v).unwrap()
    }

    /// Records what was asked; answers from a fixed list.
    struct Fixed {
        peers: Vec<&'static str>,
        asked: Vec<String>,
    }
    impl PeerSource for Fixed {
        fn pick(&mut self, version: &str, exclude: &[String], random: u64) -> Option<String> {
            assert!(exclude.is_empty());
            self.asked.push(version.to_string());
            if self.peers.is_empty() {
                return None;
            }
            Some(self.peers[(random % self.peers.len() as u64) as usize].to_string())
        }
    }

    /// What the glue does: read the facts, then decide.
    fn decide(a: &Affinity, raw: &[u8], peers: &mut dyn PeerSource, random: u64) -> RequestPlan {
        on_request(&read_request(a, raw), peers, random)
    }

    fn fixed(peers: &[&'static str]) -> Fixed {
        Fixed {
            peers: peers.to_vec(),
            asked: Vec::new(),
        }
    }

    #[test]
    fn set_cookie_carries_the_documented_attributes() {
        let v = set_cookie(&affinity(""), "2").unwrap();
        assert_eq!(
            v,
            b"mixmode-version=2; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax"
        );
        let v = set_cookie(
            &affinity(r#""cookie":"v","max_age_s":60,"secure":true"#),
            "2.1-rc",
        )
        .unwrap();
        assert_eq!(
            v,
            b"v=2.1-rc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn a_version_a_cookie_cannot_carry_is_never_set() {
        let a = affinity("");
        for bad in ["2;x", "\"2\"", "2,3", "a\\b", "2 3", "", "é", "2\t"] {
            assert_eq!(set_cookie(&a, bad), None, "{bad:?}");
        }
        // Every printable ASCII byte but the four excluded is carried.
        let all: String = (0x21u8..=0x7e)
            .filter(|b| !b"\",;\\".contains(b))
            .map(char::from)
            .collect();
        assert!(set_cookie(&a, &all).is_some());
    }

    #[test]
    fn cookie_found_among_several_cookies_and_headers() {
        let one: &[u8] = b"session=abc; mixmode-version=2; theme=dark";
        assert_eq!(cookie_version([one], "mixmode-version"), Some("2"));
        let a: &[u8] = b"session=abc";
        let b: &[u8] = b"theme=dark;mixmode-version=3";
        assert_eq!(cookie_version([a, b], "mixmode-version"), Some("3"));
        // The first occurrence counts.
        let c: &[u8] = b"mixmode-version=4";
        assert_eq!(cookie_version([c, b], "mixmode-version"), Some("4"));
        // Quoted values, spaces around the pair.
        let q: &[u8] = b"  mixmode-version=\"5\" ;x=1";
        assert_eq!(cookie_version([q], "mixmode-version"), Some("5"));
        // Names are exact: neither a prefix nor a suffix nor another case matches.
        let other: &[u8] = b"xmixmode-version=1; mixmode-version-old=1; MIXMODE-VERSION=1";
        assert_eq!(cookie_version([other], "mixmode-version"), None);
        assert_eq!(cookie_version(Vec::<&[u8]>::new(), "mixmode-version"), None);
    }

    #[test]
    fn a_cookie_value_that_is_no_version_is_ignored() {
        for bad in [
            &b"mixmode-version="[..],
            b"mixmode-version=a\\b",
            b"mixmode-version=\xff",
            b"mixmode-version=\"\"",
            b"mixmode-version",
        ] {
            assert_eq!(cookie_version([bad], "mixmode-version"), None, "{bad:?}");
        }
        let long = format!("mixmode-version={}", "9".repeat(200));
        assert_eq!(cookie_version([long.as_bytes()], "mixmode-version"), None);
    }

    #[test]
    fn hint_is_base64_of_ip_port() {
        assert_eq!(host_hint_value("127.0.0.1:18083"), "MTI3LjAuMC4xOjE4MDgz");
        assert_eq!(
            b64_decode(&host_hint_value("[::1]:8080")).unwrap(),
            b"[::1]:8080"
        );
    }

    #[test]
    fn no_cookie_no_lookup_no_action() {
        let a = affinity("");
        let mut peers = fixed(&["10.0.0.2:80"]);
        let plan = decide(
            &a,
            &raw(&[(":path", "/"), ("cookie", "session=1")]),
            &mut peers,
            0,
        );
        assert!(plan.is_noop(), "{plan:?}");
        let map = raw(&[("cookie", "session=1")]);
        assert!(read_request(&a, &map).is_nothing());
        assert!(
            peers.asked.is_empty(),
            "no registry read without the cookie"
        );
    }

    #[test]
    fn cookie_hints_a_peer_of_its_version() {
        let a = affinity("");
        let mut peers = fixed(&["10.0.0.2:80"]);
        let plan = decide(
            &a,
            &raw(&[("cookie", "session=1"), ("cookie", "mixmode-version=2")]),
            &mut peers,
            0,
        );
        assert_eq!(plan.hint.as_deref(), Some("MTAuMC4wLjI6ODA="));
        assert_eq!(plan.counter, Some(Counter::AffinityRouted));
        assert!(!plan.remove_client_header);
        assert_eq!(peers.asked, vec!["2"]);
    }

    #[test]
    fn no_fresh_peer_is_a_miss_without_hint() {
        let a = affinity("");
        let mut peers = fixed(&[]);
        let plan = decide(&a, &raw(&[("cookie", "mixmode-version=7")]), &mut peers, 0);
        assert_eq!(
            plan,
            RequestPlan {
                hint: None,
                peer: None,
                remove_client_header: false,
                counter: Some(Counter::AffinityMiss)
            }
        );
    }

    #[test]
    fn the_clients_host_header_never_survives() {
        let a = affinity(r#""host_header":"X-Pin""#);
        let forged = host_hint_value("10.9.9.9:80");
        // Without the cookie: removed.
        let mut peers = fixed(&["10.0.0.2:80"]);
        let plan = decide(&a, &raw(&[("X-PIN", &forged)]), &mut peers, 0);
        assert!(plan.remove_client_header && plan.hint.is_none());
        // With the cookie: written over by the filter's own hint.
        let plan = decide(
            &a,
            &raw(&[("x-pin", &forged), ("cookie", "mixmode-version=2")]),
            &mut peers,
            0,
        );
        assert_eq!(plan.hint.as_deref(), Some("MTAuMC4wLjI6ODA="));
        // With the cookie but no peer: removed, and counted a miss.
        let mut none = fixed(&[]);
        let plan = decide(
            &a,
            &raw(&[("x-pin", &forged), ("cookie", "mixmode-version=2")]),
            &mut none,
            0,
        );
        assert!(plan.remove_client_header && plan.hint.is_none());
        assert_eq!(plan.counter, Some(Counter::AffinityMiss));
    }

    #[test]
    fn a_forged_cookie_only_names_a_version_of_the_registry() {
        // The hint always comes from the registry: a version nobody registered is a miss, and
        // a cookie cannot name an address.
        let a = affinity("");
        let mut store = MemoryStore::default();
        let scope = Scope::new(
            &["test"],
            Limits {
                stale_after_ms: 1000,
                max_records: 10,
            },
        );
        for (version, address) in [
            ("2", "10.0.0.2:80"),
            ("1", "10.0.0.1:80"),
            ("2", "10.0.0.3:80"),
        ] {
            let r = Ident {
                pool: "default",
                app: "a",
                version,
                address,
            };
            upsert(&mut store, &scope, &r, 0).unwrap();
        }
        let mut cache = LookupCache::default();
        let mut peers = RegistryPeers {
            store: &mut store,
            cache: &mut cache,
            pool: "default",
            app: "a",
            cross_pool: false,
            scope: &scope,
            selection: Selection::Random,
            now_ms: 10,
        };
        let hints: HashSet<String> = (0..64)
            .filter_map(|r| {
                decide(&a, &raw(&[("cookie", "mixmode-version=2")]), &mut peers, r).hint
            })
            .collect();
        assert_eq!(
            hints,
            HashSet::from([
                host_hint_value("10.0.0.2:80"),
                host_hint_value("10.0.0.3:80")
            ]),
            "the rescue's random rule reaches every fresh peer of the version"
        );
        for forged in [
            "mixmode-version=10.0.0.9:80",
            "mixmode-version=3",
            "mixmode-version=MTAuMC4wLjk6ODA=",
        ] {
            let plan = decide(&a, &raw(&[("cookie", forged)]), &mut peers, 1);
            assert_eq!(plan.hint, None, "{forged}");
            assert_eq!(plan.counter, Some(Counter::AffinityMiss));
        }
        // A stale record is never hinted.
        peers.now_ms = 5000;
        let plan = decide(&a, &raw(&[("cookie", "mixmode-version=2")]), &mut peers, 1);
        assert_eq!(plan.counter, Some(Counter::AffinityMiss));
    }

    #[test]
    fn malformed_header_map_is_no_cookie() {
        let a = affinity("");
        let mut peers = fixed(&["10.0.0.2:80"]);
        assert!(decide(&a, &[9, 0, 0, 0, 1], &mut peers, 0).is_noop());
        assert!(decide(&a, &[], &mut peers, 0).is_noop());
    }

    #[test]
    fn a_need_only_when_the_hinted_peer_served() {
        assert!(served_as_hinted("127.0.0.1:8081", Some("127.0.0.1:8081")));
        assert!(!served_as_hinted("127.0.0.1:8081", Some("127.0.0.1:8082")));
        assert!(!served_as_hinted("127.0.0.1:8081", None));
    }
}
