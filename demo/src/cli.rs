//! The demo's command line: the rolling-deploy comparison (default), `--fleet`, or `--soak`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use mixmode_register::Policy;

use crate::pool::{wave_sizes, waves_of, DrainBy, Plan};
use crate::run::RunOptions;
use crate::setup::Setup;
use crate::soak::SoakOptions;
use crate::users::Workload;

/// A rolling deploy (v1 -> v2 in waves) of the reference patent's money-transfer app behind a
/// real Envoy, under the same simulated users and seed, with five setups: round robin, Envoy
/// retries on 409, sticky sessions, mixmode, and mixmode with version affinity. Prints one rescue in detail, progress and a
/// comparison table, and writes a chart and a JSON summary.
#[derive(Debug, Parser)]
#[command(
    name = "demo",
    after_help = "Environment: MIXMODE_WASM (the filter; default \
                  target/wasm32-wasip1/release/mixmode.wasm), ENVOY_BIN (default `envoy` on the PATH)."
)]
pub struct Cli {
    /// Short run for CI (~25 s): shorter warm-up, downtime and waits
    #[arg(long)]
    quick: bool,
    /// App servers in the pool [default: 10; with --soak 6, plus 3 fault servers]
    #[arg(long, value_name = "N")]
    servers: Option<usize>,
    /// Simulated users running transfers back to back [default: 8; 100 with --think-ms 1000 or
    /// more, so that long sessions are in flight at every wave]
    #[arg(long, value_name = "N")]
    users: Option<usize>,
    /// Seed of the users' think times and recipients
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,
    /// Load time per setup; sets the wait between waves to fit [with --soak: how long to soak,
    /// default 600]
    #[arg(long, value_name = "SECS", value_parser = secs)]
    duration: Option<Duration>,
    /// Wait between waves, after a wave is back up [default: 1.5]
    #[arg(long, value_name = "SECS", value_parser = secs, conflicts_with = "duration")]
    wave_wait: Option<Duration>,
    /// How long a drained server keeps serving before it stops with the fixed drain, about one
    /// session of 4 steps with 20-60 ms think time; draining by demand, the least it waits
    /// [default: 0.75]
    #[arg(long, value_name = "SECS", value_parser = secs)]
    drain: Option<Duration>,
    /// How the mixmode setups drain old servers, in order (both: each mixmode setup runs once
    /// per mode): `fixed` (--drain seconds) or `demand` (the last servers of a version stay
    /// until no Envoy has needed it for --quiet-ms) [default: demand; fixed,demand with
    /// --think-ms 1000 or more, to compare]
    #[arg(long, value_name = "MODE,...", value_delimiter = ',', value_parser = ["fixed", "demand"])]
    drain_by: Option<Vec<String>>,
    /// Draining by demand: how long the old version must go unneeded [default: 1.5 x
    /// --think-ms + 500]
    #[arg(long, value_name = "MS")]
    quiet_ms: Option<u64>,
    /// Draining by demand: give up (and stop the server) after this long
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    max_wait_s: u64,
    /// Longest think time between a session's steps (and between sessions), in ms; each is
    /// drawn from a third of it up to it. Long sessions: --think-ms 2000
    #[arg(long, value_name = "MS", default_value_t = 60)]
    think_ms: u64,
    /// Servers upgraded per wave, adding up to --servers [default: 1,4,4,1 for 10]
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    waves: Option<Vec<usize>>,
    /// Which setups to run, in order
    #[arg(
        long,
        value_name = "SETUP,...",
        value_delimiter = ',',
        value_parser = setup,
        default_value = "round-robin,retry-409,sticky,mixmode,mixmode+affinity"
    )]
    setups: Vec<Setup>,
    /// Envoy's --concurrency
    #[arg(long, value_name = "N", default_value_t = 2)]
    envoy_workers: usize,
    /// Where the chart and summary go
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    out: PathBuf,
    /// Skip the walkthrough of one rescue
    #[arg(long)]
    no_walkthrough: bool,
    /// The mixmode setup only, as a fleet: two Envoys in front of the pool, both mirroring a real
    /// etcd (/usr/bin/etcd) where the servers register with leases; users split between them
    #[arg(long, conflicts_with = "soak")]
    fleet: bool,
    /// Rolling deploys back and forth under load with faults injected on the peers, for
    /// --duration (takes --servers, --users, --seed, --envoy-workers)
    #[arg(long, conflicts_with_all = ["quick", "wave_wait", "drain", "waves", "no_walkthrough", "drain_by", "quiet_ms", "think_ms"])]
    soak: bool,
}

