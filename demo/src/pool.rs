//! The pool of app servers and the rolling deploy that upgrades it, wave by wave, the way the
//! reference patent suggests: a small wave, larger waves, a small last wave, waiting about one
//! session length between waves. Each server is drained first: it leaves Envoy's pool (Envoy
//! stops sending it new requests) but keeps serving, and keeps its registration so mixmode can
//! still rescue old-version sessions on it, for one session length; then it deregisters, stops,
//! and comes back as the new version.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use mixmode_register::{
    wait_until_quiet, Config as EtcdConfig, Decision, DemandSource, Policy,
    Registration as EtcdRegistration, Target,
};
use mixmode_tests::app::{AppConfig, AppServer, HeartbeatClient, Registration, SessionStore};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::liveness::Liveness;
use crate::setup::write_eds;

/// How often a registered server sends its heartbeat (the registry forgets it after 15 s).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(1000);

/// The fleet's servers register in etcd under a 2 s lease: a crashed server is forgotten within
/// 2 s, a stopped one at once (its lease is revoked).
const ETCD_TTL_SECS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Serving,
    Draining,
    Down,
}

struct Server {
    app: AppServer,
    state: State,
    beat: Option<JoinHandle<()>>,
    /// Its etcd registration (fleet mode), revoked before it stops.
    lease: Option<EtcdRegistration>,
}

pub struct Pool {
    servers: Vec<Server>,
    registry: Option<HeartbeatClient>,
    /// etcd's URL when the servers register there instead (fleet mode).
    etcd: Option<String>,
    /// How long the Envoys may take to see a change in etcd (their poll interval and a margin):
    /// a registration must reach them before users do, a revocation before the server stops.
    mirror_lag: Duration,
    /// Envoy's view of the pool: the serving servers, written to this file.
    eds: PathBuf,
    eds_version: u64,
    /// When each server was registered and serving (the soak's accounting).
    liveness: Option<Liveness>,
    /// The Envoys' demand listings, read when the plan drains by demand.
    demand: Vec<DemandSource>,
}

/// What the progress line shows.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    pub v1: usize,
    pub v2: usize,
    pub draining: usize,
    pub down: usize,
    pub wave: usize,
}

