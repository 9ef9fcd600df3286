//! The stages of a stream: one filter's context on one direction, fed by the stage before
//! it and feeding the next, so data goes on as each filter lets it through (Envoy's decoder
//! and encoder chains). What a filter sees, chunk by chunk and pause by pause, follows Envoy
//! (§3a).

use crate::body::{from_header_map, Msg};
use crate::calls::{Endpoint, UpstreamBody};
use crate::host::StreamProps;
use crate::types::{Action, Headers};
use crate::worker::{LocalReply, OpReply, StreamEvent, StreamOp, WorkerMsg};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Where one filter of the chain runs on a worker: its VM instance and its slot (root context)
/// in that VM.
pub(crate) type FilterSlot = (Sender<WorkerMsg>, usize);

/// Sends `Close` when the request is over, however it ended (hyper drops the future when the
/// client goes away): the filter always gets `on_done`/`on_log`/`on_delete`.
struct CloseGuard {
    worker: Sender<WorkerMsg>,
    ctx: u32,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let _ = self.worker.send(WorkerMsg::Close { ctx: self.ctx });
    }
}

#[derive(Debug)]
pub(crate) enum Interrupt {
    LocalReply(LocalReply),
    Reset,
    Failed,
    IdleTimeout,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

enum Frame {
    Data(Bytes, bool),
    Trailers(Headers),
    End,
    Error,
}

pub(crate) enum Source {
    Incoming(Incoming),
    Fixed(Option<Bytes>),
    /// What the filter before let through.
    Chained(UnboundedReceiver<Msg>),
}

impl Source {
    async fn next(&mut self) -> Frame {
        match self {
            Source::Incoming(body) => loop {
                match body.frame().await {
                    None => return Frame::End,
                    Some(Err(_)) => return Frame::Error,
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Frame::Data(data, body.is_end_stream()),
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                return Frame::Trailers(from_header_map(&t));
                            }
                        }
                    },
                }
            },
            Source::Fixed(data) => match data.take() {
                Some(d) => Frame::Data(d, true),
                None => Frame::End,
            },
            Source::Chained(rx) => loop {
                match rx.recv().await {
                    Some(Msg::Data(d, end)) => return Frame::Data(d, end),
                    Some(Msg::Trailers(t)) => return Frame::Trailers(t),
                    Some(Msg::End) => return Frame::End,
                    Some(Msg::Headers(..)) => {}
                    // The stage before went away without an end: reset.
                    None => return Frame::Error,
                }
            },
        }
    }
}

struct PhaseIo<'a> {
    worker: &'a Sender<WorkerMsg>,
    ctx: u32,
    events: &'a mut UnboundedReceiver<StreamEvent>,
    accept_local_reply: bool,
    idle: Duration,
}

/// One direction of a stream as it arrives.
struct PhaseInput {
    kind: Kind,
    headers: Headers,
    source: Source,
    headers_eos: bool,
    /// `allow_on_headers_stop_iteration` (request direction only).
    allow_body_while_held: bool,
    pub upstream: Option<String>,
}

impl PhaseIo<'_> {
    async fn op(&self, op: StreamOp) -> Result<OpReply, Interrupt> {
        let (tx, rx) = oneshot::channel();
        self.worker
            .send(WorkerMsg::Op {
                ctx: self.ctx,
                op,
                reply: tx,
            })
            .map_err(|_| Interrupt::Failed)?;
        let r = rx.await.map_err(|_| Interrupt::Failed)?;
        if r.failed {
            return Err(Interrupt::Failed);
        }
        Ok(r)
    }

    fn on_event(&self, kind: Kind, ev: StreamEvent, resume: &mut bool) -> Result<(), Interrupt> {
        match ev {
            StreamEvent::ContinueRequest if kind == Kind::Request => *resume = true,
            StreamEvent::ContinueResponse if kind == Kind::Response => *resume = true,
            StreamEvent::ContinueRequest | StreamEvent::ContinueResponse => {}
            StreamEvent::LocalReply(lr) if self.accept_local_reply => {
                return Err(Interrupt::LocalReply(lr))
            }
            StreamEvent::LocalReply(_) => {}
            StreamEvent::Reset => return Err(Interrupt::Reset),
        }
        Ok(())
    }

    fn drain_events(&mut self, kind: Kind, resume: &mut bool) -> Result<(), Interrupt> {
        while let Ok(ev) = self.events.try_recv() {
            self.on_event(kind, ev, resume)?;
        }
        Ok(())
    }
}

