use std::path::PathBuf;

use clap::Parser;

use crate::config::{
    Config, ConfigError, DEFAULT_ETCD, DEFAULT_POOL, DEFAULT_PREFIX, DEFAULT_TTL_SECS,
};
use crate::demand::{Policy, Target};
use crate::drain::DemandSource;

/// `--quiet-ms` default: a session's longest think time with room to spare.
pub const DEFAULT_QUIET_MS: u64 = 30_000;
/// `--max-wait-s` default.
pub const DEFAULT_MAX_WAIT_S: u64 = 600;

/// Registers one app server in etcd as <prefix><pool>/<app>/<version>/<ip:port>, keeps its lease
/// alive every ttl/3 and revokes it on SIGTERM or Ctrl-C (exit 0). A lost lease is replaced.
///
/// With -- COMMAND, runs the server itself: registers once IP:PORT accepts TCP connections,
/// deregisters when the command exits (and exits with its code), and on SIGTERM/SIGINT
/// deregisters first, then passes the signal on to the command and waits for it.
///
/// With --drain-while-needed, a shutdown (SIGTERM, SIGINT, or SIGUSR1 from the server itself)
/// drains first: the server leaves the load balancer (--ready-file is deleted) but keeps serving
/// and stays registered as a rescue target until no listed Envoy has needed its version for
/// --quiet-ms (or --max-wait-s passed); then it deregisters and the command gets the signal.
#[derive(Debug, Parser)]
#[command(
    name = "mixmode-register",
    // `--version` is the server's version, not this program's.
    disable_version_flag = true,
    after_help = "Exit codes: 0 deregistered, 1 etcd refused or could not revoke, 2 bad arguments,\n\
                  3 the drain ended at --max-wait-s with the version still needed;\n\
                  with a COMMAND, the command's own exit code (128+N if killed by signal N),\n\
                  or 3 after a drain that ended at --max-wait-s."
)]
pub struct Args {
    /// etcd client URL, plain http
    #[arg(long, value_name = "http://HOST:PORT", default_value = DEFAULT_ETCD)]
    pub etcd: String,
    /// Key prefix, ends with '/' (as the filter's registry.etcd.prefix)
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// The server's pool (as the filter's pool)
    #[arg(long, default_value = DEFAULT_POOL)]
    pub pool: String,
    /// The application name, as the filter's app
    #[arg(long)]
    pub app: String,
    /// The version this server runs
    #[arg(long)]
    pub version: String,
    /// ip:port where proxies reach this server (no host names)
    #[arg(long, value_name = "IP:PORT")]
    pub address: String,
    /// Lease TTL in whole seconds, >= 2 (15 matches registry.stale_after_ms 15000)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL_SECS, value_parser = whole_seconds)]
    pub ttl: u64,
    /// On shutdown, keep the server registered while these Envoys need its version: each
    /// Envoy's heartbeat URL (?demand is added), e.g.
    /// http://10.0.0.2:10001/.well-known/mixmode/heartbeat; an Envoy that cannot be read counts
    /// as still needing it
    #[arg(long, value_name = "URL", num_args = 1..)]
    pub drain_while_needed: Vec<String>,
    /// The Envoys' heartbeat.token, for reading their demand
    #[arg(long, env = "MIXMODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Leave once the version has not been needed for this long on any listed Envoy
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_QUIET_MS, requires = "drain_while_needed")]
    pub quiet_ms: u64,
    /// Give up draining after this long (stderr says so; exit 3)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MAX_WAIT_S, value_parser = whole_seconds, requires = "drain_while_needed")]
    pub max_wait_s: u64,
    /// Created once the server is registered, deleted when it leaves the load balancer (a
    /// readiness probe or health check reads it)
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// The server to run, registered while it lives
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What a drain needs: set by --drain-while-needed.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    pub target: Target,
    pub policy: Policy,
    pub sources: Vec<DemandSource>,
}

fn whole_seconds(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| "must be whole seconds (e.g. 15)".to_string())
}

