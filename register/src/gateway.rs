//! The calls of etcd's JSON gateway (`/v3/...` on the client port) a registration needs, and the
//! few more the tests read etcd with (ranges, deletes, lease TTLs, `/metrics`): mixmode's one
//! etcd client. One short HTTP/1.1 connection per call: calls are seconds apart, and a fresh
//! connection notices at once that etcd has restarted on the same port.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hyper::body::Bytes;
use hyper::{header, Method};
use serde_json::{json, Value};

use crate::config::Endpoint;

/// etcd's answers to a registration's calls are a few hundred bytes; anything far larger is not
/// etcd.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A range, or `/metrics`, grows with what etcd holds.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;

/// One key as a range returns it, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// 0 when the key has no lease.
    pub lease: i64,
}

/// gRPC status code etcd returns (as `"code"` in the JSON error) for an unknown lease.
const GRPC_NOT_FOUND: i64 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// No connection, timeout, or the connection broke: etcd may be down or restarting.
    Unreachable(String),
    /// etcd says the lease does not exist (expired or revoked).
    LeaseNotFound,
    /// A non-200 answer other than a missing lease.
    Refused { status: u16, message: String },
    /// A 200 whose body is not what etcd sends.
    BadAnswer(String),
    /// [`crate::Registration::start`] was called outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Unreachable(e) => write!(f, "etcd unreachable: {e}"),
            GatewayError::LeaseNotFound => write!(f, "etcd: lease not found"),
            GatewayError::Refused { status, message } => {
                write!(f, "etcd answered {status}: {message}")
            }
            GatewayError::BadAnswer(e) => write!(f, "etcd answer not understood: {e}"),
            GatewayError::NoRuntime => f.write_str("Registration::start needs a tokio runtime"),
        }
    }
}

impl std::error::Error for GatewayError {}

#[derive(Clone, Debug)]
pub struct Gateway {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Gateway {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Gateway {
        Gateway { endpoint, timeout }
    }

