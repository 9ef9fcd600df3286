use clap::Parser;

use crate::config::{
    Config, ConfigError, DEFAULT_ETCD, DEFAULT_POOL, DEFAULT_PREFIX, DEFAULT_TTL_SECS,
};

/// Registers one app server in etcd as <prefix><pool>/<app>/<version>/<ip:port>, keeps its lease
/// alive every ttl/3 and revokes it on SIGTERM or Ctrl-C (exit 0). A lost lease is replaced.
///
/// With -- COMMAND, runs the server itself: registers once IP:PORT accepts TCP connections,
/// deregisters when the command exits (and exits with its code), and on SIGTERM/SIGINT
/// deregisters first, then passes the signal on to the command and waits for it.
#[derive(Debug, Parser)]
#[command(
    name = "mixmode-register",
    // `--version` is the server's version, not this program's.
    disable_version_flag = true,
    after_help = "Exit codes: 0 deregistered, 1 etcd refused or could not revoke, 2 bad arguments;\n\
                  with a COMMAND, the command's own exit code (128+N if killed by signal N)."
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
    /// The server to run, registered while it lives
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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