impl Pool {
    pub async fn start(n: usize, version: &str, eds: PathBuf) -> Result<Pool> {
        let store = SessionStore::new();
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let app = AppServer::start(AppConfig::new(&format!("s{:02}", i + 1), version, &store))
                .await?;
            servers.push(Server {
                app,
                state: State::Serving,
                beat: None,
                lease: None,
            });
        }
        let mut pool = Pool {
            servers,
            registry: None,
            etcd: None,
            mirror_lag: Duration::ZERO,
            eds,
            eds_version: 0,
            liveness: None,
            demand: Vec::new(),
        };
        pool.publish()?;
        Ok(pool)
    }

    /// Tells Envoy which servers take new requests.
    fn publish(&mut self) -> Result<()> {
        self.eds_version += 1;
        let members: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|s| s.state == State::Serving)
            .map(|s| s.app.addr())
            .collect();
        write_eds(&self.eds, self.eds_version, &members)
    }

    /// Where a drain by demand reads whether the old version is still needed: every Envoy in
    /// front of the pool.
    pub fn read_demand_from(&mut self, sources: Vec<DemandSource>) {
        self.demand = sources;
    }

    /// Records registrations and deregistrations in `l` from now on.
    pub fn track(&mut self, l: Liveness) {
        self.liveness = Some(l);
    }

    /// The session store the servers share (for extra servers of the same app).
    pub fn store(&self) -> Option<SessionStore> {
        self.servers.first().map(|s| s.app.store().clone())
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.app.addr()).collect()
    }

    /// Every server registers now and keeps sending heartbeats (mixmode setup only).
    pub async fn register_all(&mut self, client: HeartbeatClient) -> Result<()> {
        for s in &mut self.servers {
            start_heartbeats(&client, s).await?;
            if let Some(l) = &self.liveness {
                l.up(s.app.addr(), &s.app.version());
            }
        }
        self.registry = Some(client);
        Ok(())
    }

    /// Every server registers in etcd now, the way `mixmode-register` does it (fleet mode).
    pub async fn register_all_etcd(&mut self, etcd_url: &str, mirror_lag: Duration) -> Result<()> {
        for s in &mut self.servers {
            s.lease = Some(register_etcd(etcd_url, &s.app).await?);
        }
        self.etcd = Some(etcd_url.to_string());
        self.mirror_lag = mirror_lag;
        Ok(())
    }

    /// Revokes the etcd leases of `wave` and waits until the Envoys' mirrors have dropped them
    /// (fleet mode; nothing otherwise).
    async fn deregister_etcd(&mut self, wave: &[usize]) -> Result<()> {
        let mut any = false;
        for &i in wave {
            if let Some(lease) = self.servers.get_mut(i).and_then(|s| s.lease.take()) {
                lease.stop().await?;
                any = true;
            }
        }
        if any {
            tokio::time::sleep(self.mirror_lag).await;
        }
        Ok(())
    }

    pub fn view(&self) -> PoolView {
        let mut v = PoolView::default();
        for s in &self.servers {
            match s.state {
                State::Draining => v.draining += 1,
                State::Down => v.down += 1,
                State::Serving => {}
            }
            if s.state != State::Down {
                if s.app.version() == "1" {
                    v.v1 += 1;
                } else {
                    v.v2 += 1;
                }
            }
        }
        v
    }

    /// App requests (not health checks) every server received.
    pub fn app_requests(&self) -> usize {
        self.servers
            .iter()
            .flat_map(|s| s.app.requests())
            .filter(|r| r.path.starts_with("/transfer/"))
            .count()
    }

    /// Servers of `version` still in the load balancer.
    fn serving(&self, version: &str) -> usize {
        self.servers
            .iter()
            .filter(|s| s.state == State::Serving && s.app.version() == version)
            .count()
    }

    /// How long the drained `wave` keeps serving, and why it may leave then.
    async fn wait_drained(&self, wave: &[usize], plan: &Plan, log: &impl Fn(String)) -> Drained {
        let started = Instant::now();
        let old = wave
            .first()
            .and_then(|&i| self.servers.get(i))
            .map(|s| s.app.version())
            .unwrap_or_default();
        let policy = match plan.drain_by {
            DrainBy::Demand(p) if !self.demand.is_empty() => p,
            // No mixmode, no demand to read: the fixed time.
            _ => {
                tokio::time::sleep(plan.drain).await;
                return Drained {
                    waited_s: started.elapsed().as_secs_f64(),
                    why: format!("fixed drain {:.2} s", plan.drain.as_secs_f64()),
                };
            }
        };
        // Envoy needs a moment to apply the new pool and in-flight requests to finish: never
        // less than the fixed drain.
        let settle = tokio::time::sleep(plan.drain);
        let others = self.serving(&old);
        if others > 0 {
            // Any v<old> server can take the sessions of this one (they share the session
            // store): only the last servers of a version have to wait for its sessions.
            settle.await;
            return Drained {
                waited_s: started.elapsed().as_secs_f64(),
                why: format!(
                    "v{old} still served by {others} other server{}",
                    if others == 1 { "" } else { "s" }
                ),
            };
        }
        let target = Target {
            pool: "default".into(),
            app: "checkout".into(),
            version: old.clone(),
        };
        let (decision, ()) =
            tokio::join!(wait_until_quiet(target, policy, &self.demand, log), settle);
        Drained {
            waited_s: started.elapsed().as_secs_f64(),
            why: match decision {
                Decision::Quiet { quiet_for_ms, .. } => {
                    format!("v{old} not needed for {quiet_for_ms} ms")
                }
                Decision::MaxWait { .. } => format!(
                    "max wait {:.0} s (v{old} still needed)",
                    policy.max_wait_ms as f64 / 1000.0
                ),
                Decision::Wait { .. } => "still waiting".into(),
            },
        }
    }

    fn drain(&mut self, wave: &[usize]) -> Result<()> {
        for &i in wave {
            if let Some(s) = self.servers.get_mut(i) {
                s.app.set_healthy(false);
                s.state = State::Draining;
            }
        }
        self.publish()
    }

    async fn stop(&mut self, i: usize) -> Result<()> {
        let registry = self.registry.clone();
        if let Some(s) = self.servers.get_mut(i) {
            if let Some(beat) = s.beat.take() {
                beat.abort();
                let _ = beat.await;
            }
            if let Some(l) = &self.liveness {
                l.down(s.app.addr());
            }
            if let Some(client) = &registry {
                client.deregister(&Registration::of(&s.app)).await?;
            }
            if let Some(lease) = s.lease.take() {
                lease.stop().await?;
            }
            s.app.stop().await;
            s.state = State::Down;
        }
        Ok(())
    }

    async fn upgrade(&mut self, i: usize, version: &str) -> Result<()> {
        let registry = self.registry.clone();
        let etcd = self.etcd.clone();
        if let Some(s) = self.servers.get_mut(i) {
            s.app.restart(version).await?;
            if let Some(url) = &etcd {
                s.lease = Some(register_etcd(url, &s.app).await?);
            }
            if let Some(client) = &registry {
                start_heartbeats(client, s).await?;
                if let Some(l) = &self.liveness {
                    l.up(s.app.addr(), version);
                }
            }
            s.app.set_healthy(true);
            s.state = State::Serving;
        }
        Ok(())
    }

    /// Stops every server (heartbeat tasks too).
    pub async fn shutdown(&mut self) {
        for s in &mut self.servers {
            if let Some(beat) = s.beat.take() {
                beat.abort();
            }
            if let Some(lease) = s.lease.take() {
                let _ = lease.stop().await;
            }
            s.app.stop().await;
        }
    }
}

