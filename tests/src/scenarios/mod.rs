//! The end-to-end scenarios, written once against [`Host`] and run on every host (real Envoy,
//! wasmtime harness). Each scenario starts its own host and servers, so they run in parallel.
//! They are test code: a failed expectation panics with what was seen. A scenario that is not
//! run on both hosts (here in `all_scenarios!`, or in both hosts' `scenario_tests!` lists) fails
//! tests/tests/scenario_lists.rs, unless its doc says `Envoy only: <reason>`.
// A library (the hosts' test files instantiate it), so clippy.toml's test exemptions do not
// reach it: the exemption is stated once here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod affinity;
pub mod bodies;
pub mod config;
pub mod demand;
pub mod failures;
pub mod faults;
pub mod registry;
pub mod rescue;
pub mod signal;

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::app::{AppConfig, AppServer, HeartbeatClient, Registration, SessionData, SessionStore};
use crate::client::Resp;
use crate::host::{Host, HostSpec};

/// The heartbeat token every scenario configures.
pub const TOKEN: &str = "test-token-6c1f";

pub use crate::metric_names::{COUNTERS, GAUGES};

/// Counters whose value a scenario always knows: when it does not list one, it must be 0.
/// (`mismatch_detected`, `not_version_error` and `heartbeat_accepted` are checked where listed.)
const ZERO_UNLESS_LISTED: &[&str] = &[
    "redispatch_ok",
    "attempt_failed",
    "exhausted",
    "no_peer",
    "replay_too_large",
    "replay_unsupported",
    "heartbeat_rejected",
    "registry_sync_failed",
    "affinity_routed",
    "affinity_miss",
];

