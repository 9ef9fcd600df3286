//! Reads the plugin configuration's JSON into `Config` (docs/design.md#configuration), field by
//! field. An error names the full field path as serde_path_to_error did (`redispatch.selection`,
//! `detect.statuses[1]`; `?` for a place no key names yet) with serde_json's wording.

use crate::core::config::{
    Affinity, Config, ConfigError, DemandSettings, Detect, Etcd, Heartbeat, Poll, Redispatch,
    Registry, Selection,
};
use crate::core::json::{Error, Reader, Struct};

impl From<Error> for ConfigError {
    fn from(e: Error) -> Self {
        ConfigError {
            path: e.path.clone(),
            message: e.to_string(),
        }
    }
}

impl Config {
    /// Parses and validates the plugin configuration JSON. (Here, beside the reader, so that
    /// `core::config` holds the types and their rules and depends on no parser.)
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let refuse = |path: &str, message: String| ConfigError {
            path: path.to_string(),
            message,
        };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(refuse(
                "app",
                "missing (the configuration is empty)".to_string(),
            ));
        }
        let mut r = Reader::new(bytes);
        let mut config = config(&mut r)?;
        r.end().map_err(|e| refuse("", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

/// A struct of the configuration: unknown fields are errors.
const fn conf(name: &'static str, names: &'static [&'static str], required: u32) -> Struct {
    Struct {
        name,
        names,
        required,
        deny_unknown: true,
    }
}

fn u32_(r: &mut Reader) -> Result<u32, Error> {
    let n = r.unsigned(u32::MAX.into(), "u32")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn usize_(r: &mut Reader) -> Result<usize, Error> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    let n = r.unsigned(max, "usize")?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn u64_(r: &mut Reader) -> Result<u64, Error> {
    r.unsigned(u64::MAX, "u64")
}

fn strings(r: &mut Reader) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    r.elements(&mut |r| {
        out.push(r.string()?);
        Ok(())
    })?;
    Ok(out)
}

fn statuses(r: &mut Reader) -> Result<Vec<u16>, Error> {
    let mut out = Vec::new();
    r.elements(&mut |r| {
        let n = r.unsigned(u16::MAX.into(), "u16")?;
        out.push(u16::try_from(n).unwrap_or(u16::MAX));
        Ok(())
    })?;
    Ok(out)
}

/// The configuration document (its trailing bytes are the caller's to check).
pub fn config(r: &mut Reader) -> Result<Config, ConfigError> {
    const WHAT: Struct = conf(
        "Config",
        &[
            "app",
            "pool",
            "detect",
            "redispatch",
            "registry",
            "heartbeat",
            "affinity",
            "demand",
        ],
        1,
    );
    let mut c = Config {
        app: String::new(),
        pool: "default".into(),
        detect: Detect::default(),
        redispatch: Redispatch::default(),
        registry: Registry::default(),
        heartbeat: Heartbeat::default(),
        affinity: None,
        demand: DemandSettings::default(),
    };
    r.fields(&WHAT, |r, i| {
        match i {
            0 => c.app = r.string()?,
            1 => c.pool = r.string()?,
            2 => c.detect = detect(r)?,
            3 => c.redispatch = redispatch(r)?,
            4 => c.registry = registry(r)?,
            5 => c.heartbeat = heartbeat(r)?,
            6 => c.affinity = if r.null()? { None } else { Some(affinity(r)?) },
            _ => c.demand = demand(r)?,
        }
        Ok(())
    })?;
    Ok(c)
}

fn detect(r: &mut Reader) -> Result<Detect, Error> {
    const WHAT: Struct = conf(
        "Detect",
        &["statuses", "session_version_header", "app_version_header"],
        0,
    );
    let mut d = Detect::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.statuses = statuses(r)?,
            1 => d.session_version_header = r.string()?,
            _ => d.app_version_header = r.string()?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn redispatch(r: &mut Reader) -> Result<Redispatch, Error> {
    const WHAT: Struct = conf(
        "Redispatch",
        &[
            "cluster",
            "max_attempts",
            "deadline_ms",
            "attempt_timeout_ms",
            "selection",
            "max_replay_body_bytes",
            "max_buffered_bytes",
            "retry_timeouts_for_all_methods",
        ],
        0,
    );
    let mut d = Redispatch::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.cluster = r.string()?,
            1 => d.max_attempts = u32_(r)?,
            2 => d.deadline_ms = u64_(r)?,
            3 => d.attempt_timeout_ms = u32_(r)?,
            4 => {
                d.selection = if r.variant(&["random", "freshest"])? == 0 {
                    Selection::Random
                } else {
                    Selection::Freshest
                };
            }
            5 => d.max_replay_body_bytes = usize_(r)?,
            6 => d.max_buffered_bytes = usize_(r)?,
            _ => d.retry_timeouts_for_all_methods = r.boolean()?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn registry(r: &mut Reader) -> Result<Registry, Error> {
    const WHAT: Struct = conf(
        "Registry",
        &[
            "stale_after_ms",
            "max_records",
            "allowed_cidrs",
            "cross_pool",
            "poll",
            "etcd",
        ],
        0,
    );
    let mut g = Registry::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => g.stale_after_ms = u64_(r)?,
            1 => g.max_records = u32_(r)?,
            2 => g.allowed_cidrs_text = strings(r)?,
            3 => g.cross_pool = r.boolean()?,
            4 => g.poll = if r.null()? { None } else { Some(poll(r)?) },
            _ => g.etcd = if r.null()? { None } else { Some(etcd(r)?) },
        }
        Ok(())
    })?;
    Ok(g)
}

fn poll(r: &mut Reader) -> Result<Poll, Error> {
    const WHAT: Struct = conf(
        "Poll",
        &["targets", "path", "interval_ms", "timeout_ms", "cluster"],
        1,
    );
    let mut d = Poll::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.targets = strings(r)?,
            1 => d.path = r.string()?,
            2 => d.interval_ms = u64_(r)?,
            3 => d.timeout_ms = u32_(r)?,
            _ => d.cluster = r.string()?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn etcd(r: &mut Reader) -> Result<Etcd, Error> {
    const WHAT: Struct = conf(
        "Etcd",
        &["cluster", "prefix", "poll_interval_ms", "timeout_ms"],
        0,
    );
    let mut d = Etcd::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.cluster = r.string()?,
            1 => d.prefix = r.string()?,
            2 => d.poll_interval_ms = u64_(r)?,
            _ => d.timeout_ms = u32_(r)?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn heartbeat(r: &mut Reader) -> Result<Heartbeat, Error> {
    const WHAT: Struct = conf("Heartbeat", &["path", "token"], 0);
    let mut d = Heartbeat::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.path = r.string()?,
            _ => d.token = r.string()?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn affinity(r: &mut Reader) -> Result<Affinity, Error> {
    const WHAT: Struct = conf(
        "Affinity",
        &["cookie", "max_age_s", "host_header", "secure"],
        0,
    );
    let mut d = Affinity::default();
    r.fields(&WHAT, |r, i| {
        match i {
            0 => d.cookie = r.string()?,
            1 => d.max_age_s = u64_(r)?,
            2 => d.host_header = r.string()?,
            _ => d.secure = r.boolean()?,
        }
        Ok(())
    })?;
    Ok(d)
}

fn demand(r: &mut Reader) -> Result<DemandSettings, Error> {
    const WHAT: Struct = conf("Demand", &["coalesce_ms"], 0);
    let mut d = DemandSettings::default();
    r.fields(&WHAT, |r, _| {
        d.coalesce_ms = u64_(r)?;
        Ok(())
    })?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use crate::core::config::Config;

    /// What serde_json and serde_path_to_error answered for these documents (recorded before
    /// they were replaced): a refusal reads the same, path, wording and position.
    #[test]
    fn refusals_read_as_serde_worded_them() {
        for (doc, want) in [
            ("{\"app\":\"a\",\"redispatch\":{\"max_attempts\":\"five\"}}", "redispatch.max_attempts: invalid type: string \"five\", expected u32 at line 1 column 46"),
            ("{\"app\":\"a\",\"redispatch\":{\"max_attempts\":-1}}", "redispatch.max_attempts: invalid value: integer `-1`, expected u32 at line 1 column 42"),
            ("{\"app\":\"a\",\"redispatch\":{\"max_attempts\":4294967296}}", "redispatch.max_attempts: invalid value: integer `4294967296`, expected u32 at line 1 column 50"),
            ("{\"app\":\"a\",\"redispatch\":{\"max_attempts\":1.5}}", "redispatch.max_attempts: invalid type: floating point `1.5`, expected u32 at line 1 column 43"),
            ("{\"app\":\"a\",\"redispatch\":{\"max_attempt\":3}}", "redispatch.max_attempt: unknown field `max_attempt`, expected one of `cluster`, `max_attempts`, `deadline_ms`, `attempt_timeout_ms`, `selection`, `max_replay_body_bytes`, `max_buffered_bytes`, `retry_timeouts_for_all_methods` at line 1 column 38"),
            ("{\"app\":\"a\",\"colour\":1}", "colour: unknown field `colour`, expected one of `app`, `pool`, `detect`, `redispatch`, `registry`, `heartbeat`, `affinity`, `demand` at line 1 column 19"),
            ("{\"app\":\"a\",\"heartbeat\":{\"path\":\"/x\",\"pathh\":1}}", "heartbeat.pathh: unknown field `pathh`, expected `path` or `token` at line 1 column 43"),
            ("{\"app\":\"a\",\"app\":\"b\"}", "duplicate field `app` at line 1 column 16"),
            ("{}", "missing field `app` at line 1 column 2"),
            ("{\"app\":\"a\",\"registry\":{\"poll\":{}}}", "registry.poll: missing field `targets` at line 1 column 32"),
            ("{\"app\":\"a\",\"redispatch\":{\"selection\":\"round-robin\"}}", "redispatch.selection: unknown variant `round-robin`, expected `random` or `freshest` at line 1 column 50"),
            ("{\"app\":\"a\",\"redispatch\":{\"selection\":{\"freshest\":null}}}", "OK app=\"a\" sel=Freshest"),
            ("{\"app\":\"a\",\"redispatch\":{\"selection\":7}}", "redispatch.selection: expected value at line 1 column 38"),
            ("{\"app\":\"a\",\"detect\":{\"statuses\":[409,\"x\"]}}", "detect.statuses[1]: invalid type: string \"x\", expected u16 at line 1 column 40"),
            ("{\"app\":\"a\",\"detect\":{\"statuses\":[409,]}}", "detect.statuses: trailing comma at line 1 column 38"),
            ("{\"app\":\"a\",\"detect\":{\"statuses\":409}}", "detect.statuses: invalid type: integer `409`, expected a sequence at line 1 column 35"),
            ("{\"app\":\"a\",\"affinity\":{\"secure\":\"yes\"}}", "affinity.secure: invalid type: string \"yes\", expected a boolean at line 1 column 37"),
            ("{\"app\":\"a\",\"demand\":{\"coalesce_ms\":-5}}", "demand.coalesce_ms: invalid value: integer `-5`, expected u64 at line 1 column 37"),
            ("{\"app\":\"a\",\"demand\":{\"window_ms\":5}}", "demand.window_ms: unknown field `window_ms`, expected `coalesce_ms` at line 1 column 32"),
            ("{\"app\":\"a\",\"affinity\":5}", "affinity: invalid type: integer `5`, expected struct Affinity at line 1 column 23"),
            ("{\"app\":\"a\" \"pool\":\"p\"}", "?: expected `,` or `}` at line 1 column 12"),
            ("{\"app\":\"a\",}", "?: trailing comma at line 1 column 12"),
            ("{\"app\":\"a\",\n \"pool\": nul}", "pool: expected ident at line 2 column 13"),
            ("{\"app\":\"a\"} x", "trailing characters at line 1 column 13"),
            ("[\"checkout\"]", "OK app=\"checkout\" sel=Random"),
            ("[]", "invalid length 0, expected struct Config with 8 elements at line 1 column 2"),
            ("{\"app\":\"a\\u00e9\\ud83d\\ude00\"}", "app: must be at most 128 printable ASCII characters without spaces"),
            ("{\"app\":\"a\\x\"}", "app: invalid escape at line 1 column 11"),
            ("{\"app\":\"a", "app: EOF while parsing a string at line 1 column 9"),
            ("{\"app\":01}", "app: invalid number at line 1 column 9"),
            ("5", "invalid type: integer `5`, expected struct Config at line 1 column 1"),
        ] {
            let got = match Config::parse(doc.as_bytes()) {
                Ok(c) => format!("OK app={:?} sel={:?}", c.app, c.redispatch.selection),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want, "{doc}");
        }
    }
}