async fn register_etcd(etcd_url: &str, app: &AppServer) -> Result<EtcdRegistration> {
    let cfg = EtcdConfig::new(
        etcd_url,
        "/mixmode/",
        "default",
        "checkout",
        &app.version(),
        &app.addr().to_string(),
        ETCD_TTL_SECS,
    )?;
    Ok(EtcdRegistration::start(cfg).await?)
}

async fn start_heartbeats(client: &HeartbeatClient, s: &mut Server) -> Result<()> {
    let reg = Registration::of(&s.app);
    client.register(&reg).await?;
    s.beat = Some(client.spawn_periodic(reg, HEARTBEAT_EVERY));
    Ok(())
}

/// The rollout: which servers each wave upgrades and how long each phase lasts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub waves: Vec<Vec<usize>>,
    /// Load before the first wave.
    pub warmup: Duration,
    /// How long a drained server keeps serving (and stays a rescue target): ~ one session.
    /// Draining by demand, the least it waits.
    pub drain: Duration,
    /// A fixed drain, or until the Envoys no longer need the old version.
    pub drain_by: DrainBy,
    /// How long a server is down for its upgrade.
    pub down: Duration,
    /// Wait after a wave is back up before the next wave starts (~ one session or more).
    pub wave_wait: Duration,
    /// Load after the last wave.
    pub tail: Duration,
}

/// How a wave's drained servers decide to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainBy {
    /// After `Plan::drain`, whoever still needs them.
    Fixed,
    /// The last servers of a version wait until no Envoy has needed it for the policy's quiet
    /// time (docs/design.md#draining-by-demand); the others after `Plan::drain`, since servers of
    /// their version remain. Setups without mixmode have no demand to read: fixed.
    Demand(Policy),
}

impl DrainBy {
    pub fn key(&self) -> &'static str {
        match self {
            DrainBy::Fixed => "fixed",
            DrainBy::Demand(_) => "demand",
        }
    }
}

/// How long a wave's servers kept serving out of the load balancer, and why they left.
pub struct Drained {
    pub waited_s: f64,
    pub why: String,
}

/// The patent's shape for `n` servers: one, then larger waves of about 40 % of the pool, then
/// one (10 servers: 1-4-4-1).
pub fn wave_sizes(n: usize) -> Vec<usize> {
    match n {
        0 => vec![],
        1 => vec![1],
        2 => vec![1, 1],
        _ => {
            let middle = n - 2;
            let big = ((n * 2).div_ceil(5)).max(1);
            let count = middle.div_ceil(big);
            let mut sizes = vec![1];
            for k in 0..count {
                // Spread the middle evenly: the first waves take the remainder.
                sizes.push(middle / count + usize::from(k < middle % count));
            }
            sizes.push(1);
            sizes
        }
    }
}

pub fn waves_of(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut next = 0;
    sizes
        .iter()
        .map(|&k| {
            let w: Vec<usize> = (next..next + k).collect();
            next += k;
            w
        })
        .collect()
}

