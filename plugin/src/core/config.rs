//! Plugin configuration (docs/design.md#configuration): every default, validation with the full field path.

use crate::core::cidr::Cidr;
use std::net::SocketAddr;

/// A configuration error: `path` is the full field path (`redispatch.max_attempts`), empty for
/// the document itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Random,
    Freshest,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app: String,
    pub pool: String,
    pub detect: Detect,
    pub redispatch: Redispatch,
    pub registry: Registry,
    pub heartbeat: Heartbeat,
    /// Version affinity (docs/design.md#version-affinity); absent = off.
    pub affinity: Option<Affinity>,
    pub demand: DemandSettings,
}

#[derive(Debug, Clone)]
pub struct Detect {
    pub statuses: Vec<u16>,
    pub session_version_header: String,
    pub app_version_header: String,
}

impl Default for Detect {
    fn default() -> Self {
        Detect {
            statuses: vec![409],
            session_version_header: "x-session-version".into(),
            app_version_header: "x-app-version".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Redispatch {
    pub cluster: String,
    pub max_attempts: u32,
    pub deadline_ms: u64,
    pub attempt_timeout_ms: u32,
    pub selection: Selection,
    pub max_replay_body_bytes: usize,
    /// The replay copies one VM holds at once (docs/design.md#registry-invariants); see `core::budget`.
    pub max_buffered_bytes: usize,
    pub retry_timeouts_for_all_methods: bool,
}

impl Default for Redispatch {
    fn default() -> Self {
        Redispatch {
            cluster: "mixmode_peers".into(),
            max_attempts: 5,
            deadline_ms: 30_000,
            attempt_timeout_ms: 5_000,
            selection: Selection::Random,
            max_replay_body_bytes: 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            retry_timeouts_for_all_methods: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub stale_after_ms: u64,
    pub max_records: u32,
    /// `allowed_cidrs` in the JSON.
    pub allowed_cidrs_text: Vec<String>,
    /// Parsed from `allowed_cidrs_text` by `validate`.
    pub allowed_cidrs: Vec<Cidr>,
    pub cross_pool: bool,
    pub poll: Option<Poll>,
    pub etcd: Option<Etcd>,
}

pub const DEFAULT_ALLOWED_CIDRS: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

impl Default for Registry {
    fn default() -> Self {
        Registry {
            stale_after_ms: 15_000,
            max_records: 10_000,
            allowed_cidrs_text: DEFAULT_ALLOWED_CIDRS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            allowed_cidrs: Vec::new(),
            cross_pool: false,
            poll: None,
            etcd: None,
        }
    }
}

/// Pull heartbeats (docs/design.md#pull-polls).
#[derive(Debug, Clone)]
pub struct Poll {
    pub targets: Vec<String>,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u32,
    pub cluster: String,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            targets: Vec::new(),
            path: default_poll_path(),
            interval_ms: default_poll_interval(),
            timeout_ms: default_poll_timeout(),
            cluster: default_cluster(),
        }
    }
}

/// The etcd mirror (docs/design.md#etcd-mirror).
#[derive(Debug, Clone)]
pub struct Etcd {
    pub cluster: String,
    pub prefix: String,
    pub poll_interval_ms: u64,
    pub timeout_ms: u32,
}

impl Default for Etcd {
    fn default() -> Self {
        Etcd {
            cluster: default_etcd_cluster(),
            prefix: default_etcd_prefix(),
            poll_interval_ms: default_etcd_interval(),
            timeout_ms: default_poll_timeout(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub path: String,
    pub token: String,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            path: "/.well-known/mixmode/heartbeat".into(),
            token: EXAMPLE_TOKEN.into(),
        }
    }
}

/// Version affinity (docs/design.md#version-affinity): the session's version in a cookie, a host hint for Envoy's
/// stateful session filter.
#[derive(Debug, Clone)]
pub struct Affinity {
    /// The cookie that carries the session's version.
    pub cookie: String,
    pub max_age_s: u64,
    /// The request header Envoy's header-based stateful session reads (`base64("ip:port")`).
    pub host_header: String,
    /// Adds `; Secure` to the cookie.
    pub secure: bool,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            cookie: "mixmode-version".into(),
            max_age_s: 1800,
            host_header: "x-mixmode-host".into(),
            secure: false,
        }
    }
}

/// How needs are recorded (docs/design.md#draining-by-demand).
#[derive(Debug, Clone)]
pub struct DemandSettings {
    /// A VM writes a version's need at most once per this window, stamped with the window's
    /// end (`core::demand::ledger`); 0 writes every need.
    pub coalesce_ms: u64,
}

/// Above this a window would hide a drain's quiet period: `--quiet-ms` is 500 ms and more.
pub const MAX_COALESCE_MS: u64 = 1_000;

impl Default for DemandSettings {
    fn default() -> Self {
        DemandSettings { coalesce_ms: 100 }
    }
}

fn default_poll_path() -> String {
    "/.well-known/mixmode/version".into()
}
fn default_poll_interval() -> u64 {
    5_000
}
fn default_poll_timeout() -> u32 {
    1_000
}
fn default_cluster() -> String {
    "mixmode_peers".into()
}
fn default_etcd_cluster() -> String {
    "etcd".into()
}
fn default_etcd_prefix() -> String {
    "/mixmode/".into()
}
fn default_etcd_interval() -> u64 {
    1_000
}

/// Values that end up in registry keys and headers: short, printable ASCII, no spaces.
pub const MAX_NAME_LEN: usize = 128;

pub fn is_token_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Above this a budget cannot hold: the VM's whole linear memory is 4 GiB on wasm32.
pub const MAX_BUFFERED_BYTES: usize = 1 << 31;

/// The example's token: anyone who read the README knows it.
pub const EXAMPLE_TOKEN: &str = "change-me";

impl Config {
    /// What a valid configuration should still change, one sentence each, naming the field: the
    /// filter logs them as warnings at configure time.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.heartbeat.token == EXAMPLE_TOKEN {
            w.push(format!(
                "heartbeat.token: is the example's {EXAMPLE_TOKEN:?}: anyone who can reach the \
                 heartbeat listener can register an address that then receives users' requests; \
                 set a secret token"
            ));
        }
        w
    }