fn headers_op(
    kind: Kind,
    headers: Headers,
    end_of_stream: bool,
    upstream: Option<String>,
) -> StreamOp {
    match kind {
        Kind::Request => StreamOp::RequestHeaders {
            headers,
            end_of_stream,
        },
        Kind::Response => StreamOp::ResponseHeaders {
            headers,
            end_of_stream,
            upstream,
        },
    }
}

fn body_op(kind: Kind, chunk: Bytes, end_of_stream: bool) -> StreamOp {
    match kind {
        Kind::Request => StreamOp::RequestBody {
            chunk,
            end_of_stream,
        },
        Kind::Response => StreamOp::ResponseBody {
            chunk,
            end_of_stream,
        },
    }
}

/// Runs one direction of the stream through one filter, passing on to `out` what it lets
/// through as it lets it through: the headers when they continue, each body chunk the filter
/// continues (with the `end_of_stream` it saw), whatever it buffered when it resumes. Returns
/// the trailers to pass on, if any; the caller sends them and the end.
///
/// Envoy's rules reproduced here: a Pause from the headers holds the body back (no body
/// callback) unless `allow_body_while_held`; body chunks are delivered even while the body is
/// paused, with the cumulative size; Continue from a body chunk while the headers are still
/// held drops that chunk (the upstream gets an empty body); `proxy_continue_stream` releases
/// the headers and whatever is buffered.
async fn run_phase(
    io: &mut PhaseIo<'_>,
    input: PhaseInput,
    out: &UnboundedSender<Msg>,
) -> Result<Option<Headers>, Interrupt> {
    let PhaseInput {
        kind,
        headers,
        mut source,
        headers_eos,
        allow_body_while_held,
        upstream,
    } = input;
    // A stage after this one that went away is not this stage's failure.
    let emit = |m: Msg| {
        let _ = out.send(m);
    };
    let idle = io.idle;
    let first = io
        .op(headers_op(kind, headers, headers_eos, upstream))
        .await?;
    let mut held = first.action != Some(Action::Continue);
    if !held {
        emit(Msg::Headers(first.headers.unwrap_or_default(), headers_eos));
    }
    let mut resume = false;
    io.drain_events(kind, &mut resume)?;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut source_done = headers_eos;
    let mut eos_seen = headers_eos;
    let mut eos_delivered = headers_eos;
    let mut trailers: Option<Headers> = None;
    // The trailers callback ran (so the trailers, not a body chunk, end the stream).
    let mut had_trailers = false;
    let mut out_trailers: Option<Headers> = None;
    let mut body_paused = false;
    loop {
        if resume {
            resume = false;
            if held || body_paused {
                let take = match kind {
                    Kind::Request => StreamOp::TakeRequest,
                    Kind::Response => StreamOp::TakeResponse,
                };
                let t = io.op(take).await?;
                if held {
                    emit(Msg::Headers(t.headers.unwrap_or_default(), headers_eos));
                    held = false;
                }
                let last = eos_delivered && !had_trailers;
                if !t.body.is_empty() || (last && !headers_eos) {
                    emit(Msg::Data(Bytes::from(t.body), last));
                }
                if eos_delivered && had_trailers {
                    out_trailers = t.trailers;
                }
                body_paused = false;
            }
        }
        let can_deliver = !held || allow_body_while_held;
        if can_deliver
            && !eos_delivered
            && (!pending.is_empty() || (eos_seen && trailers.is_none()))
        {
            let chunk: Bytes = if pending.len() == 1 {
                pending.remove(0)
            } else {
                Bytes::from(
                    pending
                        .drain(..)
                        .flat_map(|b| b.to_vec())
                        .collect::<Vec<u8>>(),
                )
            };
            let eos = eos_seen && trailers.is_none();
            let r = io.op(body_op(kind, chunk, eos)).await?;
            eos_delivered |= eos;
            if r.action == Some(Action::Continue) {
                if !held && (!r.body.is_empty() || eos) {
                    emit(Msg::Data(Bytes::from(r.body), eos));
                }
                body_paused = false;
            } else {
                body_paused = true;
            }
            io.drain_events(kind, &mut resume)?;
            continue;
        }
        if can_deliver && !eos_delivered && pending.is_empty() {
            if let Some(t) = trailers.take() {
                let op = match kind {
                    Kind::Request => StreamOp::RequestTrailers { trailers: t },
                    Kind::Response => StreamOp::ResponseTrailers { trailers: t },
                };
                let r = io.op(op).await?;
                eos_delivered = true;
                had_trailers = true;
                if r.action == Some(Action::Continue) {
                    if !held {
                        if !r.body.is_empty() {
                            emit(Msg::Data(Bytes::from(r.body), false));
                        }
                        out_trailers = r.trailers;
                    }
                    body_paused = false;
                } else {
                    body_paused = true;
                }
                io.drain_events(kind, &mut resume)?;
                continue;
            }
        }
        if !held && eos_delivered && !body_paused {
            return Ok(out_trailers);
        }
        tokio::select! {
            ev = io.events.recv() => match ev {
                Some(ev) => io.on_event(kind, ev, &mut resume)?,
                None => return Err(Interrupt::Failed),
            },
            f = source.next(), if !source_done => match f {
                Frame::Data(b, end) => {
                    if !b.is_empty() {
                        pending.push(b);
                    }
                    if end {
                        eos_seen = true;
                        source_done = true;
                    }
                }
                Frame::Trailers(t) => {
                    trailers = Some(t);
                    eos_seen = true;
                    source_done = true;
                }
                Frame::End => {
                    eos_seen = true;
                    source_done = true;
                }
                Frame::Error => return Err(Interrupt::Reset),
            },
            _ = tokio::time::sleep(idle) => return Err(Interrupt::IdleTimeout),
        }
    }
}

