//! How a server reads requests and writes answers: bincode, exactly as
//! tarpc's own transport does, except that a request's deadline is read
//! as the duration it is sent as and cut to
//! [`MAX_REQUEST_DEADLINE`](crate::limits::MAX_REQUEST_DEADLINE) before it
//! becomes an instant. tarpc adds the duration to the clock as it decodes
//! it: a 40-byte frame asking for 2^64 s panicked every server (overflow),
//! and one for three years panicked its timer (trial 21A).

use crate::limits::MAX_REQUEST_DEADLINE;
use crate::node::LogThrottle;
use bincode::Options as _;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tarpc::{trace, ClientMessage, Response};

/// tarpc's `ClientMessage` as it is on the wire (same fields, same order).
#[derive(Deserialize)]
enum WireMessage<T> {
    Request(WireRequest<T>),
    Cancel { trace_context: trace::Context, request_id: u64 },
}

#[derive(Deserialize)]
struct WireRequest<T> {
    context: WireContext,
    id: u64,
    message: T,
}

#[derive(Deserialize)]
struct WireContext {
    deadline: Duration,
    trace_context: trace::Context,
}

/// The codec of a server's transport, answering `Resp` to `Req`.
pub struct ServerCodec<Req, Resp> {
    /// Who is at the other end (for the log).
    peer: String,
    types: PhantomData<fn(Resp) -> Req>,
}

impl<Req, Resp> ServerCodec<Req, Resp> {
    pub fn new(peer: String) -> Self {
        ServerCodec { peer, types: PhantomData }
    }
}

/// Frames that did not decode as requests, in this process (logged at
/// the 1st, 2nd, 4th, 8th…: such a connection is closed, and a client
/// speaking something else had nothing logged at all, trial 21A).
static UNDECODABLE_FRAMES: LogThrottle = LogThrottle::new();

fn options() -> impl bincode::Options {
    // What tokio-serde's `Bincode` uses.
    bincode::DefaultOptions::new()
}

impl<Req: for<'a> Deserialize<'a>, Resp> tokio_serde::Deserializer<ClientMessage<Req>> for ServerCodec<Req, Resp> {
    type Error = std::io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<ClientMessage<Req>, Self::Error> {
        let wire: WireMessage<Req> = options().deserialize(src).map_err(|e| {
            if let Some(seen) = UNDECODABLE_FRAMES.event() {
                let why = e.to_string().replace('\n', " ");
                tracing::warn!(peer = %self.peer, bytes = src.len(), seen, error = %why,
                    "a frame that is not a twopc request (another program, or another twopc version?): closing the connection");
            }
            std::io::Error::new(std::io::ErrorKind::InvalidData, e)
        })?;
        Ok(match wire {
            WireMessage::Request(WireRequest { context, id, message }) => {
                let mut ctx = tarpc::context::current();
                ctx.deadline = Instant::now() + context.deadline.min(MAX_REQUEST_DEADLINE);
                ctx.trace_context = context.trace_context;
                ClientMessage::Request(tarpc::Request { context: ctx, id, message })
            }
            WireMessage::Cancel { trace_context, request_id } => ClientMessage::Cancel { trace_context, request_id },
        })
    }
}

impl<Req, Resp: Serialize> tokio_serde::Serializer<Response<Resp>> for ServerCodec<Req, Resp> {
    type Error = std::io::Error;

    fn serialize(self: Pin<&mut Self>, item: &Response<Resp>) -> Result<Bytes, Self::Error> {
        options().serialize(item).map(Into::into).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_serde::{Deserializer as _, Serializer as _};

    type Sent = ClientMessage<String>;

    /// A request as a client's transport encodes it (tarpc's codec).
    fn encoded(message: &Sent) -> BytesMut {
        let mut client = tokio_serde::formats::Bincode::<Response<String>, Sent>::default();
        BytesMut::from(&Pin::new(&mut client).serialize(message).unwrap()[..])
    }

    fn decoded(bytes: &BytesMut) -> Sent {
        Pin::new(&mut ServerCodec::<String, String>::new("test".into())).deserialize(bytes).unwrap()
    }

    fn request_with_deadline_in(timeout: Duration) -> BytesMut {
        let mut ctx = tarpc::context::current();
        ctx.deadline = Instant::now() + timeout;
        encoded(&ClientMessage::Request(tarpc::Request { context: ctx, id: 7, message: "read".to_string() }))
    }

    #[test]
    fn requests_and_cancels_read_as_tarpc_sends_them() {
        let ClientMessage::Request(request) = decoded(&request_with_deadline_in(Duration::from_secs(5))) else {
            panic!("not a request")
        };
        assert_eq!((request.id, request.message.as_str()), (7, "read"));
        let left = request.context.deadline.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(3) && left <= Duration::from_secs(5), "{left:?}");
        let cancel = ClientMessage::Cancel { trace_context: trace::Context::default(), request_id: 9 };
        assert!(matches!(decoded(&encoded(&cancel)), ClientMessage::Cancel { request_id: 9, .. }));
        // Answers go out as tarpc's client reads them.
        let answer = Response { request_id: 7, message: Ok("value".to_string()) };
        let bytes = Pin::new(&mut ServerCodec::<String, String>::new("test".into())).serialize(&answer).unwrap();
        let mut client = tokio_serde::formats::Bincode::<Response<String>, Sent>::default();
        let read = Pin::new(&mut client).deserialize(&BytesMut::from(&bytes[..])).unwrap();
        assert_eq!(read.message.unwrap(), "value");
    }

    /// What a forged request is on the wire: the same bytes as a request
    /// (bincode does not frame structs).
    #[derive(Serialize)]
    enum Forged {
        Request { deadline: Duration, trace_context: trace::Context, id: u64, message: String },
    }

    /// Trial 21A: a deadline of 2^64 s panicked tarpc's decoding of it (as
    /// servers did); this codec cuts it to the limit.
    #[test]
    fn a_deadline_beyond_the_limit_is_cut_to_it() {
        let forged = Forged::Request {
            deadline: Duration::MAX,
            trace_context: trace::Context::default(),
            id: 1,
            message: "read".into(),
        };
        let bytes = BytesMut::from(&options().serialize(&forged).unwrap()[..]);
        let ClientMessage::Request(request) = decoded(&bytes) else { panic!("not a request") };
        assert_eq!(request.message, "read");
        let left = request.context.deadline.saturating_duration_since(Instant::now());
        assert!(left <= MAX_REQUEST_DEADLINE && left > MAX_REQUEST_DEADLINE - Duration::from_secs(5), "{left:?}");
        let panicked = std::panic::catch_unwind(|| {
            let mut tarpcs = tokio_serde::formats::Bincode::<Sent, Response<String>>::default();
            let _ = Pin::new(&mut tarpcs).deserialize(&bytes);
        });
        assert!(panicked.is_err(), "tarpc's own decoding no longer panics: this codec may be unneeded");
    }
}
