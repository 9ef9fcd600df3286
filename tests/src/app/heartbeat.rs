//! What a server uses to tell the proxy it exists (docs/design.md#heartbeat-api, push): `POST` / `DELETE` JSON to
//! the heartbeat listener with a Bearer token, and `GET` for the listing.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::server::AppServer;
use crate::client::{Req, Resp};

/// The body of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub app: String,
    pub version: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl Registration {
    pub fn of(server: &AppServer) -> Self {
        Registration {
            app: server.app().to_string(),
            version: server.version(),
            address: server.addr().to_string(),
            pool: None,
        }
    }
}

/// A record of the `GET` listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub address: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// A line of the demand listing (`GET <heartbeat.path>?demand`, docs/design.md#draining-by-demand).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Demand {
    pub pool: String,
    pub app: String,
    pub version: String,
    pub last_needed_ms: u64,
    pub needed_60s: u64,
}

#[derive(Debug, Clone)]
pub struct HeartbeatClient {
    /// The full URL of the heartbeat path, e.g. `http://127.0.0.1:10001/.well-known/mixmode/heartbeat`.
    pub url: String,
    pub token: String,
}

impl HeartbeatClient {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        HeartbeatClient {
            url: url.into(),
            token: token.into(),
        }
    }

    /// Sends any body with any (or no) token: for tests of the error answers.
    pub async fn send_raw(
        &self,
        method: Method,
        body: impl Into<bytes::Bytes>,
        token: Option<&str>,
    ) -> Result<Resp> {
        let mut req = Req::new(method, &self.url)
            .body(body)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await
    }

    /// POST: creates or refreshes the record. Returns the answer whatever its status.
    pub async fn post(&self, reg: &Registration) -> Result<Resp> {
        self.send_raw(Method::POST, serde_json::to_vec(reg)?, Some(&self.token))
            .await
    }

    /// DELETE: removes the record.
    pub async fn delete(&self, reg: &Registration) -> Result<Resp> {
        self.send_raw(Method::DELETE, serde_json::to_vec(reg)?, Some(&self.token))
            .await
    }

    /// POST that must be accepted (204).
    pub async fn register(&self, reg: &Registration) -> Result<()> {
        let r = self.post(reg).await?;
        if r.status != 204 {
            bail!(
                "heartbeat for {} refused: {} {}",
                reg.address,
                r.status,
                r.text()
            );
        }
        Ok(())
    }

    /// DELETE that must be accepted (204).
    pub async fn deregister(&self, reg: &Registration) -> Result<()> {
        let r = self.delete(reg).await?;
        if r.status != 204 {
            bail!(
                "deregistration of {} refused: {} {}",
                reg.address,
                r.status,
                r.text()
            );
        }
        Ok(())
    }

    /// The fresh records (GET).
    pub async fn list(&self) -> Result<Vec<Record>> {
        let r = self
            .send_raw(Method::GET, bytes::Bytes::new(), Some(&self.token))
            .await?;
        if r.status != 200 {
            bail!("heartbeat listing refused: {} {}", r.status, r.text());
        }
        #[derive(Deserialize)]
        struct Listing {
            records: Vec<Record>,
        }
        let l: Listing = serde_json::from_slice(&r.body)
            .with_context(|| format!("listing is not {{\"records\": [...]}}: {}", r.text()))?;
        Ok(l.records)
    }

    /// `GET ?demand` with any (or no) token: the answer whatever its status.
    pub async fn demand_raw(&self, token: Option<&str>) -> Result<Resp> {
        let mut req = Req::get(format!("{}?demand", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await
    }

    /// The demand listing: the versions needed lately.
    pub async fn demand(&self) -> Result<Vec<Demand>> {
        let r = self.demand_raw(Some(&self.token)).await?;
        if r.status != 200 {
            bail!("demand listing refused: {} {}", r.status, r.text());
        }
        #[derive(Deserialize)]
        struct Listing {
            demand: Vec<Demand>,
        }
        let l: Listing = serde_json::from_slice(&r.body)
            .with_context(|| format!("listing is not {{\"demand\": [...]}}: {}", r.text()))?;
        Ok(l.demand)
    }

    /// Sends a heartbeat every `interval` until the handle is aborted (a running server's
    /// background task). Failures are retried at the next tick.
    pub fn spawn_periodic(&self, reg: Registration, interval: Duration) -> JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let _ = client.post(&reg).await;
            }
        })
    }
}

impl Registration {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
