//! Sessions as the reference patent keeps them: key-value pairs in a store shared by the whole
//! pool, each written inside an envelope naming the version that wrote it, the class used to
//! serialise it and its size. A server reads the envelope first, so it can tell "written by
//! another version" from any other failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// The session's key-value pairs (recipient, date, amount, source, ...).
pub type SessionData = BTreeMap<String, String>;

/// What the store holds for a session (postcard-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The app version that wrote the session.
    pub version: String,
    /// The class that serialised the payload; differs between versions.
    pub class_name: String,
    /// Size of `payload` in bytes.
    pub size: u32,
    /// The postcard-encoded [`SessionData`].
    pub payload: Vec<u8>,
}

/// The class a version serialises its sessions with.
pub fn class_name(version: &str) -> String {
    format!("MoneyTransferSessionV{version}")
}

impl Envelope {
    pub fn wrap(version: &str, data: &SessionData) -> Result<Self> {
        let payload = postcard::to_stdvec(data).context("encode session")?;
        Ok(Envelope {
            version: version.to_string(),
            class_name: class_name(version),
            size: u32::try_from(payload.len()).context("session too large")?,
            payload,
        })
    }

    pub fn data(&self) -> Result<SessionData> {
        postcard::from_bytes(&self.payload).context("decode session payload")
    }
}

/// The outcome of loading a session, as a server of `own_version` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    Ok(SessionData),
    /// No such session (expired, finished, or never existed).
    Missing,
    /// Written by another version: this server cannot deserialise it.
    OtherVersion(EnvelopeInfo),
    /// The bytes are not an envelope (a bug, not a version problem).
    Corrupt,
}

/// The envelope without its payload: what a mismatch answer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeInfo {
    pub version: String,
    pub class_name: String,
    pub size: u32,
}

/// The session store shared by every server of a pool (clones share it).
#[derive(Debug, Clone, Default)]
pub struct SessionStore {
    sessions: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    next_id: Arc<AtomicU64>,
}

impl SessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a session written by `version` and returns its id.
    pub fn create(&self, version: &str, data: &SessionData) -> Result<String> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("s{n:x}-{nanos:08x}");
        self.write(&id, version, data)?;
        Ok(id)
    }

    /// (Over)writes a session as `version` writes it.
    pub fn write(&self, id: &str, version: &str, data: &SessionData) -> Result<()> {
        let bytes =
            postcard::to_stdvec(&Envelope::wrap(version, data)?).context("encode envelope")?;
        self.lock().insert(id.to_string(), bytes);
        Ok(())
    }

    /// Stores raw bytes under `id` (tests use it to plant a corrupt session).
    pub fn write_raw(&self, id: &str, bytes: Vec<u8>) {
        self.lock().insert(id.to_string(), bytes);
    }

    pub fn envelope(&self, id: &str) -> Option<Result<Envelope>> {
        let bytes = self.lock().get(id).cloned()?;
        Some(postcard::from_bytes(&bytes).context("decode envelope"))
    }

    /// Loads a session the way a server running `own_version` does.
    pub fn load(&self, id: &str, own_version: &str) -> Load {
        let envelope = match self.envelope(id) {
            None => return Load::Missing,
            Some(Err(_)) => return Load::Corrupt,
            Some(Ok(e)) => e,
        };
        if envelope.version != own_version || envelope.class_name != class_name(own_version) {
            return Load::OtherVersion(EnvelopeInfo {
                version: envelope.version,
                class_name: envelope.class_name,
                size: envelope.size,
            });
        }
        match envelope.data() {
            Ok(data) => Load::Ok(data),
            Err(_) => Load::Corrupt,
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_of_another_version_reports_its_envelope() {
        let store = SessionStore::new();
        let data = SessionData::from([("recipient".into(), "bob".into())]);
        let id = store.create("2", &data).unwrap();
        assert_eq!(store.load(&id, "2"), Load::Ok(data.clone()));
        match store.load(&id, "1") {
            Load::OtherVersion(info) => {
                assert_eq!(info.version, "2");
                assert_eq!(info.class_name, "MoneyTransferSessionV2");
                assert_eq!(
                    info.size as usize,
                    postcard::to_stdvec(&data).unwrap().len()
                );
            }
            other => panic!("expected OtherVersion, got {other:?}"),
        }
        store.write_raw("junk", vec![0xff; 3]);
        assert_eq!(store.load("junk", "1"), Load::Corrupt);
        assert_eq!(store.load("nope", "1"), Load::Missing);
    }
}