/// One filter's context on a stream: the VM instance it runs on, its context id, the events
/// it raises. Opened when the request reaches the filter, as Envoy creates a wasm filter's
/// context at its `decodeHeaders`: a filter the request never reached gets no callback at all
/// (`in_vm_context_created_`), neither for the response nor `on_done`/`on_log`.
pub(crate) struct FilterStream {
    worker: Sender<WorkerMsg>,
    ctx: u32,
    events: UnboundedReceiver<StreamEvent>,
    _close: CloseGuard,
}

impl FilterStream {
    /// `None` when the filter's VM has failed.
    pub async fn open((worker, slot): &FilterSlot, props: StreamProps) -> Option<Self> {
        let (ev_tx, events) = unbounded_channel();
        let (tx, rx) = oneshot::channel();
        worker
            .send(WorkerMsg::Open {
                slot: *slot,
                props,
                events: ev_tx,
                reply: tx,
            })
            .ok()?;
        let ctx = rx.await.ok()??;
        Some(FilterStream {
            worker: worker.clone(),
            ctx,
            events,
            _close: CloseGuard {
                worker: worker.clone(),
                ctx,
            },
        })
    }

    fn io(&mut self, accept_local_reply: bool, idle: Duration) -> PhaseIo<'_> {
        PhaseIo {
            worker: &self.worker,
            ctx: self.ctx,
            events: &mut self.events,
            accept_local_reply,
            idle,
        }
    }
}
/// What a stage hands back when it is over: its index in the chain, the filter's context
/// (kept for the response phase, dropped to close it), and how the phase ended.
pub(crate) type StageResult = (usize, Option<FilterStream>, Result<(), Interrupt>);

/// Where a stage's direction of the stream comes from.
pub(crate) enum StageInput {
    /// The client's request or the upstream's answer.
    Direct {
        headers: Headers,
        eos: bool,
        source: Source,
    },
    /// What the filter before let through.
    Chained(UnboundedReceiver<Msg>),
}

impl StageInput {
    /// The headers, whether the stream ends with them, and the rest; `None` when the stage
    /// before never let headers through (it replied, failed or was reset).
    async fn headers(self) -> Option<(Headers, bool, Source)> {
        match self {
            StageInput::Direct {
                headers,
                eos,
                source,
            } => Some((headers, eos, source)),
            StageInput::Chained(mut rx) => loop {
                match rx.recv().await? {
                    Msg::Headers(h, eos) => return Some((h, eos, Source::Chained(rx))),
                    _ => continue,
                }
            },
        }
    }
}

/// Sends what follows the body: the trailers a phase passed on, then the end.
fn finish(out: &UnboundedSender<Msg>, trailers: Option<Headers>) {
    if let Some(t) = trailers {
        let _ = out.send(Msg::Trailers(t));
    }
    let _ = out.send(Msg::End);
}

