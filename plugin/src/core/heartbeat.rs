//! The push heartbeat API (docs/design.md#heartbeat-api): POST/DELETE/GET answered by the filter itself,
//! and the demand listing `GET ?demand` (docs/design.md#draining-by-demand).

use crate::core::config::{is_token_text, Config};
use crate::core::demand;
use crate::core::json::{self, Reader, Struct};
use crate::core::registry::{self, Ident, Record, RecordId, RegistryError, Scope, SharedStore};
use std::net::SocketAddr;

/// A heartbeat body larger than this is refused (400).
pub const MAX_BODY: usize = 4096;

pub struct Request<'a> {
    pub method: &'a str,
    pub authorization: Option<&'a [u8]>,
    pub body: &'a [u8],
    /// The body went past `MAX_BODY` (the glue stops reading it then).
    pub body_too_large: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A POST or DELETE changed the registry.
    Accepted,
    /// Refused (4xx) or failed (5xx): the registry is unchanged.
    Rejected,
    /// A GET listing.
    Listed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// JSON, or empty for 204.
    pub body: String,
    pub outcome: Outcome,
    /// The stored record count after a change (for the gauge).
    pub records: Option<u64>,
}

/// `{"error": reason}`.
fn error(status: u16, reason: &str) -> Answer {
    let mut body = String::from("{");
    json::push_key(&mut body, "error");
    json::push_str(&mut body, reason);
    body.push('}');
    Answer {
        status,
        body,
        outcome: Outcome::Rejected,
        records: None,
    }
}

/// A POST or DELETE body; other keys are ignored.
struct Body {
    app: String,
    version: Option<String>,
    address: String,
    pool: Option<String>,
}

fn read_body(bytes: &[u8]) -> Result<Body, json::Error> {
    const WHAT: Struct = Struct {
        name: "Body",
        names: &["app", "version", "address", "pool"],
        required: 0b0101,
        deny_unknown: false,
    };
    let mut r = Reader::new(bytes);
    let mut b = Body {
        app: String::new(),
        version: None,
        address: String::new(),
        pool: None,
    };
    r.fields(&WHAT, |r, i| {
        match i {
            0 => b.app = r.string()?,
            1 => b.version = r.opt_string()?,
            2 => b.address = r.string()?,
            _ => b.pool = r.opt_string()?,
        }
        Ok(())
    })?;
    r.end()?;
    Ok(b)
}

/// `{"records": [...]}`, each record's fields in the order the API documents.
fn listing(records: &[Record]) -> String {
    let mut out = String::from("{");
    json::push_key(&mut out, "records");
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        for (key, value) in [
            ("pool", &r.pool),
            ("app", &r.app),
            ("version", &r.version),
            ("address", &r.address),
        ] {
            json::push_key(&mut out, key);
            json::push_str(&mut out, value);
            out.push(',');
        }
        json::push_key(&mut out, "first_seen_ms");
        json::push_u64(&mut out, r.first_seen_ms);
        out.push(',');
        json::push_key(&mut out, "last_seen_ms");
        json::push_u64(&mut out, r.last_seen_ms);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// `{"demand": [...]}`, each line's fields in the order the API documents.
fn demand_listing(lines: &[demand::Demand]) -> String {
    let mut out = String::from("{");
    json::push_key(&mut out, "demand");
    out.push('[');
    for (i, d) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        for (key, value) in [("pool", &d.pool), ("app", &d.app), ("version", &d.version)] {
            json::push_key(&mut out, key);
            json::push_str(&mut out, value);
            out.push(',');
        }
        json::push_key(&mut out, "last_needed_ms");
        json::push_u64(&mut out, d.last_needed_ms);
        out.push(',');
        json::push_key(&mut out, "needed_60s");
        json::push_u64(&mut out, d.needed_60s);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// The query asks for the demand listing: one of its `&`-separated parameters is named `demand`
/// (`?demand`, `?demand=1`).
pub fn is_demand_query(query: &[u8]) -> bool {
    query
        .split(|b| *b == b'&')
        .any(|p| p.split(|b| *b == b'=').next() == Some(b"demand".as_slice()))
}

/// Constant-time equality: the time taken does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else {
        return false;
    };
    let value = value.trim_ascii();
    let Some((scheme, rest)) = value.split_first_chunk::<7>() else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && constant_time_eq(rest.trim_ascii(), token.as_bytes())
}

