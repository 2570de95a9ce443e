//! TLS + HTTP/2 to the bed's Kinesis server, as real AWS serves `SubscribeToShard`.
//!
//! Real Kinesis serves enhanced fan-out only over HTTP/2, negotiated with ALPN during the TLS
//! handshake. On a plain `http://` endpoint the SDK's default client speaks HTTP/1.1 (it has no
//! h2c option), which the emulators accept, so plain-HTTP tests never exercise the transport
//! the libraries meet in production. This module gives the bed a TLS endpoint that negotiates
//! `h2` and a way to see which protocol every call actually used.
//!
//! # The pieces
//! - **A test PKI** made at run time with `rcgen` (once per test process, nothing on disk but
//!   what a server must read): a CA, and a leaf certificate for `localhost` and `127.0.0.1`
//!   signed by it (ECDSA P-256).
//! - **The SDK's own HTTPS client** (`aws-smithy-http-client` with rustls on aws-lc, the stack
//!   the SDK uses by default) whose trust store holds only that CA: certificates and host names
//!   are fully verified; nothing is skipped.
//! - **A TLS server that records what it negotiated.** On the embedded backend, ferrokinesis
//!   itself is also served over TLS (rustls, ALPN `h2` then `http/1.1`, `hyper-util`'s
//!   HTTP/1 + HTTP/2 server). On the emulators backend a TLS front terminates the client's TLS
//!   and relays the bytes, unchanged, over a second TLS connection to kinesis-mock's own TLS
//!   port, which runs with the same test certificate; the front asks kinesis-mock for exactly
//!   the protocol the client negotiated and refuses the connection if it picks another, so the
//!   client's HTTP/2 frames reach kinesis-mock's HTTP/2 server as they were sent. Either server
//!   records, per client socket address, the protocol chosen by ALPN, before it serves a byte.
//! - **An interceptor** on the clients built from
//!   [`TestBed::kinesis_h2_config`](crate::TestBed::kinesis_h2_config): after each response it
//!   reads the local address of the connection the SDK used (the SDK's connection metadata) and
//!   looks it up in that record, so [`TestBed::http_versions`](crate::TestBed::http_versions)
//!   tells which protocol served each call.
//!
//! Why not read the version from the response: the SDK's HTTP response type keeps status,
//! headers, body and extensions but drops the HTTP version, and its connection metadata holds
//! addresses only, so a client-side interceptor cannot see the version itself. The server side
//! of the connection can, and the connection's address ties the two together.
//!
//! # Using it
//! A suite that must run as on AWS (enhanced fan-out) starts its bed with
//! `BedOptions::default().kinesis_transport(KinesisTransport::TlsHttp2)`
//! ([`crate::KinesisTransport`]): then [`TestBed::kinesis`](crate::TestBed::kinesis) and
//! [`TestBed::kinesis_config`](crate::TestBed::kinesis_config) use TLS + HTTP/2, and the bed
//! refuses to start on a backend that cannot provide it. Any bed also hands out such clients on
//! request through [`TestBed::kinesis_h2_config`](crate::TestBed::kinesis_h2_config):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_integration::tls::HttpVersion;
//! use kinesis_integration::{Backend, BedOptions, TestBed};
//!
//! let bed = TestBed::start_with(Backend::Embedded, BedOptions::default()).await?;
//! let kinesis = aws_sdk_kinesis::Client::from_conf(bed.kinesis_h2_config()?.build());
//! kinesis.list_streams().send().await?;
//! let calls = bed.http_versions();
//! assert_eq!(calls[0].operation, "ListStreams");
//! assert_eq!(calls[0].version, Some(HttpVersion::Http2));
//! # Ok(())
//! # }
//! ```
//!
//! # Where it lives
//! - `pki`: the test PKI and the TLS configurations built on it.
//! - `server`: the TLS server of the embedded backend.
//! - `front`: the TLS front of the emulators backend.
//! - `observer`: [`HttpVersion`], [`ObservedCall`], and what records them.

mod front;
mod observer;
mod pki;
mod server;
#[cfg(test)]
mod testing;

use std::sync::Arc;

pub use observer::{HttpVersion, ObservedCall};

pub(crate) use front::TlsFront;
pub(crate) use observer::{Negotiated, RecordHttpVersion};
pub(crate) use pki::TestPki;
pub(crate) use server::{bind_tls, serve_tls};

/// A TLS endpoint of a bed, with what is needed to reach it and to observe it.
#[derive(Clone)]
pub(crate) struct H2Endpoint {
    /// `https://127.0.0.1:PORT`.
    pub(crate) url: String,
    pub(crate) pki: Arc<TestPki>,
    pub(crate) negotiated: Negotiated,
}