/// The plugin configuration of a scenario: only `app` and the token, plus `overrides` merged in
/// (so the defaults of docs/design.md#configuration are what is tested unless a scenario says otherwise).
pub fn plugin_config(overrides: Value) -> Value {
    let mut cfg = json!({"app": "checkout", "heartbeat": {"token": TOKEN}});
    merge(&mut cfg, overrides);
    cfg
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A started host, the pool's session store and a heartbeat client.
pub struct Fixture<H: Host> {
    pub host: H,
    pub store: SessionStore,
    pub hb: HeartbeatClient,
}

impl<H: Host> Fixture<H> {
    /// Starts a host in front of `pool` (round robin) with `plugin_config(overrides)`.
    pub async fn start(store: &SessionStore, pool: &[&AppServer], overrides: Value) -> Self {
        Self::start_with(store, pool, overrides, 1).await
    }

    pub async fn start_with(
        store: &SessionStore,
        pool: &[&AppServer],
        overrides: Value,
        concurrency: usize,
    ) -> Self {
        Self::start_tuned(store, pool, overrides, |spec| {
            spec.concurrency = concurrency
        })
        .await
    }

    /// `start` with what `tune` changes in the host's spec.
    pub async fn start_tuned(
        store: &SessionStore,
        pool: &[&AppServer],
        overrides: Value,
        tune: impl FnOnce(&mut HostSpec),
    ) -> Self {
        let mut spec = HostSpec::new(
            &plugin_config(overrides),
            pool.iter().map(|s| s.addr()).collect(),
        );
        tune(&mut spec);
        let host = match H::start(spec).await {
            Ok(h) => h,
            Err(e) => panic!("{} did not start: {e}", H::NAME),
        };
        let hb = HeartbeatClient::new(host.heartbeat_url(), TOKEN);
        Fixture {
            host,
            store: store.clone(),
            hb,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.host.public_url())
    }

    /// Registers a server under its own version.
    pub async fn register(&self, server: &AppServer) {
        self.hb.register(&Registration::of(server)).await.unwrap();
    }

    /// Registers `address` as a server of `version` (e.g. a dead address).
    pub async fn register_as(&self, address: SocketAddr, version: &str) {
        let reg = Registration {
            app: "checkout".into(),
            version: version.into(),
            address: address.to_string(),
            pool: None,
        };
        self.hb.register(&reg).await.unwrap();
    }

    /// A session written by `version`, returned as a `cookie` header value.
    pub fn session(&self, version: &str) -> String {
        let data = SessionData::from([("recipient".to_string(), "bob".to_string())]);
        format!("session={}", self.store.create(version, &data).unwrap())
    }

    /// Asserts the filter's counters: each listed one exactly, and the always-known ones
    /// (see `ZERO_UNLESS_LISTED`) at 0 when not listed.
    pub async fn expect_counters(&self, expected: &[(&str, u64)]) {
        let m = self.host.metrics().await.unwrap();
        let get = |name: &str| m.get(&format!("mixmode.{name}")).copied().unwrap_or(0);
        let mut wrong = Vec::new();
        for (name, want) in expected {
            assert!(
                COUNTERS.contains(name) || GAUGES.contains(name),
                "unknown metric {name}"
            );
            if get(name) != *want {
                wrong.push(format!("{name} = {} (expected {want})", get(name)));
            }
        }
        for name in ZERO_UNLESS_LISTED {
            if !expected.iter().any(|(n, _)| n == name) && get(name) != 0 {
                wrong.push(format!("{name} = {} (expected 0)", get(name)));
            }
        }
        assert!(
            wrong.is_empty(),
            "{}: counters differ: {}; all metrics: {m:?}",
            H::NAME,
            wrong.join(", ")
        );
    }
}

/// A server of `version` on a free port, sharing `store`.
pub async fn server(store: &SessionStore, name: &str, version: &str) -> AppServer {
    AppServer::start(AppConfig::new(name, version, store))
        .await
        .unwrap()
}

/// An address nothing listens on (bound, then closed).
pub fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Bytes that are not text: every byte value, repeated to `len`.
pub fn binary_body(len: usize) -> Vec<u8> {
    crate::app::pattern_bytes(len)
}

/// Asserts that a response through the proxy is the one the server gives directly: same
/// status, body and headers, plus only what any proxy adds (`server`,
/// `x-envoy-upstream-service-time`); `date` may differ.
pub fn assert_untouched(proxied: &Resp, direct: &Resp) {
    assert_eq!(proxied.status, direct.status, "{}", show(proxied));
    assert_eq!(proxied.body, direct.body, "{}", show(proxied));
    let strip = |r: &Resp| -> Vec<(String, Vec<u8>)> {
        r.headers
            .iter()
            .filter(|(n, _)| {
                !["date", "server", "x-envoy-upstream-service-time"].contains(&n.as_str())
            })
            .cloned()
            .collect()
    };
    assert_eq!(
        strip(proxied),
        strip(direct),
        "headers changed: {} vs {}",
        show(proxied),
        show(direct)
    );
}

/// Shows a response in assertion messages.
pub fn show(r: &Resp) -> String {
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
        .collect();
    let body = r.text();
    let body = if body.len() > 300 {
        format!("{}…", &body[..300])
    } else {
        body
    };
    format!("{} [{}] {body:?}", r.status, headers.join("; "))
}

/// One `#[tokio::test]` per scenario for a host type: `mixmode_tests::all_scenarios!(EnvoyHost);`
#[macro_export]
macro_rules! all_scenarios {
    ($host:ty) => {
        $crate::scenario_tests!($host:
            rescue::rescue_post_body_byte_for_byte,
            rescue::own_version_passes_untouched,
            rescue::transfers_complete_across_a_mixed_pool,
            rescue::client_cannot_choose_the_peer,
            rescue::methods_and_query_replayed,
            rescue::chunked_body_replayed_but_not_with_trailers,
            rescue::one_mib_body_replayed_by_default,
            rescue::hop_by_hop_headers_dropped,
            rescue::headers_named_in_connection_dropped,
            rescue::random_selection_uses_every_peer,
            rescue::keep_alive_connection_survives_every_outcome,
            bodies::expect_100_continue_post_rescued,
            bodies::large_peer_answer_arrives_whole,
            bodies::large_original_error_body,
            bodies::mismatch_body_still_streaming,
            signal::app_version_header_optional_session_version_required,
            signal::configured_statuses_and_header_names,
            signal::odd_version_headers_follow_section_2,
            signal::peer_app_errors_are_final,
            signal::attempts_bounded_by_count_and_deadline,
            failures::non_version_errors_pass_unchanged,
            failures::first_peer_down_next_answers,
            failures::all_peers_down_exhausted,
            failures::no_peer_of_that_version,
            failures::peer_reporting_a_mismatch_is_skipped,
            failures::slow_peer_get_retried_post_not,
            failures::retry_timeouts_for_all_methods_moves_post_on,
            failures::failing_server_is_never_a_candidate,
            failures::peer_closing_mid_body_is_skipped,
            failures::post_not_resent_after_a_peer_broke_off_its_answer,
            failures::peer_answering_garbage_is_skipped,
            failures::peer_dying_after_its_heartbeat_is_skipped,
            failures::attempt_header_is_never_redispatched,
            failures::body_over_replay_limit_passes_through,
            failures::non_utf8_header_value_passes_through,
            registry::stale_record_not_chosen,
            registry::delete_removes_record,
            registry::bad_heartbeats_change_nothing,
            registry::edge_heartbeats_accepted,
            registry::concurrent_heartbeats_on_two_workers_all_kept,
            registry::registry_gauge_and_counters_match,
            registry::max_records_cap_answers_429,
            registry::restarted_server_moves_to_new_version,
            registry::pull_poll_registers_and_follows_versions,
            registry::cross_pool_peers_when_enabled,
            config::invalid_plugin_config_refused_naming_the_field,
            config::example_token_warned_at_start,
            affinity::affinity_cookie_routes_the_session_to_its_version,
            affinity::affinity_stopped_hinted_server_falls_back_then_rescued,
            affinity::affinity_forged_hint_or_cookie_reaches_no_outside_host,
            affinity::affinity_version_a_cookie_cannot_carry,
            affinity::affinity_off_sets_no_cookie,
            demand::demand_listed_after_a_rescue_and_a_no_peer,
            demand::demand_coalesced_never_listed_earlier_than_needed,
            demand::demand_leaves_the_listing_after_its_window,
            demand::demand_listing_needs_the_token,
            demand::demand_counts_an_affinity_routed_request,
        );
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! scenario_tests {
    ($host:ty: $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::$module::$name::<$host>().await
            }
        )*
    };
}
