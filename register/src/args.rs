use crate::config::{
    Config, ConfigError, DEFAULT_ETCD, DEFAULT_POOL, DEFAULT_PREFIX, DEFAULT_TTL_SECS,
};

pub const USAGE: &str = "\
usage: mixmode-register --app A --version V --address IP:PORT [--pool P] [--ttl SECONDS]
                        [--etcd http://HOST:PORT] [--prefix /mixmode/] [-- COMMAND [ARG...]]

Registers one app server in etcd as <prefix><pool>/<app>/<version>/<ip:port>, keeps its lease
alive every ttl/3 and revokes it on SIGTERM or Ctrl-C (exit 0). A lost lease is replaced.

With -- COMMAND, runs the server itself: registers once IP:PORT accepts TCP connections,
deregisters when the command exits (and exits with its code), and on SIGTERM/SIGINT
deregisters first, then passes the signal on to the command and waits for it.

  --etcd     etcd client URL, plain http (default http://127.0.0.1:2379)
  --prefix   key prefix, ends with '/' (default /mixmode/, as the filter's registry.etcd.prefix)
  --pool     the server's pool (default \"default\", as the filter's pool)
  --app      the application name, as the filter's app
  --version  the version this server runs
  --address  ip:port where proxies reach this server (no host names)
  --ttl      lease TTL in whole seconds, >= 2 (default 15, as registry.stale_after_ms)

Exit codes: 0 deregistered, 1 etcd refused or could not revoke, 2 bad arguments;
with a COMMAND, the command's own exit code (128+N if killed by signal N).";

#[derive(Debug)]
pub enum Command {
    /// Register; with a non-empty `command`, run it and tie the registration to its life.
    Run {
        config: Config,
        command: Vec<String>,
    },
    Help,
}

/// Parses `--flag value` and `--flag=value` (arguments after the program name).
pub fn parse_args<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut etcd = DEFAULT_ETCD.to_string();
    let mut prefix = DEFAULT_PREFIX.to_string();
    let mut pool = DEFAULT_POOL.to_string();
    let mut app = None;
    let mut version = None;
    let mut address = None;
    let mut ttl = DEFAULT_TTL_SECS.to_string();
    let mut command = Vec::new();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "--" {
            command.extend(args.by_ref());
            if command.is_empty() {
                return Err(ConfigError::new("", "-- must be followed by a command"));
            }
            break;
        }
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot: (&'static str, &mut String) = match flag.as_str() {
            "--etcd" => ("etcd", &mut etcd),
            "--prefix" => ("prefix", &mut prefix),
            "--pool" => ("pool", &mut pool),
            "--ttl" => ("ttl", &mut ttl),
            "--app" => ("app", app.get_or_insert_with(String::new)),
            "--version" => ("version", version.get_or_insert_with(String::new)),
            "--address" => ("address", address.get_or_insert_with(String::new)),
            _ => return Err(ConfigError::new("", format!("unknown argument {arg:?}"))),
        };
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| ConfigError::new(slot.0, "needs a value"))?,
        };
        *slot.1 = value;
    }
    let app = app.ok_or_else(|| ConfigError::new("app", "is required"))?;
    let version = version.ok_or_else(|| ConfigError::new("version", "is required"))?;
    let address = address.ok_or_else(|| ConfigError::new("address", "is required"))?;
    let ttl_secs: u64 = ttl.parse().map_err(|_| {
        ConfigError::new("ttl", format!("{ttl:?}: must be whole seconds (e.g. 15)"))
    })?;
    let config = Config::new(&etcd, &prefix, &pool, &app, &version, &address, ttl_secs)?;
    Ok(Command::Run { config, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse_args(args.iter().copied())? {
            Command::Run { config, .. } => Ok(config),
            Command::Help => panic!("help"),
        }
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
        ]);
        assert_eq!(e.unwrap_err().field, "ttl");
        assert_eq!(
            run(&["--app", "a", "--version", "1"]).unwrap_err().field,
            "address"
        );
        assert_eq!(run(&["--app"]).unwrap_err().field, "app");
        assert!(run(&["--bogus", "x"])
            .unwrap_err()
            .reason
            .contains("--bogus"));
    }
}
