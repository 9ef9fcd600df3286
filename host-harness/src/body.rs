//! What flows between the stages of a stream (client, filters, upstream) and the body type
//! hyper sends on either side: data goes on as the filters let it through, so a response
//! reaches the client while the upstream is still sending it (Envoy streams).

use crate::types::Headers;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// One step of a direction of a stream, from one stage to the next.
#[derive(Debug)]
pub(crate) enum Msg {
    /// The headers, and whether the stream ends with them.
    Headers(Headers, bool),
    /// Body bytes, and whether the filter that let them through saw the end of the stream
    /// with them (the next filter's `end_of_stream`).
    Data(Bytes, bool),
    Trailers(Headers),
    /// Nothing more. A stage whose sender goes away without this was reset.
    End,
}

/// Why a body stopped early: the stream was reset somewhere before it.
#[derive(Debug)]
pub(crate) struct BodyReset;

impl std::fmt::Display for BodyReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream reset")
    }
}

impl std::error::Error for BodyReset {}

pub(crate) fn header_map(headers: &Headers) -> hyper::HeaderMap {
    let mut map = hyper::HeaderMap::new();
    for (k, v) in headers {
        if k.starts_with(b":") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k),
            hyper::header::HeaderValue::from_bytes(v),
        ) {
            map.append(name, value);
        }
    }
    map
}

pub(crate) fn from_header_map(map: &hyper::HeaderMap) -> Headers {
    map.iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// A body hyper sends: fixed bytes, a peer's body passed on untouched, or what the last
/// stage of a chain lets through. `Keep` is held while the body is sent and dropped with it
/// (the stages producing it: when the client goes away they are aborted).
pub(crate) struct OutBody<Keep = ()> {
    inner: Inner,
    _keep: Option<Keep>,
}

enum Inner {
    Fixed(Option<Bytes>),
    Incoming(Incoming),
    Channel {
        rx: UnboundedReceiver<Msg>,
        done: bool,
    },
}

impl<K> OutBody<K> {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        OutBody {
            inner: Inner::Fixed((!b.is_empty()).then_some(b)),
            _keep: None,
        }
    }

    pub fn incoming(body: Incoming) -> Self {
        OutBody {
            inner: Inner::Incoming(body),
            _keep: None,
        }
    }

    pub fn channel(rx: UnboundedReceiver<Msg>, keep: Option<K>) -> Self {
        OutBody {
            inner: Inner::Channel { rx, done: false },
            _keep: keep,
        }
    }
}

impl<K: Unpin> Body for OutBody<K> {
    type Data = Bytes;
    type Error = BodyReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReset>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Fixed(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Incoming(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(BodyReset))),
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Inner::Channel { rx, done } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        *done = true;
                        return Poll::Ready(Some(Err(BodyReset)));
                    }
                    // The end comes with `End` or the trailers, after the stages have
                    // finished with the stream (their `on_log` before the client's last byte).
                    Poll::Ready(Some(Msg::Data(b, _))) if !b.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(Some(Msg::Data(..))) | Poll::Ready(Some(Msg::Headers(..))) => {}
                    Poll::Ready(Some(Msg::Trailers(t))) => {
                        *done = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(header_map(&t)))));
                    }
                    Poll::Ready(Some(Msg::End)) => {
                        *done = true;
                        return Poll::Ready(None);
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Fixed(b) => b.is_none(),
            Inner::Incoming(body) => body.is_end_stream(),
            Inner::Channel { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Incoming(body) => body.size_hint(),
            Inner::Channel { .. } => SizeHint::default(),
        }
    }
}
