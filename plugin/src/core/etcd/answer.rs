//! An etcd range answer: parsed whole or refused, each key checked against its value and the
//! configuration.

use crate::core::codec::stored_struct;
use crate::core::config::{is_token_text, Config, Etcd};
use crate::core::etcd::b64_decode;
use crate::core::json::{self, Reader, Struct};
use crate::core::positions::Positions;
use crate::core::registry::RegistryError;
use std::net::SocketAddr;

/// What a struct of etcd's answer is made of (other keys are ignored).
const fn answer(name: &'static str, names: &'static [&'static str], required: u32) -> Struct {
    Struct {
        name,
        names,
        required,
        deny_unknown: false,
    }
}

/// `{"revision": n}` (etcd's gateway writes 64-bit numbers as strings; both are read).
fn header(r: &mut Reader) -> Result<i64, json::Error> {
    const WHAT: Struct = answer("Header", &["revision"], 1);
    let mut revision = 0;
    r.fields(&WHAT, |r, _| {
        revision = r.int_or_string()?;
        Ok(())
    })?;
    Ok(revision)
}

/// One of `kvs`: its key, value (both base64) and mod_revision.
struct KvJson {
    key: String,
    value: String,
    mod_revision: i64,
}

fn kv(r: &mut Reader) -> Result<KvJson, json::Error> {
    const WHAT: Struct = answer("KvJson", &["key", "value", "mod_revision"], 1);
    let mut kv = KvJson {
        key: String::new(),
        value: String::new(),
        mod_revision: 0,
    };
    r.fields(&WHAT, |r, i| {
        match i {
            0 => kv.key = r.string()?,
            1 => kv.value = r.string()?,
            _ => kv.mod_revision = r.int_or_string()?,
        }
        Ok(())
    })?;
    Ok(kv)
}

/// A range answer: `header.revision` and, unless `revision_only`, `kvs` (absent in an empty
/// range: a valid empty snapshot). The whole document is checked either way.
fn range(body: &[u8], revision_only: bool) -> Result<(i64, Vec<KvJson>), json::Error> {
    const RANGE: Struct = answer("Range", &["header", "kvs"], 1);
    const HEAD: Struct = answer("Head", &["header"], 1);
    let mut r = Reader::new(body);
    let (mut revision, mut kvs) = (0, Vec::new());
    let what = if revision_only { &HEAD } else { &RANGE };
    r.fields(what, |r, i| {
        if i == 0 {
            revision = header(r)?;
        } else {
            r.elements(&mut |r| {
                kvs.push(kv(r)?);
                Ok(())
            })?;
        }
        Ok(())
    })?;
    r.end()?;
    Ok((revision, kvs))
}

/// A record's value: `{"pool", "app", "version", "address"}`.
#[derive(Default)]
struct Value {
    pool: String,
    app: String,
    version: String,
    address: String,
}

fn value(bytes: &[u8]) -> Result<Value, json::Error> {
    const WHAT: Struct = answer("Value", &["pool", "app", "version", "address"], 0b1111);
    let mut r = Reader::new(bytes);
    let mut v = Value::default();
    r.fields(&WHAT, |r, i| {
        let s = r.string()?;
        match i {
            0 => v.pool = s,
            1 => v.app = s,
            2 => v.version = s,
            _ => v.address = s,
        }
        Ok(())
    })?;
    r.end()?;
    Ok(v)
}

/// A record etcd lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Mirrored {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: String,
}

stored_struct!(Mirrored {
    pool,
    app,
    version,
    address
});