/// A number of seconds (fractions allowed), up to a day.
fn secs(v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("not a number of seconds: {v}"))?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("seconds out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn setup(key: &str) -> Result<Setup, String> {
    Setup::ALL
        .into_iter()
        .find(|s| s.key() == key.trim())
        .ok_or_else(|| {
            let keys: Vec<&str> = Setup::ALL.iter().map(|s| s.key()).collect();
            format!("unknown setup {key:?} (one of {})", keys.join(", "))
        })
}

/// What the command line asks for.
pub enum Job {
    Demo(Box<DemoArgs>),
    Soak(SoakOptions),
}

pub struct DemoArgs {
    pub opts: RunOptions,
    pub setups: Vec<Setup>,
    pub out: PathBuf,
    pub walkthrough: bool,
    pub fleet: bool,
    /// Each mixmode setup runs once per mode (the others run with the fixed drain).
    pub drain_modes: Vec<DrainBy>,
}

impl Cli {
    /// The job, with each mode's defaults and bounds applied (`wasm`: the filter to load).
    pub fn job(self, wasm: PathBuf) -> Result<Job> {
        if self.soak {
            let duration = self.duration.unwrap_or(Duration::from_secs(600));
            let o = SoakOptions {
                duration,
                servers: self.servers.unwrap_or(6),
                users: self.users.unwrap_or(8),
                seed: self.seed,
                wasm,
                envoy_workers: self.envoy_workers,
            };
            if duration < Duration::from_secs(20) {
                bail!("--duration must be 20..=86400 seconds");
            }
            if !(3..=50).contains(&o.servers)
                || !(1..=200).contains(&o.users)
                || o.envoy_workers == 0
            {
                bail!("need 3..=50 servers, 1..=200 users, at least one Envoy worker");
            }
            return Ok(Job::Soak(o));
        }
        let servers = self.servers.unwrap_or(10);
        // Long sessions: enough users to have sessions in flight at every wave, and both drains
        // side by side.
        let long_sessions = self.think_ms >= 1000;
        let users = self.users.unwrap_or(if long_sessions { 100 } else { 8 });
        if !(2..=200).contains(&servers) || !(1..=500).contains(&users) || self.envoy_workers == 0 {
            bail!("need 2..=200 servers, 1..=500 users, at least one Envoy worker");
        }
        if self.duration.is_some_and(|d| d > Duration::from_secs(3600)) {
            bail!("--duration must be at most 3600 seconds");
        }
        if !(3..=60_000).contains(&self.think_ms) {
            bail!("--think-ms must be 3..=60000");
        }
        let quiet_ms = self.quiet_ms.unwrap_or(self.think_ms * 3 / 2 + 500);
        if quiet_ms == 0 || self.max_wait_s == 0 || quiet_ms > self.max_wait_s * 1000 {
            bail!(
                "--quiet-ms must be at least 1 and at most --max-wait-s ({} s)",
                self.max_wait_s
            );
        }
        let policy = Policy {
            quiet_ms,
            max_wait_ms: self.max_wait_s * 1000,
        };
        let modes = self.drain_by.clone().unwrap_or_else(|| {
            let modes: &[&str] = if long_sessions {
                &["fixed", "demand"]
            } else {
                &["demand"]
            };
            modes.iter().map(|m| m.to_string()).collect()
        });
        let mut drain_modes = Vec::new();
        for m in &modes {
            let mode = if m == "fixed" {
                DrainBy::Fixed
            } else {
                DrainBy::Demand(policy)
            };
            if !drain_modes.contains(&mode) {
                drain_modes.push(mode);
            }
        }
        let sizes = self.waves.unwrap_or_else(|| wave_sizes(servers));
        if sizes.iter().sum::<usize>() != servers || sizes.contains(&0) {
            bail!("--waves {sizes:?} must add up to --servers {servers}");
        }
        let mut plan = if self.quick {
            Plan {
                waves: waves_of(&sizes),
                warmup: Duration::from_millis(500),
                // As long as the default: a session cut short by a slow, busy CI machine would
                // otherwise count as mixmode's loss.
                drain: Duration::from_millis(750),
                drain_by: DrainBy::Fixed,
                down: Duration::from_millis(200),
                wave_wait: Duration::from_millis(500),
                tail: Duration::from_millis(500),
            }
        } else {
            Plan {
                waves: waves_of(&sizes),
                warmup: Duration::from_millis(1500),
                drain: Duration::from_millis(750),
                drain_by: DrainBy::Fixed,
                down: Duration::from_millis(300),
                wave_wait: Duration::from_millis(1500),
                tail: Duration::from_millis(1000),
            }
        };
        if let Some(d) = self.drain {
            plan.drain = d;
        }
        match (self.wave_wait, self.duration) {
            (Some(w), _) => plan.wave_wait = w,
            (None, Some(total)) => {
                let gaps = plan.waves.len().saturating_sub(1).max(1) as u32;
                plan.wave_wait = Duration::ZERO;
                let fixed = plan.total();
                plan.wave_wait = total.saturating_sub(fixed) / gaps;
            }
            (None, None) => {}
        }
        Ok(Job::Demo(Box::new(DemoArgs {
            opts: RunOptions {
                servers,
                workload: Workload {
                    users,
                    seed: self.seed,
                    think_ms: (self.think_ms / 3, self.think_ms),
                },
                plan,
                wasm,
                envoy_workers: self.envoy_workers,
            },
            setups: self.setups,
            out: self.out,
            walkthrough: !self.no_walkthrough,
            fleet: self.fleet,
            drain_modes,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn job(args: &[&str]) -> Result<Job> {
        let cli = Cli::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))?;
        cli.job(PathBuf::from("x.wasm"))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_modes() {
        let Ok(Job::Demo(d)) = job(&[]) else {
            panic!("not a demo")
        };
        assert_eq!(d.opts.servers, 10);
        assert_eq!(d.setups, Setup::ALL.to_vec());
        assert!(d.walkthrough && !d.fleet);
        assert_eq!(d.opts.workload.think_ms, (20, 60));
        let policy = Policy {
            quiet_ms: 590,
            max_wait_ms: 60_000,
        };
        assert_eq!(d.drain_modes, vec![DrainBy::Demand(policy)]);
        let Ok(Job::Demo(d)) = job(&["--think-ms", "2000"]) else {
            panic!("not a demo")
        };
        assert_eq!(d.opts.workload.think_ms, (666, 2000));
        assert_eq!(d.opts.workload.users, 100);
        let policy = Policy {
            quiet_ms: 3500,
            max_wait_ms: 60_000,
        };
        assert_eq!(d.drain_modes, vec![DrainBy::Fixed, DrainBy::Demand(policy)]);
        let Ok(Job::Soak(s)) = job(&["--soak", "--duration", "60"]) else {
            panic!("not a soak")
        };
        assert_eq!((s.servers, s.duration), (6, Duration::from_secs(60)));
        let Ok(Job::Demo(d)) = job(&[
            "--setups",
            "mixmode,sticky",
            "--waves",
            "2,2",
            "--servers",
            "4",
        ]) else {
            panic!("not a demo")
        };
        assert_eq!(d.setups, vec![Setup::Mixmode, Setup::Sticky]);
        assert_eq!(d.opts.plan.waves.len(), 2);
    }

    #[test]
    fn bad_arguments_are_refused_naming_them() {
        for (args, want) in [
            (&["--setups", "nope"][..], "unknown setup"),
            (&["--waves", "1,2"], "must add up"),
            (&["--soak", "--quick"], "--quick"),
            (&["--soak", "--duration", "5"], "20..=86400"),
            (&["--servers", "1"], "2..=200"),
            (&["--drain-by", "sometimes"], "--drain-by"),
            (&["--think-ms", "1"], "--think-ms"),
            (&["--quiet-ms", "9000", "--max-wait-s", "5"], "--quiet-ms"),
            (&["--bogus"], "--bogus"),
        ] {
            let e = job(args).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
