//! The few calls of etcd's JSON gateway (`/v3/...` on the client port) a registration needs.
//! One short HTTP/1.1 connection per call: calls are seconds apart, and a fresh connection
//! notices at once that etcd has restarted on the same port.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::config::Endpoint;

/// etcd's answers to these calls are a few hundred bytes; anything far larger is not etcd.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

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

    async fn call(&self, path: &str, body: Value) -> Result<Value, GatewayError> {
        let (status, bytes) = tokio::time::timeout(self.timeout, self.post(path, body))
            .await
            .map_err(|_| {
                GatewayError::Unreachable(format!("no answer within {:?}", self.timeout))
            })??;
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

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Bytes), GatewayError> {
        let unreachable = |e: &dyn fmt::Display| GatewayError::Unreachable(e.to_string());
        let stream = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(conn);
        let request = Request::post(path)
            .header(header::HOST, self.endpoint.authority())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| GatewayError::BadAnswer(format!("building request: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(&*e))?
                .to_bytes();
            Ok((status, bytes))
        }
        .await;
        driver.abort();
        result
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