    pub(crate) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.app.is_empty() {
            return Err(err("app", "must not be empty"));
        }
        if !is_token_text(&self.app) {
            return Err(err(
                "app",
                "must be at most 128 printable ASCII characters without spaces",
            ));
        }
        if !is_token_text(&self.pool) {
            return Err(err(
                "pool",
                "must be 1 to 128 printable ASCII characters without spaces",
            ));
        }

        let d = &mut self.detect;
        if d.statuses.is_empty() {
            return Err(err("detect.statuses", "must list at least one status"));
        }
        for (i, s) in d.statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(err(
                    &format!("detect.statuses[{i}]"),
                    "must be an HTTP status (100-599)",
                ));
            }
        }
        d.session_version_header = d.session_version_header.to_ascii_lowercase();
        d.app_version_header = d.app_version_header.to_ascii_lowercase();
        if !is_header_name(&d.session_version_header) {
            return Err(err(
                "detect.session_version_header",
                "must be a header name (letters, digits, '-', '_')",
            ));
        }
        if !is_header_name(&d.app_version_header) {
            return Err(err(
                "detect.app_version_header",
                "must be a header name (letters, digits, '-', '_')",
            ));
        }

        let r = &self.redispatch;
        if r.cluster.is_empty() {
            return Err(err("redispatch.cluster", "must not be empty"));
        }
        if r.max_attempts == 0 {
            return Err(err("redispatch.max_attempts", "must be at least 1"));
        }
        if r.deadline_ms == 0 {
            return Err(err("redispatch.deadline_ms", "must be at least 1"));
        }
        // Envoy reads a call timeout of 0 as "no timeout at all".
        if r.attempt_timeout_ms == 0 {
            return Err(err("redispatch.attempt_timeout_ms", "must be at least 1"));
        }
        if r.max_buffered_bytes < r.max_replay_body_bytes {
            return Err(err(
                "redispatch.max_buffered_bytes",
                format!(
                    "must be at least redispatch.max_replay_body_bytes ({}): a body that size \
                     could never be kept",
                    r.max_replay_body_bytes
                ),
            ));
        }
        if r.max_buffered_bytes > MAX_BUFFERED_BYTES {
            return Err(err(
                "redispatch.max_buffered_bytes",
                format!(
                    "must be at most {MAX_BUFFERED_BYTES} (half of wasm32's 4 GiB address space)"
                ),
            ));
        }

        let g = &mut self.registry;
        if g.stale_after_ms == 0 {
            return Err(err("registry.stale_after_ms", "must be at least 1"));
        }
        if g.max_records == 0 {
            return Err(err("registry.max_records", "must be at least 1"));
        }
        let mut nets = Vec::with_capacity(g.allowed_cidrs_text.len());
        for (i, text) in g.allowed_cidrs_text.iter().enumerate() {
            match Cidr::parse(text) {
                Some(n) => nets.push(n),
                None => {
                    return Err(err(
                        &format!("registry.allowed_cidrs[{i}]"),
                        format!("not a CIDR block: {text:?}"),
                    ))
                }
            }
        }
        g.allowed_cidrs = nets;
        if let Some(p) = &g.poll {
            for (i, t) in p.targets.iter().enumerate() {
                if t.parse::<SocketAddr>().is_err() {
                    return Err(err(
                        &format!("registry.poll.targets[{i}]"),
                        format!("not an ip:port address: {t:?}"),
                    ));
                }
            }
            if !p.path.starts_with('/') {
                return Err(err("registry.poll.path", "must start with '/'"));
            }
            if p.interval_ms == 0 {
                return Err(err("registry.poll.interval_ms", "must be at least 1"));
            }
            if p.interval_ms >= g.stale_after_ms {
                return Err(err(
                    "registry.poll.interval_ms",
                    "must be below registry.stale_after_ms (records would go stale between polls)",
                ));
            }
            if p.timeout_ms == 0 {
                return Err(err("registry.poll.timeout_ms", "must be at least 1"));
            }
            if p.cluster.is_empty() {
                return Err(err("registry.poll.cluster", "must not be empty"));
            }
        }
        if let Some(e) = &g.etcd {
            if e.cluster.is_empty() {
                return Err(err("registry.etcd.cluster", "must not be empty"));
            }
            if e.prefix.is_empty() {
                return Err(err("registry.etcd.prefix", "must not be empty"));
            }
            if e.poll_interval_ms == 0 {
                return Err(err("registry.etcd.poll_interval_ms", "must be at least 1"));
            }
            if e.poll_interval_ms >= g.stale_after_ms {
                return Err(err(
                    "registry.etcd.poll_interval_ms",
                    "must be below registry.stale_after_ms (records would go stale between polls)",
                ));
            }
            if e.timeout_ms == 0 {
                return Err(err("registry.etcd.timeout_ms", "must be at least 1"));
            }
        }

        let h = &self.heartbeat;
        if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return Err(err(
                "heartbeat.path",
                "must start with '/' and hold no spaces or control characters",
            ));
        }
        if h.token.is_empty() {
            return Err(err("heartbeat.token", "must not be empty"));
        }
        if let Some(a) = &mut self.affinity {
            validate_affinity(a)?;
        }
        validate_demand(&self.demand)?;
        Ok(())
    }
}