    /// Returns the lease ID. etcd may grant a different TTL than asked (it raises TTLs under 2 s).
    pub async fn grant(&self, ttl_secs: u64) -> Result<i64, GatewayError> {
        let answer = self
            .call("/v3/lease/grant", json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        if let Some(e) = answer.get("error").and_then(Value::as_str) {
            return Err(GatewayError::Refused {
                status: 200,
                message: e.to_string(),
            });
        }
        int_field(&answer, "ID")
            .filter(|id| *id != 0)
            .ok_or_else(|| GatewayError::BadAnswer(format!("grant without ID: {answer}")))
    }

    pub async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), GatewayError> {
        self.call(
            "/v3/kv/put",
            json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string() }),
        )
        .await
        .map(drop)
    }

    /// Puts the key only if it is not already attached to `lease` (someone deleted it, or it
    /// was moved): a read-only transaction otherwise, so no new revision for pollers to fetch.
    /// Returns whether it had to write.
    pub async fn ensure(&self, key: &str, value: &str, lease: i64) -> Result<bool, GatewayError> {
        let k = B64.encode(key);
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "key": k, "target": "LEASE", "result": "EQUAL",
                                  "lease": lease.to_string() }],
                    "failure": [{ "request_put": { "key": k, "value": B64.encode(value),
                                                   "lease": lease.to_string() } }],
                }),
            )
            .await?;
        Ok(!answer
            .get("succeeded")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// Returns the remaining TTL in seconds; 0 means the lease is gone.
    pub async fn keepalive(&self, lease: i64) -> Result<i64, GatewayError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        // A streaming call: the gateway wraps the one message in {"result": …} (or {"error": …}).
        if let Some(e) = answer.get("error") {
            return Err(classify_error(200, e));
        }
        let result = answer
            .get("result")
            .ok_or_else(|| GatewayError::BadAnswer(format!("keepalive: {answer}")))?;
        // etcd omits TTL (proto3 default 0) when the lease no longer exists.
        Ok(int_field(result, "TTL").unwrap_or(0))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), GatewayError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// Every key under `prefix`, sorted (a `Range` call).
    pub async fn range_prefix(&self, prefix: &str) -> Result<Vec<Kv>, GatewayError> {
        let answer = self
            .call_limited(
                "/v3/kv/range",
                json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes())) }),
                MAX_LISTING_BYTES,
            )
            .await?;
        let text = |kv: &Value, name: &str| -> Result<String, GatewayError> {
            let raw = kv.get(name).and_then(Value::as_str).unwrap_or("");
            B64.decode(raw)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|_| GatewayError::BadAnswer(format!("bad base64 in {name}: {raw:?}")))
        };
        // An empty range has no "kvs" at all.
        answer
            .get("kvs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|kv| {
                Ok(Kv {
                    key: text(kv, "key")?,
                    value: text(kv, "value")?,
                    lease: int_field(kv, "lease").unwrap_or(0),
                })
            })
            .collect()
    }

    /// Deletes one key; returns how many were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<u64, GatewayError> {
        let answer = self
            .call("/v3/kv/deleterange", json!({ "key": B64.encode(key) }))
            .await?;
        Ok(int_field(&answer, "deleted")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Remaining seconds of a lease; `None` once etcd no longer knows it.
    pub async fn lease_ttl(&self, lease: i64) -> Result<Option<i64>, GatewayError> {
        let answer = self
            .call("/v3/lease/timetolive", json!({ "ID": lease.to_string() }))
            .await?;
        // An unknown lease answers TTL -1.
        Ok(int_field(&answer, "TTL").filter(|t| *t >= 0))
    }

    /// A GET of one of etcd's own endpoints (`/health`, `/metrics`): its status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, Bytes), GatewayError> {
        tokio::time::timeout(
            self.timeout,
            self.send(Method::GET, path, None, MAX_LISTING_BYTES),
        )
        .await
        .map_err(|_| GatewayError::Unreachable(format!("no answer within {:?}", self.timeout)))?
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, GatewayError> {
        self.call_limited(path, body, MAX_ANSWER_BYTES).await
    }

    async fn call_limited(
        &self,
        path: &str,
        body: Value,
        max_bytes: usize,
    ) -> Result<Value, GatewayError> {
        let (status, bytes) = tokio::time::timeout(
            self.timeout,
            self.send(Method::POST, path, Some(body), max_bytes),
        )
        .await
        .map_err(|_| GatewayError::Unreachable(format!("no answer within {:?}", self.timeout)))??;
        // The streaming endpoints answer one JSON message per line; we send one request.
        let first_line = bytes
            .split(|b| *b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace))
            .unwrap_or(&[]);
        let parsed: Result<Value, _> = serde_json::from_slice(first_line);
        if status != 200 {
            return Err(match parsed {
                Ok(v) => classify_error(status, &v),
                Err(_) => GatewayError::Refused {
                    status,
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        match parsed {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(GatewayError::BadAnswer(
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            )),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        max_bytes: usize,
    ) -> Result<(u16, Bytes), GatewayError> {
        crate::http::send(
            &self.endpoint,
            method,
            path,
            &[(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()),
            max_bytes,
        )
        .await
        .map_err(GatewayError::Unreachable)
    }
}

fn classify_error(status: u16, error: &Value) -> GatewayError {
    let message = error
        .get("message")
        .or_else(|| error.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let code = error.get("code").and_then(Value::as_i64);
    if code == Some(GRPC_NOT_FOUND) && message.contains("lease not found") {
        GatewayError::LeaseNotFound
    } else {
        GatewayError::Refused { status, message }
    }
}

/// The end of a prefix range: the prefix with its last byte incremented (etcd's convention; the
/// filter's mirror computes its range with `mixmode::core::etcd::request_body`, in the wasm
/// core, which has no dependency to share this with).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if let Some(next) = last.checked_add(1) {
            end.push(next);
            return end;
        }
    }
    // All 0xff (or empty): "\0" means every key from `key` on.
    vec![0]
}

/// etcd's gateway sends 64-bit integers as JSON strings; accept plain numbers as well.
fn int_field(v: &Value, name: &str) -> Option<i64> {
    match v.get(name)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_strings_or_numbers() {
        let v = json!({"ID": "2324035596579524614", "TTL": 2});
        assert_eq!(int_field(&v, "ID"), Some(2324035596579524614));
        assert_eq!(int_field(&v, "TTL"), Some(2));
        assert_eq!(int_field(&v, "x"), None);
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/mixmode/"), b"/mixmode0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn unknown_lease_error_is_recognised() {
        let e = json!({"error":"etcdserver: requested lease not found",
                       "message":"etcdserver: requested lease not found","code":5});
        assert_eq!(classify_error(404, &e), GatewayError::LeaseNotFound);
        let other = json!({"error":"x","message":"etcdserver: too many requests","code":8});
        assert!(matches!(
            classify_error(429, &other),
            GatewayError::Refused { status: 429, .. }
        ));
    }
}
