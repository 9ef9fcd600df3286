//! Draining by demand, the I/O part: reads each listed Envoy's demand listing every poll and
//! feeds the answers to [`Drain`] (demand.rs), which decides. Used by `mixmode-register
//! --drain-while-needed` and by the demo's rollout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Bytes;
use hyper::{header, Method};

use crate::config::{ConfigError, Endpoint};
use crate::demand::{parse_listing, Answer, Decision, Drain, Policy, Target};

/// A demand listing is one entry per recently needed version: small.
const MAX_LISTING_BYTES: usize = 1024 * 1024;

/// One Envoy's demand listing: `GET <heartbeat URL>?demand` with the heartbeat token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemandSource {
    endpoint: Endpoint,
    /// Path and query, e.g. `/.well-known/mixmode/heartbeat?demand`.
    path: String,
    authorization: String,
}

impl DemandSource {
    /// `url`: the Envoy's heartbeat URL (`http://10.0.0.2:10001/.well-known/mixmode/heartbeat`),
    /// to which `?demand` is added, or the full listing URL with its query.
    pub fn parse(url: &str, token: &str) -> Result<DemandSource, ConfigError> {
        let bad = |why: &str| ConfigError::new("drain-while-needed", format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (the Envoy's heartbeat listener)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(bad("no path: give the heartbeat URL, e.g. http://10.0.0.2:10001/.well-known/mixmode/heartbeat")),
        };
        let endpoint = Endpoint::parse(&format!("http://{authority}")).map_err(|e| {
            bad(e
                .reason
                .split_once(": ")
                .map_or(e.reason.as_str(), |(_, why)| why))
        })?;
        if path.contains('#') || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad(
                "the path may not hold spaces, control characters or '#'",
            ));
        }
        let path = if path.contains('?') {
            path.to_string()
        } else {
            format!("{path}?demand")
        };
        if token.is_empty() || token.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "token",
                "the heartbeat token must be non-empty, without control characters",
            ));
        }
        Ok(DemandSource {
            endpoint,
            path,
            authorization: format!("Bearer {token}"),
        })
    }

    /// Where it reads, for messages (without the token).
    pub fn url(&self) -> String {
        format!("{}{}", self.endpoint, self.path)
    }

    /// One read of the listing; every failure is an [`Answer::Failed`] saying why.
    pub async fn fetch(&self, timeout: Duration) -> Answer {
        let headers = [(header::AUTHORIZATION, self.authorization.as_str())];
        let sent = crate::http::send(
            &self.endpoint,
            Method::GET,
            &self.path,
            &headers,
            Bytes::new(),
            MAX_LISTING_BYTES,
        );
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Answer::Failed(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(e)) => Answer::Failed(e),
            Ok(Ok((200, body))) => match parse_listing(&body) {
                Ok(needs) => Answer::Listing(needs),
                Err(e) => Answer::Failed(e),
            },
            Ok(Ok((status, body))) => Answer::Failed(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
        }
    }
}

/// Unix time in ms (the clock the Envoys stamp `last_needed_ms` with).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How often to poll: a quarter of the quiet time, between 50 ms and 1 s.
pub fn poll_interval(policy: &Policy) -> Duration {
    Duration::from_millis((policy.quiet_ms / 4).clamp(50, 1000))
}

/// Polls `sources` until [`Drain`] says quiet or max wait; returns that final decision.
/// `log` gets one line per change worth telling (an Envoy stops or starts answering; the
/// version needed again after a quiet spell), not one per poll.
pub async fn wait_until_quiet(
    target: Target,
    policy: Policy,
    sources: &[DemandSource],
    mut log: impl FnMut(String),
) -> Decision {
    let every = poll_interval(&policy);
    let timeout = every.max(Duration::from_secs(1));
    let mut drain = Drain::new(target, policy, unix_ms());
    let mut failing = vec![false; sources.len()];
    let mut was_needed = None;
    loop {
        let fetches = sources.iter().map(|s| {
            let s = s.clone();
            async move { s.fetch(timeout).await }
        });
        let answers = join_all(fetches.collect()).await;
        for ((source, answer), failing) in sources.iter().zip(&answers).zip(failing.iter_mut()) {
            match answer {
                Answer::Failed(why) if !*failing => {
                    *failing = true;
                    log(format!(
                        "cannot read demand from {}: {why}; counting it as still needed",
                        source.url()
                    ));
                }
                Answer::Listing(_) if *failing => {
                    *failing = false;
                    log(format!("demand from {} answers again", source.url()));
                }
                _ => {}
            }
        }
        let decision = drain.observe(unix_ms(), &answers);
        match &decision {
            Decision::Wait {
                quiet_for_ms,
                needed_60s,
                ..
            } => {
                let needed = *quiet_for_ms < every.as_millis() as u64 * 2 && *needed_60s > 0;
                if was_needed != Some(needed) && needed {
                    log(format!(
                        "version {} still needed ({needed_60s} needs in the last 60 s)",
                        drain.target().version
                    ));
                }
                was_needed = Some(needed);
            }
            Decision::Quiet { .. } | Decision::MaxWait { .. } => return decision,
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs the fetches concurrently (one slow Envoy does not delay reading the others).
async fn join_all<F: std::future::Future<Output = Answer> + Send + 'static>(
    fetches: Vec<F>,
) -> Vec<Answer> {
    let handles: Vec<_> = fetches.into_iter().map(tokio::spawn).collect();
    let mut answers = Vec::with_capacity(handles.len());
    for h in handles {
        answers.push(
            h.await
                .unwrap_or_else(|e| Answer::Failed(format!("demand read task failed: {e}"))),
        );
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_demand_query_and_bad_ones_name_the_flag() {
        let s = DemandSource::parse("http://127.0.0.1:10001/.well-known/mixmode/heartbeat", "t")
            .unwrap();
        assert_eq!(
            s.url(),
            "http://127.0.0.1:10001/.well-known/mixmode/heartbeat?demand"
        );
        let s = DemandSource::parse("http://[::1]:9/hb?demand", "t").unwrap();
        assert_eq!(s.url(), "http://[::1]:9/hb?demand");
        for (url, want) in [
            ("https://h:1/hb", "http://"),
            ("http://h:1", "no path"),
            ("http://h:x/hb", "port"),
            ("http:///hb", "host:port"),
            ("http://h:1/a b", "spaces"),
        ] {
            let e = DemandSource::parse(url, "t").unwrap_err().to_string();
            assert!(
                e.starts_with("--drain-while-needed") && e.contains(want),
                "{url}: {e}"
            );
        }
        let e = DemandSource::parse("http://h:1/hb", "").unwrap_err();
        assert_eq!(e.field, "token");
    }

    #[test]
    fn polls_four_times_per_quiet_period_within_bounds() {
        let p = |quiet_ms| {
            poll_interval(&Policy {
                quiet_ms,
                max_wait_ms: 1,
            })
        };
        assert_eq!(p(300), Duration::from_millis(75));
        assert_eq!(p(30_000), Duration::from_secs(1));
        assert_eq!(p(10), Duration::from_millis(50));
    }
}