/// RFC 9110 `token` characters (what a cookie name and a header name are made of).
fn is_rfc_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_affinity(a: &mut Affinity) -> Result<(), ConfigError> {
    if !is_rfc_token(&a.cookie) {
        return Err(err(
            "affinity.cookie",
            "must be a cookie name: 1 to 128 token characters (letters, digits, !#$%&'*+-.^_`|~)",
        ));
    }
    // Envoy matches header names in lower case; one spelling for the filter and the yaml.
    a.host_header = a.host_header.to_ascii_lowercase();
    if !is_rfc_token(&a.host_header) {
        return Err(err(
            "affinity.host_header",
            "must be a header name: 1 to 128 token characters (letters, digits, !#$%&'*+-.^_`|~)",
        ));
    }
    // The filter removes a client's copy of this header: never one the request needs.
    if [
        "cookie",
        "host",
        "authorization",
        "content-length",
        "content-type",
        "transfer-encoding",
        "x-mixmode",
        "x-mixmode-attempt",
        "x-envoy-original-dst-host",
    ]
    .contains(&a.host_header.as_str())
    {
        return Err(err(
            "affinity.host_header",
            format!(
                "{:?} is a header requests need; choose a name of its own",
                a.host_header
            ),
        ));
    }
    if a.max_age_s == 0 {
        return Err(err("affinity.max_age_s", "must be at least 1"));
    }
    Ok(())
}

