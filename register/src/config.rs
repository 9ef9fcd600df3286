use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The defaults match the filter's (`registry.etcd.prefix`, `pool`) so that a server registered
/// with only `--app --version --address` is seen by a filter configured with only `app`.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";
pub const DEFAULT_PREFIX: &str = "/mixmode/";
pub const DEFAULT_POOL: &str = "default";
/// The filter's default `registry.stale_after_ms` is 15 s; a lease of the same length makes a
/// dead server vanish from etcd about when a pushed record would go stale.
pub const DEFAULT_TTL_SECS: u64 = 15;
/// etcd raises any shorter TTL to 2 s without saying so; refuse it instead of surprising.
pub const MIN_TTL_SECS: u64 = 2;
/// etcd's own ceiling (`MaxLeaseTTL`); a larger TTL is refused by etcd at grant time.
pub const MAX_TTL_SECS: u64 = 9_000_000_000;

/// Where etcd's JSON gateway listens: plain HTTP only (etcd 3.4's gateway on the client port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, ConfigError> {
        let bad = |why: &str| ConfigError::new("etcd", format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (etcd's JSON gateway, no TLS)"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("expected http://host:port with no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            None => 2379,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("port must be 1-65535")),
            },
        };
        Ok(Endpoint { host, port })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// One server's registration: what goes into etcd and how long it outlives its last keep-alive.
#[derive(Clone, Debug)]
pub struct Config {
    pub etcd: Endpoint,
    pub prefix: String,
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: SocketAddr,
    pub ttl_secs: u64,
}

impl Config {
    /// Validates everything a filter would otherwise skip at poll time (a key it cannot parse
    /// is logged and ignored there, which would leave the server silently unregistered).
    pub fn new(
        etcd: &str,
        prefix: &str,
        pool: &str,
        app: &str,
        version: &str,
        address: &str,
        ttl_secs: u64,
    ) -> Result<Config, ConfigError> {
        let etcd = Endpoint::parse(etcd)?;
        check_prefix(prefix)?;
        check_segment("pool", pool)?;
        check_segment("app", app)?;
        check_segment("version", version)?;
        let address = parse_address(address)?;
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(ConfigError::new(
                "ttl",
                format!("{ttl_secs}: must be whole seconds, {MIN_TTL_SECS} to {MAX_TTL_SECS}"),
            ));
        }
        Ok(Config {
            etcd,
            prefix: prefix.to_string(),
            pool: pool.to_string(),
            app: app.to_string(),
            version: version.to_string(),
            address,
            ttl_secs,
        })
    }

    /// `<prefix><pool>/<app>/<version>/<ip:port>` (docs/design.md#the-registry).
    pub fn key(&self) -> String {
        format!(
            "{}{}/{}/{}/{}",
            self.prefix, self.pool, self.app, self.version, self.address
        )
    }

    /// The record, equal to the key's parts: the filter skips a key whose value disagrees.
    pub fn value(&self) -> String {
        serde_json::json!({
            "pool": self.pool,
            "app": self.app,
            "version": self.version,
            "address": self.address.to_string(),
        })
        .to_string()
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    /// A third of the TTL leaves two more chances before etcd drops the lease.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.ttl_secs.saturating_mul(1000) / 3)
    }

    /// One request may not eat the next keep-alive's slot.
    pub fn request_timeout(&self) -> Duration {
        self.keepalive_interval().min(Duration::from_secs(3))
    }
}

fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || !prefix.ends_with('/') {
        return Err(ConfigError::new(
            "prefix",
            format!("{prefix:?}: must be non-empty and end with '/' (e.g. {DEFAULT_PREFIX:?})"),
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(ConfigError::new("prefix", "contains a control character"));
    }
    Ok(())
}

fn check_segment(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if value.contains('/') {
        return Err(ConfigError::new(
            field,
            format!("{value:?}: must not contain '/' (it separates the key's parts)"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            format!("{value:?}: contains a control character"),
        ));
    }
    Ok(())
}

fn parse_address(address: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = address.parse().map_err(|_| {
        ConfigError::new(
            "address",
            format!(
                "{address:?}: expected ip:port (e.g. 10.0.0.7:8080 or [::1]:8080), no host names"
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(ConfigError::new("address", format!("{address:?}: port 0")));
    }
    if addr.ip().is_unspecified() {
        return Err(ConfigError::new(
            "address",
            format!("{address:?}: an unspecified address cannot receive requests; give the address peers reach"),
        ));
    }
    Ok(addr)
}

/// A refused input, naming the field (as the command-line flag without `--`; empty when the
/// input is not a known flag at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "--{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(address: &str, ttl: u64) -> Result<Config, ConfigError> {
        Config::new(
            "http://127.0.0.1:2379",
            "/mixmode/",
            "pool-a",
            "checkout",
            "2",
            address,
            ttl,
        )
    }

    #[test]
    fn key_and_value_carry_the_same_parts() {
        let c = cfg("10.0.0.7:8080", 10).unwrap();
        assert_eq!(c.key(), "/mixmode/pool-a/checkout/2/10.0.0.7:8080");
        let v: serde_json::Value = serde_json::from_str(&c.value()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"pool": "pool-a", "app": "checkout", "version": "2",
                               "address": "10.0.0.7:8080"})
        );
    }

    #[test]
    fn ipv6_address_is_bracketed_in_key() {
        let c = cfg("[::1]:9000", 10).unwrap();
        assert_eq!(c.key(), "/mixmode/pool-a/checkout/2/[::1]:9000");
    }

    #[test]
    fn refuses_host_names_port_zero_and_unspecified() {
        assert_eq!(cfg("localhost:80", 10).unwrap_err().field, "address");
        assert_eq!(cfg("10.0.0.7", 10).unwrap_err().field, "address");
        assert_eq!(cfg("10.0.0.7:0", 10).unwrap_err().field, "address");
        assert_eq!(cfg("0.0.0.0:80", 10).unwrap_err().field, "address");
    }

    #[test]
    fn refuses_ttl_below_etcd_minimum() {
        assert_eq!(cfg("10.0.0.7:80", 1).unwrap_err().field, "ttl");
        assert_eq!(cfg("10.0.0.7:80", 0).unwrap_err().field, "ttl");
        assert!(cfg("10.0.0.7:80", 2).is_ok());
    }

    #[test]
    fn refuses_slash_and_empty_segments() {
        let e = Config::new("http://h:1", "/m/", "a/b", "x", "1", "10.0.0.1:1", 5);
        assert_eq!(e.unwrap_err().field, "pool");
        let e = Config::new("http://h:1", "/m/", "p", "", "1", "10.0.0.1:1", 5);
        assert_eq!(e.unwrap_err().field, "app");
        let e = Config::new("http://h:1", "/m", "p", "x", "1", "10.0.0.1:1", 5);
        assert_eq!(e.unwrap_err().field, "prefix");
    }

    #[test]
    fn endpoint_forms() {
        let e = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2379));
        let e = Endpoint::parse("http://[::1]:23/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 23));
        assert_eq!(e.authority(), "[::1]:23");
        assert_eq!(Endpoint::parse("http://etcd").unwrap().port, 2379);
        assert!(Endpoint::parse("https://h:1").is_err());
        assert!(Endpoint::parse("http://h:1/v3").is_err());
        assert!(Endpoint::parse("http://h:x").is_err());
    }

    #[test]
    fn keepalive_is_a_third_of_ttl() {
        let c = cfg("10.0.0.7:80", 2).unwrap();
        assert_eq!(c.keepalive_interval(), Duration::from_millis(666));
    }
}