/// `header.revision` of an answer that parses whole (the rest is checked for syntax, not
/// decoded: an unchanged snapshot of 10,000 keys allocates nothing). A body cut off after its
/// header is garbage, never the known revision.
pub(super) fn revision(body: &[u8]) -> Result<i64, SyncError> {
    range(body, true)
        .map(|(revision, _)| revision)
        .map_err(|e| SyncError::Garbage(e.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// No answer: etcd unreachable, reset, or timed out.
    NoAnswer,
    Status(u16),
    Garbage(String),
    Store(RegistryError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::NoAnswer => f.write_str("no answer"),
            SyncError::Status(s) => write!(f, "status {s}"),
            SyncError::Garbage(e) => write!(f, "not a range answer: {e}"),
            SyncError::Store(e) => write!(f, "registry: {e:?}"),
        }
    }
}

/// The records of a range answer; keys whose value does not agree are skipped with a reason.
pub fn decode(
    cfg: &Config,
    etcd: &Etcd,
    body: &[u8],
) -> Result<(i64, Vec<Mirrored>, Vec<String>), SyncError> {
    let (revision, kvs) = range(body, false).map_err(|e| SyncError::Garbage(e.to_string()))?;
    let mut skipped = Vec::new();
    let mut chosen: Vec<(i64, Mirrored)> = Vec::with_capacity(kvs.len());
    // Where in `chosen` each `(pool, app, address)` is.
    let mut at = Positions::with_capacity(kvs.len());
    for kv in &kvs {
        let key = b64_decode(&kv.key).map(|k| String::from_utf8_lossy(&k).into_owned());
        let key_text = key.clone().unwrap_or_else(|| kv.key.clone());
        match check(cfg, etcd, key.as_deref(), &kv.value) {
            Ok(m) => {
                let h = at.hash(&[m.pool.as_bytes(), m.app.as_bytes(), m.address.as_bytes()]);
                let found = at.find(h, &mut |i| {
                    chosen.get(i).is_some_and(|(_, c)| {
                        c.address == m.address && c.app == m.app && c.pool == m.pool
                    })
                });
                match found.and_then(|i| chosen.get_mut(i)) {
                    // Two keys for one server (it re-registered as another version before its
                    // old lease expired): the latest write wins.
                    Some(prev) => {
                        if kv.mod_revision >= prev.0 {
                            *prev = (kv.mod_revision, m);
                        }
                    }
                    None => {
                        at.add(h, chosen.len());
                        chosen.push((kv.mod_revision, m));
                    }
                }
            }
            Err(why) => skipped.push(format!("{key_text:?}: {why}")),
        }
    }
    Ok((
        revision,
        chosen.into_iter().map(|(_, m)| m).collect(),
        skipped,
    ))
}

fn check(
    cfg: &Config,
    etcd: &Etcd,
    key: Option<&str>,
    value_b64: &str,
) -> Result<Mirrored, String> {
    let key = key.ok_or("key is not base64")?;
    let value = b64_decode(value_b64).ok_or("value is not base64")?;
    let v = self::value(&value).map_err(|e| format!("value is not a record: {e}"))?;
    for (name, text) in [("pool", &v.pool), ("app", &v.app), ("version", &v.version)] {
        if !is_token_text(text) {
            return Err(format!("bad {name} {text:?}"));
        }
    }
    let expected = format!(
        "{}{}/{}/{}/{}",
        etcd.prefix, v.pool, v.app, v.version, v.address
    );
    if key != expected {
        return Err(format!(
            "value disagrees with the key (value says {expected:?})"
        ));
    }
    if !cfg.registry.cross_pool && v.pool != cfg.pool {
        return Err("another pool".into());
    }
    let addr: SocketAddr = v.address.parse().map_err(|_| "address is not ip:port")?;
    if addr.port() == 0 {
        return Err("address has port 0".into());
    }
    // A registered address receives users' requests: the same rule as push heartbeats.
    if !cfg
        .registry
        .allowed_cidrs
        .iter()
        .any(|n| n.contains(addr.ip()))
    {
        return Err("address outside registry.allowed_cidrs".into());
    }
    Ok(Mirrored {
        pool: v.pool,
        app: v.app,
        version: v.version,
        address: addr.to_string(),
    })
}