fn validate_demand(d: &DemandSettings) -> Result<(), ConfigError> {
    if d.coalesce_ms > MAX_COALESCE_MS {
        return Err(err(
            "demand.coalesce_ms",
            format!("must be at most {MAX_COALESCE_MS} (0 writes every need)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s.as_bytes())
    }

    fn error_of(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = parse(r#"{"app":"checkout"}"#).unwrap();
        assert_eq!(c.pool, "default");
        assert_eq!(c.detect.statuses, vec![409]);
        assert_eq!(c.detect.session_version_header, "x-session-version");
        assert_eq!(c.detect.app_version_header, "x-app-version");
        assert_eq!(c.redispatch.cluster, "mixmode_peers");
        assert_eq!(c.redispatch.max_attempts, 5);
        assert_eq!(c.redispatch.deadline_ms, 30_000);
        assert_eq!(c.redispatch.attempt_timeout_ms, 5_000);
        assert_eq!(c.redispatch.selection, Selection::Random);
        assert_eq!(c.redispatch.max_replay_body_bytes, 1_048_576);
        assert_eq!(c.redispatch.max_buffered_bytes, 67_108_864);
        assert!(!c.redispatch.retry_timeouts_for_all_methods);
        assert_eq!(c.registry.stale_after_ms, 15_000);
        assert_eq!(c.registry.max_records, 10_000);
        assert_eq!(c.registry.allowed_cidrs.len(), 6);
        assert!(!c.registry.cross_pool);
        assert!(c.registry.poll.is_none() && c.registry.etcd.is_none());
        assert_eq!(c.heartbeat.path, "/.well-known/mixmode/heartbeat");
        assert_eq!(c.heartbeat.token, "change-me");
        assert!(c.affinity.is_none(), "affinity is off unless configured");
    }

    #[test]
    fn full_documented_example_parses() {
        let c = parse(
            r#"{
  "app": "checkout", "pool": "pool-a",
  "detect": {"statuses": [409, 412], "session_version_header": "X-Session-Version",
             "app_version_header": "x-app-version"},
  "redispatch": {"cluster": "peers", "max_attempts": 2, "deadline_ms": 1000,
                 "attempt_timeout_ms": 100, "selection": "freshest",
                 "max_replay_body_bytes": 10, "retry_timeouts_for_all_methods": true},
  "registry": {"stale_after_ms": 15000, "max_records": 3, "allowed_cidrs": ["10.0.0.0/8"],
               "cross_pool": true,
               "poll": {"targets": ["10.0.0.1:80"], "interval_ms": 2000},
               "etcd": {"prefix": "/x/"}},
  "heartbeat": {"path": "/hb", "token": "s3cret"}
}"#,
        )
        .unwrap();
        assert_eq!(c.detect.session_version_header, "x-session-version");
        assert_eq!(c.redispatch.selection, Selection::Freshest);
        let poll = c.registry.poll.unwrap();
        assert_eq!(poll.path, "/.well-known/mixmode/version");
        assert_eq!(poll.timeout_ms, 1000);
        let etcd = c.registry.etcd.unwrap();
        assert_eq!(etcd.cluster, "etcd");
        assert_eq!(etcd.poll_interval_ms, 1000);
    }

    #[test]
    fn zero_attempts_names_the_field() {
        assert_eq!(
            error_of(r#"{"app":"a","redispatch":{"max_attempts":0}}"#),
            "redispatch.max_attempts: must be at least 1"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = error_of(r#"{"app":"a","redispatch":{"max_attempts":"five"}}"#);
        assert!(
            e.starts_with("redispatch.max_attempts: invalid type"),
            "{e}"
        );
        let e = error_of(r#"{"app":"a","redispatch":{"max_attempts":-1}}"#);
        assert!(e.starts_with("redispatch.max_attempts: "), "{e}");
    }

    #[test]
    fn unknown_field_names_its_parent() {
        let e = error_of(r#"{"app":"a","redispatch":{"max_attempt":3}}"#);
        assert!(
            e.starts_with("redispatch.max_attempt: unknown field"),
            "{e}"
        );
        let e = error_of(r#"{"app":"a","colour":1}"#);
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn zero_timeouts_are_errors() {
        assert!(
            error_of(r#"{"app":"a","redispatch":{"attempt_timeout_ms":0}}"#)
                .starts_with("redispatch.attempt_timeout_ms:")
        );
        assert!(error_of(r#"{"app":"a","redispatch":{"deadline_ms":0}}"#)
            .starts_with("redispatch.deadline_ms:"));
        assert!(error_of(r#"{"app":"a","registry":{"stale_after_ms":0}}"#)
            .starts_with("registry.stale_after_ms:"));
    }

    #[test]
    fn empty_or_missing_app_is_an_error() {
        assert_eq!(error_of(r#"{"app":""}"#), "app: must not be empty");
        assert!(error_of(r#"{}"#).contains("missing field `app`"));
        assert!(error_of("").starts_with("app: missing"));
    }

    #[test]
    fn bad_cidr_names_the_entry() {
        let e = error_of(r#"{"app":"a","registry":{"allowed_cidrs":["10.0.0.0/8","nope"]}}"#);
        assert_eq!(e, "registry.allowed_cidrs[1]: not a CIDR block: \"nope\"");
    }

    #[test]
    fn poll_interval_not_below_stale_after_is_an_error() {
        let e = error_of(
            r#"{"app":"a","registry":{"stale_after_ms":1000,"poll":{"targets":[],"interval_ms":1000}}}"#,
        );
        assert!(e.starts_with("registry.poll.interval_ms:"), "{e}");
        let e = error_of(
            r#"{"app":"a","registry":{"stale_after_ms":1000,"etcd":{"poll_interval_ms":5000}}}"#,
        );
        assert!(e.starts_with("registry.etcd.poll_interval_ms:"), "{e}");
    }

    #[test]
    fn unknown_selection_is_an_error() {
        let e = error_of(r#"{"app":"a","redispatch":{"selection":"round-robin"}}"#);
        assert!(
            e.starts_with("redispatch.selection: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn bad_status_and_header_are_errors() {
        assert!(error_of(r#"{"app":"a","detect":{"statuses":[]}}"#).starts_with("detect.statuses:"));
        assert!(error_of(r#"{"app":"a","detect":{"statuses":[409, 42]}}"#)
            .starts_with("detect.statuses[1]:"));
        assert!(
            error_of(r#"{"app":"a","detect":{"session_version_header":"a b"}}"#)
                .starts_with("detect.session_version_header:")
        );
    }

    #[test]
    fn the_replay_budget_is_validated_naming_the_field() {
        let c = parse(r#"{"app":"a","redispatch":{"max_buffered_bytes":2097152}}"#).unwrap();
        assert_eq!(c.redispatch.max_buffered_bytes, 2 << 20);
        let e = error_of(r#"{"app":"a","redispatch":{"max_buffered_bytes":1000}}"#);
        assert!(
            e.starts_with("redispatch.max_buffered_bytes: must be at least redispatch.max_replay_body_bytes (1048576)"),
            "{e}"
        );
        let e = error_of(r#"{"app":"a","redispatch":{"max_buffered_bytes":0}}"#);
        assert!(e.starts_with("redispatch.max_buffered_bytes: "), "{e}");
        let e = error_of(r#"{"app":"a","redispatch":{"max_buffered_bytes":"64M"}}"#);
        assert!(
            e.starts_with("redispatch.max_buffered_bytes: invalid type"),
            "{e}"
        );
        let e = error_of(r#"{"app":"a","redispatch":{"max_buffered_bytes":-1}}"#);
        assert!(e.starts_with("redispatch.max_buffered_bytes: "), "{e}");
        let e = error_of(r#"{"app":"a","redispatch":{"max_buffered_bytes":4294967296}}"#);
        assert!(
            e.starts_with("redispatch.max_buffered_bytes: must be at most"),
            "{e}"
        );
        let small =
            r#"{"app":"a","redispatch":{"max_buffered_bytes":10,"max_replay_body_bytes":10}}"#;
        assert_eq!(parse(small).unwrap().redispatch.max_buffered_bytes, 10);
    }

    #[test]
    fn the_example_token_is_warned_about_by_name() {
        let default = parse(r#"{"app":"a"}"#).unwrap();
        let w = default.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("heartbeat.token: "), "{w:?}");
        let explicit = parse(r#"{"app":"a","heartbeat":{"token":"change-me"}}"#).unwrap();
        assert_eq!(explicit.warnings(), w);
        let secret = parse(r#"{"app":"a","heartbeat":{"token":"6c1f-secret"}}"#).unwrap();
        assert!(secret.warnings().is_empty());
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        assert!(parse(r#"{"app":"a"} x"#).is_err());
    }

    #[test]
    fn demand_coalesces_100_ms_by_default_0_to_1000_accepted() {
        assert_eq!(parse(r#"{"app":"a"}"#).unwrap().demand.coalesce_ms, 100);
        for ms in [0, 1, 1_000] {
            let c = parse(&format!(r#"{{"app":"a","demand":{{"coalesce_ms":{ms}}}}}"#)).unwrap();
            assert_eq!(c.demand.coalesce_ms, ms);
        }
        let e = error_of(r#"{"app":"a","demand":{"coalesce_ms":1001}}"#);
        assert!(
            e.starts_with("demand.coalesce_ms: must be at most 1000"),
            "{e}"
        );
    }

    #[test]
    fn affinity_gets_its_defaults_and_keeps_its_values() {
        let a = parse(r#"{"app":"a","affinity":{}}"#)
            .unwrap()
            .affinity
            .unwrap();
        assert_eq!(a.cookie, "mixmode-version");
        assert_eq!(a.max_age_s, 1800);
        assert_eq!(a.host_header, "x-mixmode-host");
        assert!(!a.secure);
        let a = parse(
            r#"{"app":"a","affinity":{"cookie":"V_1","max_age_s":60,"host_header":"X-Pin","secure":true}}"#,
        )
        .unwrap()
        .affinity
        .unwrap();
        assert_eq!(
            (
                a.cookie.as_str(),
                a.max_age_s,
                a.host_header.as_str(),
                a.secure
            ),
            ("V_1", 60, "x-pin", true)
        );
    }

    #[test]
    fn bad_affinity_fields_name_their_path() {
        for (json, path) in [
            (r#"{"cookie":""}"#, "affinity.cookie:"),
            (r#"{"cookie":"a b"}"#, "affinity.cookie:"),
            (r#"{"cookie":"a=b"}"#, "affinity.cookie:"),
            (r#"{"cookie":"a;b"}"#, "affinity.cookie:"),
            (r#"{"cookie":"é"}"#, "affinity.cookie:"),
            (r#"{"host_header":""}"#, "affinity.host_header:"),
            (r#"{"host_header":"x:y"}"#, "affinity.host_header:"),
            (r#"{"host_header":"x y"}"#, "affinity.host_header:"),
            (r#"{"host_header":"Cookie"}"#, "affinity.host_header:"),
            (
                r#"{"host_header":"x-envoy-original-dst-host"}"#,
                "affinity.host_header:",
            ),
            (
                r#"{"max_age_s":0}"#,
                "affinity.max_age_s: must be at least 1",
            ),
            (r#"{"max_age_s":-1}"#, "affinity.max_age_s:"),
            (r#"{"secure":"yes"}"#, "affinity.secure:"),
            (r#"{"cookies":"x"}"#, "affinity.cookies: unknown field"),
        ] {
            let e = error_of(&format!(r#"{{"app":"a","affinity":{json}}}"#));
            assert!(e.starts_with(path), "{json}: {e}");
        }
        let long = "c".repeat(MAX_NAME_LEN + 1);
        let e = error_of(&format!(
            r#"{{"app":"a","affinity":{{"cookie":"{long}"}}}}"#
        ));
        assert!(e.starts_with("affinity.cookie:"), "{e}");
        // `null` is the same as absent: off.
        assert!(parse(r#"{"app":"a","affinity":null}"#)
            .unwrap()
            .affinity
            .is_none());
    }
}
