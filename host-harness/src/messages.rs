//! The messages between the front end, the harness and a worker thread: a leaf module, so that
//! the host state (`host`), the loader (`load`) and the worker loop (`worker`) all use them
//! without depending on each other.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::calls::CallOutcome;
use crate::types::{Action, Headers};

/// Per-stream facts the `request.*`, `source.*`, `upstream.*` properties read.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamProps {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub cluster_name: String,
    pub connection_id: u64,
    pub upstream_address: Option<String>,
    pub response_code: Option<u32>,
    /// `request.protocol` as Envoy spells it (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2`).
    pub protocol: &'static str,
}

/// What a filter asked of its stream, delivered to the front end.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    ContinueRequest,
    ContinueResponse,
    LocalReply(LocalReply),
    Reset,
}

/// A `proxy_send_local_response` as the filter passed it.
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    pub status: u16,
    #[allow(dead_code)]
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

pub(crate) enum StreamOp {
    RequestHeaders {
        headers: Headers,
        end_of_stream: bool,
    },
    RequestBody {
        chunk: Bytes,
        end_of_stream: bool,
    },
    RequestTrailers {
        trailers: Headers,
    },
    /// The request headers as they are now, and the buffered body (after a resume).
    TakeRequest,
    ResponseHeaders {
        headers: Headers,
        end_of_stream: bool,
        upstream: Option<String>,
    },
    ResponseBody {
        chunk: Bytes,
        end_of_stream: bool,
    },
    ResponseTrailers {
        trailers: Headers,
    },
    TakeResponse,
}

#[derive(Debug, Default)]
pub(crate) struct OpReply {
    pub action: Option<Action>,
    /// The headers as the filter left them, when they go on (Continue or Take).
    pub headers: Option<Headers>,
    /// Body bytes the filter let through.
    pub body: Vec<u8>,
    /// The trailers as the filter left them, when they go on (Continue from the trailers
    /// callback, or Take).
    pub trailers: Option<Headers>,
    /// The VM crashed: the request gets Envoy's 503.
    pub failed: bool,
}

pub(crate) enum WorkerMsg {
    Open {
        /// Which of the VM's plugins (in the order they were started in it) gets the stream.
        slot: usize,
        props: StreamProps,
        events: UnboundedSender<StreamEvent>,
        reply: oneshot::Sender<Option<u32>>,
    },
    Op {
        ctx: u32,
        op: StreamOp,
        reply: oneshot::Sender<OpReply>,
    },
    Close {
        ctx: u32,
    },
    CallDone {
        token: u32,
        outcome: CallOutcome,
    },
    QueueReady {
        queue_id: u32,
        root_context: u32,
    },
    Shutdown,
}
