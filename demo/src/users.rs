//! Simulated users: each runs money transfers back to back through Envoy's public listener,
//! reading each page for a moment (think time) before the next step. A transfer is lost at its
//! first step that does not answer 200: the user would have to start over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixmode_tests::client::Req;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Workload {
    pub users: usize,
    pub seed: u64,
    /// Think time between steps (and between transactions), uniformly drawn.
    pub think_ms: (u64, u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub step: String,
    /// 0: no HTTP answer at all.
    pub status: u16,
    pub mixmode: Option<String>,
    pub served_by: Option<String>,
    /// The start of the answer's body (Envoy's own 503s say why).
    pub detail: String,
}

impl Failure {
    /// How the table groups failures.
    pub fn reason(&self) -> String {
        match (self.status, &self.mixmode) {
            (0, _) => "no answer".to_string(),
            (s, Some(m)) => format!("{s} {m}"),
            (409, None) => "409 version".to_string(),
            (s, None) => s.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tx {
    pub user: usize,
    pub start_s: f64,
    pub end_s: f64,
    /// The version that created the session (from the first step's answer).
    pub version: Option<String>,
    /// Steps answered by a peer after a rescue (`x-mixmode: redispatched`).
    pub rescued_steps: usize,
    pub failure: Option<Failure>,
}

#[derive(Debug, Default)]
pub struct Live {
    pub completed: AtomicUsize,
    pub failed: AtomicUsize,
    pub steps: AtomicUsize,
}

/// One step as the user saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    /// When it was sent, in ms since the run started (to compare kinds of steps sent at the
    /// same time, under the same machine load).
    pub at_ms: u64,
    /// Its latency, in microseconds.
    pub us: u64,
    /// It carried the affinity cookie (mixmode+affinity: a hinted request).
    pub cookie: bool,
    /// A peer answered it after a rescue (`x-mixmode: redispatched`).
    pub rescued: bool,
}

#[derive(Debug, Default)]
pub struct UserLog {
    pub txs: Vec<Tx>,
    /// Every step the user sent.
    pub steps: Vec<Step>,
}

/// The affinity cookie, as a browser keeps it: the last value set wins.
#[derive(Debug, Default)]
pub struct Jar {
    affinity: Option<String>,
}

/// The cookie name in envoy.yaml's example `affinity` block.
const AFFINITY_COOKIE: &str = "mixmode-version";

impl Jar {
    fn take(&mut self, set_cookies: &[String]) {
        for c in set_cookies {
            let pair = c.split(';').next().unwrap_or("");
            if let Some(v) = pair
                .strip_prefix(AFFINITY_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                self.affinity = Some(v.to_string());
            }
        }
    }

    /// `; name=value` to append to the request's cookie header, or nothing.
    fn header_part(&self) -> String {
        self.affinity
            .as_ref()
            .map(|v| format!("; {AFFINITY_COOKIE}={v}"))
            .unwrap_or_default()
    }
}

const RECIPIENTS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank", "grace"];

/// Runs one user until `stop` is set, then finishes its current transfer.
pub async fn run_user(
    base_url: String,
    user: usize,
    w: Workload,
    t0: Instant,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
) -> UserLog {
    let mut rng =
        fastrand::Rng::with_seed(w.seed ^ (user as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut log = UserLog::default();
    // What a browser would keep between transfers: the affinity cookie mixmode sets after a
    // rescue (only the mixmode+affinity setup ever sets one).
    let mut jar = Jar::default();
    let think = |rng: &mut fastrand::Rng| {
        Duration::from_millis(rng.u64(w.think_ms.0..=w.think_ms.1.max(w.think_ms.0)))
    };
    // Users start staggered so they do not march in step.
    tokio::time::sleep(think(&mut rng)).await;
    while !stop.load(Ordering::Relaxed) {
        let recipient = RECIPIENTS[rng.usize(..RECIPIENTS.len())];
        let tx = run_transfer(
            &base_url,
            user,
            recipient,
            &mut rng,
            &w,
            t0,
            &mut log.steps,
            &live,
            &mut jar,
        )
        .await;
        if tx.failure.is_some() {
            live.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            live.completed.fetch_add(1, Ordering::Relaxed);
        }
        log.txs.push(tx);
        tokio::time::sleep(think(&mut rng)).await;
    }
    log
}

#[allow(clippy::too_many_arguments)]
async fn run_transfer(
    base_url: &str,
    user: usize,
    recipient: &str,
    rng: &mut fastrand::Rng,
    w: &Workload,
    t0: Instant,
    steps: &mut Vec<Step>,
    live: &Live,
    jar: &mut Jar,
) -> Tx {
    let mut tx = Tx {
        user,
        start_s: t0.elapsed().as_secs_f64(),
        end_s: 0.0,
        version: None,
        rescued_steps: 0,
        failure: None,
    };
    let mut cookie: Option<String> = None;
    let mut step = "recipient".to_string();
    let mut completed = false;
    for _ in 0..8 {
        let input = match step.as_str() {
            "recipient" => json!({ "recipient": recipient }),
            "date" => json!({ "date": "2026-12-01" }),
            "amount" => json!({ "amount": "42.00", "source": "checking" }),
            _ => json!({}),
        };
        let mut req = Req::post(
            format!("{base_url}/transfer/{step}"),
            input.to_string().into_bytes(),
        )
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10));
        // Every user carries its own cookie (as a signed-in browser would): sticky sessions hash it.
        let kept = jar.header_part();
        let with_cookie = !kept.is_empty();
        req = match &cookie {
            Some(c) => req.header("cookie", format!("user=u{user}; session={c}{kept}")),
            None => req.header("cookie", format!("user=u{user}{kept}")),
        };
        let sent = Instant::now();
        let at_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let resp = req.send().await;
        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        live.steps.fetch_add(1, Ordering::Relaxed);
        let fail = |status: u16,
                    mixmode: Option<String>,
                    served_by: Option<String>,
                    detail: String| Failure {
            step: step.clone(),
            status,
            mixmode,
            served_by,
            detail,
        };
        let rescued = resp
            .as_ref()
            .is_ok_and(|r| r.header("x-mixmode").as_deref() == Some("redispatched"));
        steps.push(Step {
            at_ms,
            us,
            cookie: with_cookie,
            rescued,
        });
        let resp = match resp {
            Ok(r) => r,
            Err(_) => {
                tx.failure = Some(fail(0, None, None, String::new()));
                break;
            }
        };
        jar.take(&resp.header_all("set-cookie"));
        let mixmode = resp.header("x-mixmode");
        if resp.status != 200 {
            let detail = resp.text().chars().take(160).collect();
            tx.failure = Some(fail(
                resp.status,
                mixmode,
                resp.header("x-served-by"),
                detail,
            ));
            break;
        }
        if mixmode.as_deref() == Some("redispatched") {
            tx.rescued_steps += 1;
        }
        let body: Value = resp.json().unwrap_or(Value::Null);
        if cookie.is_none() {
            cookie = body
                .get("session")
                .and_then(Value::as_str)
                .map(str::to_string);
            tx.version = body
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if body.get("receipt").is_some() {
            completed = true;
            break;
        }
        match body.get("next").and_then(Value::as_str) {
            Some(next) if cookie.is_some() => step = next.to_string(),
            _ => {
                tx.failure = Some(fail(
                    200,
                    Some("unexpected answer".into()),
                    None,
                    resp.text(),
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(
            rng.u64(w.think_ms.0..=w.think_ms.1.max(w.think_ms.0)),
        ))
        .await;
    }
    if !completed && tx.failure.is_none() {
        tx.failure = Some(Failure {
            step,
            status: 200,
            mixmode: Some("no receipt after 8 steps".into()),
            served_by: None,
            detail: String::new(),
        });
    }
    tx.end_s = t0.elapsed().as_secs_f64();
    tx
}
