//! Which protocol served each call: the record the bed's TLS servers keep of what ALPN chose
//! per client socket address ([`Negotiated`]), and the SDK interceptor ([`RecordHttpVersion`])
//! that ties each response to that record through the local address of its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connection::CaptureSmithyConnection;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The HTTP version a connection was served with, as chosen by ALPN in its TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1 (ALPN `http/1.1`, or no ALPN at all).
    Http11,
    /// HTTP/2 (ALPN `h2`).
    Http2,
}

impl HttpVersion {
    pub(super) fn from_alpn(protocol: Option<&[u8]>) -> Self {
        match protocol {
            Some(b"h2") => Self::Http2,
            _ => Self::Http11,
        }
    }
}

/// One Kinesis call made by a client built from
/// [`TestBed::kinesis_h2_config`](crate::TestBed::kinesis_h2_config), and how it was served.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObservedCall {
    /// The API operation, e.g. `"SubscribeToShard"`.
    pub operation: String,
    /// The protocol of the connection that carried the call; `None` when the connection was not
    /// made to the bed's TLS server (or the SDK reported no connection).
    pub version: Option<HttpVersion>,
    /// The client's end of that connection.
    pub local_addr: Option<SocketAddr>,
}

/// What the bed's TLS servers negotiated, per client socket address. Entries are written after
/// the handshake and before the connection serves anything, so a response can always be looked
/// up; they are never removed (a reused port overwrites its entry).
#[derive(Clone, Default)]
pub(crate) struct Negotiated {
    /// Visible to the other `tls` modules for the front's unit test, which reads every entry its
    /// upstream server recorded.
    pub(super) by_peer: Arc<Mutex<HashMap<SocketAddr, HttpVersion>>>,
}

impl Negotiated {
    pub(super) fn record(&self, peer: SocketAddr, version: HttpVersion) {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, version);
    }

    pub(super) fn get(&self, peer: SocketAddr) -> Option<HttpVersion> {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .copied()
    }
}

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiated").finish_non_exhaustive()
    }
}

/// The interceptor behind [`ObservedCall`]s: after each response, the protocol of the
/// connection that carried it.
#[derive(Clone, Debug)]
pub(crate) struct RecordHttpVersion {
    negotiated: Negotiated,
    calls: Arc<Mutex<Vec<ObservedCall>>>,
}

impl RecordHttpVersion {
    pub(crate) fn new(negotiated: Negotiated) -> Self {
        Self {
            negotiated,
            calls: Arc::default(),
        }
    }

    pub(crate) fn calls(&self) -> Vec<ObservedCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Intercept for RecordHttpVersion {
    fn name(&self) -> &'static str {
        "kinesis_integration::RecordHttpVersion"
    }

    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or_else(|| "unknown".to_owned(), |m| m.name().to_owned());
        let local_addr = cfg
            .load::<CaptureSmithyConnection>()
            .and_then(CaptureSmithyConnection::get)
            .and_then(|connection| connection.local_addr());
        let version = local_addr.and_then(|addr| self.negotiated.get(addr));
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ObservedCall {
                operation,
                version,
                local_addr,
            });
        Ok(())
    }
}