impl Plan {
    pub fn total(&self) -> Duration {
        let per_wave = self.drain + self.down;
        self.warmup
            + per_wave * self.waves.len() as u32
            + self.wave_wait * self.waves.len().saturating_sub(1) as u32
            + self.tail
    }
}

/// When a wave's phases happened, in seconds since the load started.
#[derive(Debug, Clone, Serialize)]
pub struct WaveTimes {
    pub servers: usize,
    pub drain_at: f64,
    pub stop_at: f64,
    pub up_at: f64,
    /// Their names, e.g. "s10".
    pub names: String,
    /// How long they drained (out of the load balancer, still serving and registered).
    pub drained_s: f64,
    /// Why they left then.
    pub why: String,
}

/// Runs the plan against the pool (v1 -> v2); `view` is kept current for the progress line.
pub async fn deploy(
    pool: &mut Pool,
    plan: &Plan,
    t0: Instant,
    view: Arc<Mutex<PoolView>>,
    log: impl Fn(String),
) -> Result<Vec<WaveTimes>> {
    deploy_to(pool, plan, "2", t0, view, log).await
}

/// `deploy` to any version (the soak goes back and forth).
pub async fn deploy_to(
    pool: &mut Pool,
    plan: &Plan,
    version: &str,
    t0: Instant,
    view: Arc<Mutex<PoolView>>,
    log: impl Fn(String),
) -> Result<Vec<WaveTimes>> {
    let publish = |pool: &Pool, wave: usize| {
        let mut v = pool.view();
        v.wave = wave;
        if let Ok(mut g) = view.lock() {
            *g = v;
        }
    };
    let since = |t: Instant| t.duration_since(t0).as_secs_f64();
    publish(pool, 0);
    tokio::time::sleep(plan.warmup).await;
    let mut times = Vec::new();
    for (w, wave) in plan.waves.iter().enumerate() {
        if w > 0 {
            tokio::time::sleep(plan.wave_wait).await;
        }
        let names = wave
            .iter()
            .map(|i| format!("s{:02}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let drain_at = since(Instant::now());
        log(format!(
            "wave {}/{}: draining {names} (out of the load balancer, still serving)",
            w + 1,
            plan.waves.len()
        ));
        pool.drain(wave)?;
        publish(pool, w + 1);
        let drained = pool
            .wait_drained(wave, plan, &|m| log(format!("wave {}: {m}", w + 1)))
            .await;
        log(format!(
            "wave {}/{}: {names} leave after {:.2} s: {}",
            w + 1,
            plan.waves.len(),
            drained.waited_s,
            drained.why
        ));
        let stop_at = since(Instant::now());
        pool.deregister_etcd(wave).await?;
        for &i in wave {
            pool.stop(i).await?;
        }
        publish(pool, w + 1);
        tokio::time::sleep(plan.down).await;
        for &i in wave {
            pool.upgrade(i, version).await?;
        }
        // Registered before Envoy sends it users: its sessions can be rescued from the first.
        // An etcd registration reaches the Envoys at their next poll.
        if pool.etcd.is_some() {
            tokio::time::sleep(pool.mirror_lag).await;
        }
        pool.publish()?;
        let up_at = since(Instant::now());
        log(format!(
            "wave {}/{}: {names} back as v{version}",
            w + 1,
            plan.waves.len()
        ));
        publish(pool, w + 1);
        times.push(WaveTimes {
            servers: wave.len(),
            drain_at,
            stop_at,
            up_at,
            names,
            drained_s: drained.waited_s,
            why: drained.why,
        });
    }
    tokio::time::sleep(plan.tail).await;
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_follow_the_patent_shape() {
        assert_eq!(wave_sizes(10), vec![1, 4, 4, 1]);
        assert_eq!(wave_sizes(4), vec![1, 2, 1]);
        assert_eq!(wave_sizes(3), vec![1, 1, 1]);
        assert_eq!(wave_sizes(20), vec![1, 6, 6, 6, 1]);
        for n in 1..40 {
            assert_eq!(wave_sizes(n).iter().sum::<usize>(), n, "n = {n}");
        }
        assert_eq!(waves_of(&[1, 2, 1]), vec![vec![0], vec![1, 2], vec![3]]);
    }
}