/// One decoder filter: its context is created when the request's headers reach it.
pub(crate) async fn request_stage(
    i: usize,
    slot: FilterSlot,
    props: StreamProps,
    allow: bool,
    idle: Duration,
    input: StageInput,
    out: UnboundedSender<Msg>,
) -> StageResult {
    let Some((headers, headers_eos, source)) = input.headers().await else {
        return (i, None, Ok(()));
    };
    let Some(mut filter) = FilterStream::open(&slot, props).await else {
        return (i, None, Err(Interrupt::Failed));
    };
    let input = PhaseInput {
        kind: Kind::Request,
        headers,
        source,
        headers_eos,
        allow_body_while_held: allow,
        upstream: None,
    };
    let r = run_phase(&mut filter.io(true, idle), input, &out).await;
    let r = r.map(|trailers| finish(&out, trailers));
    (i, Some(filter), r)
}

/// What every encoder stage of a stream shares.
pub(crate) struct Encoding {
    pub idle: Duration,
    /// The host that answered, for `upstream.address`.
    pub upstream: Option<String>,
}

/// One encoder filter. Once its phase is over its context is closed (`on_done`, `on_log`)
/// before the end goes on, so a client that has the whole response sees the filters done.
pub(crate) async fn response_stage(
    i: usize,
    mut filter: FilterStream,
    accept_local_reply: bool,
    encoding: Arc<Encoding>,
    input: StageInput,
    out: UnboundedSender<Msg>,
    release: Option<(SendRequest<UpstreamBody>, Arc<Endpoint>)>,
) -> StageResult {
    let (idle, upstream) = (encoding.idle, encoding.upstream.clone());
    let Some((headers, headers_eos, source)) = input.headers().await else {
        return (i, Some(filter), Ok(()));
    };
    let input = PhaseInput {
        kind: Kind::Response,
        headers,
        source,
        headers_eos,
        allow_body_while_held: false,
        upstream,
    };
    match run_phase(&mut filter.io(accept_local_reply, idle), input, &out).await {
        Ok(trailers) => {
            // The upstream's body was read to its end: its connection can serve another.
            if let Some((sender, endpoint)) = release {
                endpoint.release(sender);
            }
            drop(filter);
            finish(&out, trailers);
            (i, None, Ok(()))
        }
        Err(e) => (i, Some(filter), Err(e)),
    }
}

/// Waits for the headers at the end of a chain of stages, storing the contexts of the stages
/// that finish meanwhile. `Err` carries the first interruption a stage reported.
pub(crate) async fn chain_headers(
    mut input: StageInput,
    tasks: &mut JoinSet<StageResult>,
    filters: &mut [Option<FilterStream>],
) -> Result<Option<(Headers, bool, Source)>, (usize, Interrupt)> {
    let mut rx = match input {
        StageInput::Direct { .. } => return Ok(input.headers().await),
        StageInput::Chained(ref mut rx) => rx,
    };
    let mut open = true;
    loop {
        tokio::select! {
            m = rx.recv(), if open => match m {
                Some(Msg::Headers(h, eos)) => {
                    let StageInput::Chained(rx) = input else { return Ok(None) };
                    return Ok(Some((h, eos, Source::Chained(rx))));
                }
                Some(_) => {}
                None => open = false,
            },
            joined = tasks.join_next() => match joined {
                None if open => {
                    // Every stage is over: what is left in the channel decides.
                    while let Ok(m) = rx.try_recv() {
                        if let Msg::Headers(h, eos) = m {
                            let StageInput::Chained(rx) = input else { return Ok(None) };
                            return Ok(Some((h, eos, Source::Chained(rx))));
                        }
                    }
                    return Ok(None);
                }
                None => return Ok(None),
                Some(joined) => store(joined, filters)?,
            },
        }
        rx = match input {
            StageInput::Chained(ref mut rx) => rx,
            StageInput::Direct { .. } => return Ok(None),
        };
    }
}

/// Keeps a finished stage's context; its interruption, if any, is the caller's to answer.
pub(crate) fn store(
    joined: Result<StageResult, tokio::task::JoinError>,
    filters: &mut [Option<FilterStream>],
) -> Result<(), (usize, Interrupt)> {
    let Ok((i, filter, result)) = joined else {
        return Err((0, Interrupt::Failed));
    };
    if let Some(f) = filter {
        if let Some(slot) = filters.get_mut(i) {
            *slot = Some(f);
        }
    }
    result.map_err(|e| (i, e))
}