impl Args {
    /// The registration the arguments describe, validated (the error names the flag).
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::new(
            &self.etcd,
            &self.prefix,
            &self.pool,
            &self.app,
            &self.version,
            &self.address,
            self.ttl,
        )
    }

    /// The drain the arguments ask for, validated; `None` without --drain-while-needed.
    pub fn drain(&self) -> Result<Option<DrainConfig>, ConfigError> {
        if self.drain_while_needed.is_empty() {
            return Ok(None);
        }
        let token = self.token.as_deref().ok_or_else(|| {
            ConfigError::new(
                "token",
                "required with --drain-while-needed (or MIXMODE_TOKEN): the demand listing needs the heartbeat token",
            )
        })?;
        if self.quiet_ms == 0 {
            return Err(ConfigError::new("quiet-ms", "must be at least 1"));
        }
        if self.max_wait_s == 0 {
            return Err(ConfigError::new("max-wait-s", "must be at least 1"));
        }
        let max_wait_ms = self.max_wait_s.saturating_mul(1000);
        if self.quiet_ms > max_wait_ms {
            return Err(ConfigError::new(
                "quiet-ms",
                format!(
                    "{} ms is longer than --max-wait-s {} s: the drain could never end quiet",
                    self.quiet_ms, self.max_wait_s
                ),
            ));
        }
        let sources = self
            .drain_while_needed
            .iter()
            .map(|url| DemandSource::parse(url, token))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(DrainConfig {
            target: Target {
                pool: self.pool.clone(),
                app: self.app.clone(),
                version: self.version.clone(),
            },
            policy: Policy {
                quiet_ms: self.quiet_ms,
                max_wait_ms,
            },
            sources,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("mixmode-register").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_both_flag_forms() {
        let c = run(&[
            "--app",
            "checkout",
            "--version=2",
            "--address",
            "10.0.0.7:80",
        ])
        .unwrap();
        assert_eq!(c.key(), "/mixmode/default/checkout/2/10.0.0.7:80");
        assert_eq!(c.ttl_secs, 15);
        assert_eq!(c.etcd.port, 2379);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = run(&[
            "--app",
            "a",
            "--version",
            "1",
            "--address",
            "1.2.3.4:5",
            "--ttl",
            "1.5",
        ])
        .unwrap_err();
        assert!(e.contains("--ttl") && e.contains("whole seconds"), "{e}");
        let e = run(&["--app", "a", "--version", "1"]).unwrap_err();
        assert!(e.contains("--address"), "{e}");
        let e = run(&["--app"]).unwrap_err();
        assert!(e.contains("--app"), "{e}");
        assert!(run(&["--bogus", "x"]).unwrap_err().contains("--bogus"));
        let e = run(&["--app", "a", "--version", "1", "--address", "localhost:1"]).unwrap_err();
        assert!(e.starts_with("--address"), "{e}");
    }

    fn drain(args: &[&str]) -> Result<Option<DrainConfig>, String> {
        let base = [
            "mixmode-register",
            "--app",
            "a",
            "--version",
            "1",
            "--address",
            "1.2.3.4:5",
        ];
        let args =
            Args::try_parse_from(base.iter().chain(args).copied()).map_err(|e| e.to_string())?;
        args.drain().map_err(|e| e.to_string())
    }

    #[test]
    fn drain_flags_defaults_and_errors() {
        assert!(drain(&[]).unwrap().is_none());
        let d = drain(&[
            "--drain-while-needed",
            "http://127.0.0.1:1/hb",
            "http://127.0.0.1:2/hb",
            "--token",
            "t",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(d.sources.len(), 2);
        assert_eq!(
            d.policy,
            Policy {
                quiet_ms: 30_000,
                max_wait_ms: 600_000
            }
        );
        assert_eq!(d.target.version, "1");
        let d = drain(&[
            "--drain-while-needed",
            "http://127.0.0.1:1/hb",
            "--token",
            "t",
            "--quiet-ms",
            "300",
            "--max-wait-s",
            "2",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            d.policy,
            Policy {
                quiet_ms: 300,
                max_wait_ms: 2_000
            }
        );
        for (args, want) in [
            (
                &["--drain-while-needed", "http://127.0.0.1:1/hb"][..],
                "--token",
            ),
            (
                &[
                    "--drain-while-needed",
                    "http://h:1/hb",
                    "--token",
                    "t",
                    "--quiet-ms",
                    "5000",
                    "--max-wait-s",
                    "4",
                ],
                "--quiet-ms",
            ),
            (
                &[
                    "--drain-while-needed",
                    "http://h:1/hb",
                    "--token",
                    "t",
                    "--quiet-ms",
                    "0",
                ],
                "--quiet-ms",
            ),
            (
                &["--drain-while-needed", "ftp://h:1/hb", "--token", "t"],
                "--drain-while-needed",
            ),
            (&["--quiet-ms", "300"], "--drain-while-needed"),
        ] {
            let e = drain(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn command_after_double_dash() {
        let a = Args::try_parse_from([
            "mixmode-register",
            "--app",
            "a",
            "--version",
            "1",
            "--address",
            "1.2.3.4:5",
            "--",
            "./server",
            "--port",
            "5",
        ])
        .unwrap();
        assert_eq!(a.command, ["./server", "--port", "5"]);
    }
}
