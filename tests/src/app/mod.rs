//! Mock app servers: the reference patent's money-transfer app, one version per server,
//! sessions in a store shared by the pool. A server asked to load a session written by another
//! version answers the mismatch signal of docs/design.md#the-mismatch-signal (`409`, `x-session-version`,
//! `x-app-version`, plus the envelope's class and size).
//!
//! Routes: `POST /transfer/{recipient,date,amount,confirm}` (JSON bodies, `session` cookie);
//! `ANY /echo[/...]` (checks the session cookie if any, then answers method, path, body length
//! and SHA-256; `/echo/chunked...` answers chunked); `ANY /download/<n>` (checks the session, answers
//! `n` bytes of [`pattern_bytes`]); `GET /.well-known/mixmode/version`; `GET /health`.

pub mod heartbeat;
pub mod server;
pub mod session;
pub mod transfer;

pub use heartbeat::{HeartbeatClient, Registration};
pub use server::{
    pattern_bytes, sha256_hex, AppConfig, AppServer, Canned, Gate, Mode, RecordedRequest,
};
pub use session::{Envelope, Load, SessionData, SessionStore};