fn check_field(name: &str, value: &str) -> Result<(), Answer> {
    if value.chars().any(char::is_control) {
        return Err(error(400, &format!("control characters in `{name}`")));
    }
    if !is_token_text(value) {
        return Err(error(
            400,
            &format!("`{name}` must be 1 to 128 printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

struct Parsed {
    pool: String,
    app: String,
    version: Option<String>,
    address: String,
}

fn parse_body(cfg: &Config, body: &[u8], need_version: bool) -> Result<Parsed, Answer> {
    let b = read_body(body).map_err(|e| error(400, &format!("invalid JSON body: {e}")))?;
    check_field("app", &b.app)?;
    if let Some(p) = &b.pool {
        check_field("pool", p)?;
    }
    match &b.version {
        Some(v) => check_field("version", v)?,
        None if need_version => return Err(error(400, "missing field `version`")),
        None => {}
    }
    if b.address.chars().any(char::is_control) {
        return Err(error(400, "control characters in `address`"));
    }
    // Only a literal ip:port: a host name would make the registry depend on DNS.
    let addr: SocketAddr = b
        .address
        .parse()
        .map_err(|_| error(400, "`address` must be ip:port"))?;
    if addr.port() == 0 {
        return Err(error(400, "`address` must have a non-zero port"));
    }
    if !cfg
        .registry
        .allowed_cidrs
        .iter()
        .any(|n| n.contains(addr.ip()))
    {
        return Err(error(403, "`address` is outside registry.allowed_cidrs"));
    }
    Ok(Parsed {
        pool: b.pool.unwrap_or_else(|| cfg.pool.clone()),
        app: b.app,
        version: b.version,
        address: addr.to_string(),
    })
}

fn store_error(e: RegistryError, cfg: &Config) -> Answer {
    match e {
        RegistryError::Full => error(
            429,
            &format!(
                "registry full: max_records ({}) reached",
                cfg.registry.max_records
            ),
        ),
        RegistryError::Busy | RegistryError::Store => error(503, "registry busy, retry"),
    }
}

/// Answers one heartbeat request (no query string).
pub fn handle<S: SharedStore>(cfg: &Config, req: &Request, store: &mut S, now_ms: u64) -> Answer {
    handle_query(cfg, req, None, store, now_ms)
}

/// Answers one request for the heartbeat path; `query` is what followed `?` in its path.
pub fn handle_query<S: SharedStore>(
    cfg: &Config,
    req: &Request,
    query: Option<&[u8]>,
    store: &mut S,
    now_ms: u64,
) -> Answer {
    if !authorized(req.authorization, &cfg.heartbeat.token) {
        return error(401, "missing or wrong bearer token");
    }
    let scope = Scope::of(cfg);
    if query.is_some_and(is_demand_query) {
        if req.method != "GET" {
            return error(405, "method not allowed (GET for ?demand)");
        }
        return match demand::list(store, &scope, now_ms) {
            Ok(demand) => Answer {
                status: 200,
                body: demand_listing(&demand),
                outcome: Outcome::Listed,
                records: None,
            },
            Err(e) => store_error(e, cfg),
        };
    }
    match req.method {
        "GET" => match registry::list(store, &scope, now_ms) {
            Ok(records) => Answer {
                status: 200,
                body: listing(&records),
                outcome: Outcome::Listed,
                records: None,
            },
            Err(e) => store_error(e, cfg),
        },
        "POST" | "DELETE" => {
            if req.body_too_large || req.body.len() > MAX_BODY {
                return error(400, "body larger than 4096 bytes");
            }
            let is_post = req.method == "POST";
            let p = match parse_body(cfg, req.body, is_post) {
                Ok(p) => p,
                Err(a) => return a,
            };
            let result = if is_post {
                let r = Ident {
                    pool: &p.pool,
                    app: &p.app,
                    version: p.version.as_deref().unwrap_or_default(),
                    address: &p.address,
                };
                registry::upsert(store, &scope, &r, now_ms).map(|u| u.records)
            } else {
                let id = RecordId {
                    pool: &p.pool,
                    app: &p.app,
                    address: &p.address,
                };
                registry::remove(store, &scope, &id, now_ms)
                    .and_then(|_| registry::count(store, &scope).map(Some))
            };
            match result {
                Ok(records) => Answer {
                    status: 204,
                    body: String::new(),
                    outcome: Outcome::Accepted,
                    records,
                },
                Err(e) => store_error(e, cfg),
            }
        }
        _ => error(405, "method not allowed (POST, DELETE or GET)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::MemoryStore;

    fn cfg() -> Config {
        Config::parse(br#"{"app":"checkout","pool":"pool-a","heartbeat":{"token":"s3cret"},"registry":{"max_records":2}}"#)
            .unwrap()
    }

    fn req<'a>(method: &'a str, auth: Option<&'a str>, body: &'a str) -> Request<'a> {
        Request {
            method,
            authorization: auth.map(str::as_bytes),
            body: body.as_bytes(),
            body_too_large: false,
        }
    }

    const OK: Option<&str> = Some("Bearer s3cret");
    const BODY: &str = r#"{"app":"checkout","version":"2","address":"10.0.0.7:8080"}"#;

    fn listing(store: &mut MemoryStore, now: u64) -> serde_json::Value {
        let a = handle(&cfg(), &req("GET", OK, ""), store, now);
        assert_eq!(a.status, 200);
        serde_json::from_str(&a.body).unwrap()
    }

    #[test]
    fn post_then_get_then_delete() {
        let mut s = MemoryStore::default();
        let a = handle(&cfg(), &req("POST", OK, BODY), &mut s, 1000);
        assert_eq!(
            (a.status, a.outcome, a.records),
            (204, Outcome::Accepted, Some(1))
        );
        assert!(a.body.is_empty());
        let l = listing(&mut s, 1500);
        assert_eq!(
            l,
            serde_json::json!({"records":[{"pool":"pool-a","app":"checkout","version":"2",
                "address":"10.0.0.7:8080","first_seen_ms":1000,"last_seen_ms":1000}]})
        );
        let a = handle(&cfg(), &req("DELETE", OK, BODY), &mut s, 2000);
        assert_eq!((a.status, a.records), (204, Some(0)));
        assert_eq!(listing(&mut s, 2000), serde_json::json!({"records":[]}));
    }

    #[test]
    fn explicit_pool_and_ipv6_are_kept_canonical() {
        let mut s = MemoryStore::default();
        let body =
            r#"{"app":"checkout","version":"2","address":"[0:0:0:0:0:0:0:1]:80","pool":"pool-b"}"#;
        assert_eq!(
            handle(&cfg(), &req("POST", OK, body), &mut s, 0).status,
            204
        );
        let l = listing(&mut s, 0);
        assert_eq!(l["records"][0]["pool"], "pool-b");
        assert_eq!(l["records"][0]["address"], "[::1]:80");
    }

    fn assert_rejected(a: &Answer, status: u16, s: &MemoryStore) {
        assert_eq!(a.status, status, "{}", a.body);
        assert_eq!(a.outcome, Outcome::Rejected);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            a.body
        );
        assert_eq!(s.writes, 0, "nothing is stored on an error");
    }

    #[test]
    fn missing_or_wrong_token_is_401() {
        for auth in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cretx"),
        ] {
            let mut s = MemoryStore::default();
            let a = handle(&cfg(), &req("POST", auth, BODY), &mut s, 0);
            assert_rejected(&a, 401, &s);
            let a = handle(&cfg(), &req("GET", auth, ""), &mut s, 0);
            assert_rejected(&a, 401, &s);
        }
        let mut s = MemoryStore::default();
        assert_eq!(
            handle(
                &cfg(),
                &req("POST", Some("bearer  s3cret "), BODY),
                &mut s,
                0
            )
            .status,
            204
        );
    }

    #[test]
    fn address_outside_the_allow_list_is_403() {
        let mut s = MemoryStore::default();
        let body = r#"{"app":"checkout","version":"2","address":"8.8.8.8:80"}"#;
        assert_rejected(&handle(&cfg(), &req("POST", OK, body), &mut s, 0), 403, &s);
    }

    #[test]
    fn malformed_bodies_are_400() {
        let bad = [
            "not json",
            r#"{"app":"checkout","version":"2"}"#,
            r#"{"app":"checkout","address":"10.0.0.1:80"}"#,
            r#"{"app":"","version":"2","address":"10.0.0.1:80"}"#,
            r#"{"app":"checkout","version":2,"address":"10.0.0.1:80"}"#,
            r#"{"app":"checkout","version":"2","address":"localhost:80"}"#,
            r#"{"app":"checkout","version":"2","address":"10.0.0.1"}"#,
            r#"{"app":"checkout","version":"2","address":"10.0.0.1:0"}"#,
            r#"{"app":"check\nout","version":"2","address":"10.0.0.1:80"}"#,
            r#"{"app":"checkout","version":"2\u0000","address":"10.0.0.1:80"}"#,
            r#"{"app":"checkout","version":"2","address":"10.0.0.1:80\r\n"}"#,
            r#"{"app":"checkout","version":"2","address":"10.0.0.1:80","pool":"a\tb"}"#,
        ];
        for body in bad {
            let mut s = MemoryStore::default();
            assert_rejected(&handle(&cfg(), &req("POST", OK, body), &mut s, 0), 400, &s);
        }
    }

    #[test]
    fn oversized_body_is_400() {
        let mut s = MemoryStore::default();
        let big = format!(
            r#"{{"app":"checkout","version":"2","address":"10.0.0.1:80","x":"{}"}}"#,
            "a".repeat(5000)
        );
        assert_rejected(&handle(&cfg(), &req("POST", OK, &big), &mut s, 0), 400, &s);
        let mut r = req("POST", OK, BODY);
        r.body_too_large = true;
        assert_rejected(&handle(&cfg(), &r, &mut s, 0), 400, &s);
    }

    #[test]
    fn cap_gives_429_and_changes_nothing() {
        let mut s = MemoryStore::default();
        for i in 1..=2 {
            let body = format!(r#"{{"app":"checkout","version":"2","address":"10.0.0.{i}:80"}}"#);
            assert_eq!(
                handle(&cfg(), &req("POST", OK, &body), &mut s, 0).status,
                204
            );
        }
        let before = s.map.clone();
        let body = r#"{"app":"checkout","version":"2","address":"10.0.0.3:80"}"#;
        let a = handle(&cfg(), &req("POST", OK, body), &mut s, 0);
        assert_eq!(a.status, 429);
        assert!(a.body.contains("\"error\""));
        assert_eq!(s.map, before);
    }

    #[test]
    fn other_methods_are_405() {
        let mut s = MemoryStore::default();
        assert_rejected(&handle(&cfg(), &req("PUT", OK, BODY), &mut s, 0), 405, &s);
    }

    #[test]
    fn delete_needs_no_version() {
        let mut s = MemoryStore::default();
        handle(&cfg(), &req("POST", OK, BODY), &mut s, 0);
        let body = r#"{"app":"checkout","address":"10.0.0.7:8080"}"#;
        assert_eq!(
            handle(&cfg(), &req("DELETE", OK, body), &mut s, 0).records,
            Some(0)
        );
    }

    fn demand(store: &mut MemoryStore, auth: Option<&str>, q: &str, now: u64) -> Answer {
        handle_query(
            &cfg(),
            &req("GET", auth, ""),
            Some(q.as_bytes()),
            store,
            now,
        )
    }

    #[test]
    fn demand_listing_shows_recorded_needs() {
        let mut s = MemoryStore::default();
        let a = demand(&mut s, OK, "demand", 0);
        assert_eq!((a.status, a.outcome), (200, Outcome::Listed));
        assert_eq!(a.body, r#"{"demand":[]}"#);
        let scope = Scope::of(&cfg());
        let need = demand::Need {
            pool: "pool-a",
            app: "checkout",
            version: "1",
        };
        demand::record(&mut s, &scope, &need, 5_000, 1).unwrap();
        demand::record(&mut s, &scope, &need, 6_000, 1).unwrap();
        let a = demand(&mut s, OK, "demand", 7_000);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"demand":[{"pool":"pool-a","app":"checkout","version":"1",
                "last_needed_ms":6000,"needed_60s":2}]})
        );
        // `?demand=1` and other parameters beside it ask for the same listing.
        assert_eq!(demand(&mut s, OK, "x=1&demand=1", 7_000).body, a.body);
        // Any other query is the records listing.
        let other = demand(&mut s, OK, "demands", 7_000);
        assert!(other.body.starts_with(r#"{"records""#), "{}", other.body);
    }

    #[test]
    fn demand_listing_needs_the_token_and_a_get() {
        let mut s = MemoryStore::default();
        for auth in [None, Some("Bearer nope"), Some("s3cret")] {
            assert_rejected(&demand(&mut s, auth, "demand", 0), 401, &s);
        }
        let a = handle_query(&cfg(), &req("POST", OK, BODY), Some(b"demand"), &mut s, 0);
        assert_rejected(&a, 405, &s);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
