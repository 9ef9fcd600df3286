use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::config::Config;
use crate::gateway::{Gateway, GatewayError};

/// What a registration is doing now, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The lease the key is attached to.
    pub lease: i64,
    /// 1 after `start`; one more each time the lease was lost and the key put again.
    pub registrations: u64,
    /// False from the first failed call until the next one that etcd answered.
    pub etcd_reachable: bool,
    /// The latest failure, kept after recovery so a log can say what happened.
    pub last_error: Option<String>,
}

/// A live registration: the key is in etcd and a background task keeps its lease alive.
///
/// Dropping it stops the keep-alives without revoking, exactly like [`Registration::crash`]:
/// the key then disappears when the lease expires. Call [`Registration::stop`] to deregister.
pub struct Registration {
    config: Config,
    gateway: Gateway,
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<i64>>,
}

impl Registration {
    /// Grants a lease and puts the key; fails if etcd does not accept both. Needs a tokio
    /// runtime (with time and IO enabled): the keep-alive task is spawned on it.
    pub async fn start(config: Config) -> Result<Registration, GatewayError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GatewayError::NoRuntime);
        }
        let gateway = Gateway::new(config.etcd.clone(), config.request_timeout());
        let lease = register(&gateway, &config).await?;
        let (status_tx, status) = watch::channel(Status {
            lease,
            registrations: 1,
            etcd_reachable: true,
            last_error: None,
        });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep_alive(
            gateway.clone(),
            config.clone(),
            lease,
            status_tx,
            stop_rx,
        ));
        Ok(Registration {
            config,
            gateway,
            status,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn key(&self) -> String {
        self.config.key()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Changes of [`Status`], e.g. to log re-registrations.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Deregisters: stops the keep-alives (letting a call in flight finish, so a lease granted
    /// meanwhile is not leaked) and revokes the lease, which deletes the key at once.
    /// A lease etcd no longer knows counts as revoked. On an error the key stays until the
    /// lease expires (at most the TTL).
    pub async fn stop(mut self) -> Result<(), GatewayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let lease = match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|_| self.status.borrow().lease),
            None => self.status.borrow().lease,
        };
        match self.gateway.revoke(lease).await {
            Ok(()) | Err(GatewayError::LeaseNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Simulates a crash: keep-alives stop, nothing is revoked.
    pub fn crash(self) {
        drop(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Grants a fresh lease and attaches the key to it. If the put fails the lease is revoked
/// (best effort) so that a retry does not leave leases behind.
async fn register(gateway: &Gateway, config: &Config) -> Result<i64, GatewayError> {
    let lease = gateway.grant(config.ttl_secs).await?;
    if let Err(e) = gateway.put(&config.key(), &config.value(), lease).await {
        let _ = gateway.revoke(lease).await;
        return Err(e);
    }
    Ok(lease)
}

/// Keeps the lease alive every TTL/3 until told to stop; returns the lease it holds then.
///
/// After an outage it asks etcd rather than assuming: etcd keeps leases across its own restart
/// (and renews them), so the old lease is often still valid. Only a lease etcd says is gone
/// (keep-alive TTL 0) is replaced by a new one.
async fn keep_alive(
    gateway: Gateway,
    config: Config,
    mut lease: i64,
    status: watch::Sender<Status>,
    mut stop: oneshot::Receiver<()>,
) -> i64 {
    let period = config.keepalive_interval();
    let mut ticks = interval_at(Instant::now() + period, period);
    // After a slow or timed-out call, wait a full period rather than firing a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut after_outage = false;
    loop {
        tokio::select! {
            _ = &mut stop => return lease,
            _ = ticks.tick() => {}
        }
        let outcome = match gateway.keepalive(lease).await {
            Ok(ttl) if ttl > 0 => {
                if after_outage {
                    // The key may have been deleted while we could not see it.
                    gateway
                        .ensure(&config.key(), &config.value(), lease)
                        .await
                        .map(drop)
                } else {
                    Ok(())
                }
            }
            Ok(_) | Err(GatewayError::LeaseNotFound) => match register(&gateway, &config).await {
                Ok(new) => {
                    lease = new;
                    status.send_modify(|s| {
                        s.lease = new;
                        s.registrations += 1;
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                after_outage = false;
                status.send_if_modified(|s| {
                    let changed = !s.etcd_reachable;
                    s.etcd_reachable = true;
                    changed
                });
            }
            Err(e) => {
                after_outage = true;
                let message = e.to_string();
                status.send_if_modified(|s| {
                    let changed = s.etcd_reachable || s.last_error.as_deref() != Some(&message);
                    s.etcd_reachable = false;
                    s.last_error = Some(message);
                    changed
                });
            }
        }
    }
}
