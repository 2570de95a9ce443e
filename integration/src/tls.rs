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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connection::CaptureSmithyConnection;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::BedError;

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
    fn from_alpn(protocol: Option<&[u8]>) -> Self {
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

/// The ALPN protocols the bed's TLS servers offer, in order of preference (as AWS does).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A CA and a server certificate for `localhost` / `127.0.0.1` signed by it, made at run time.
pub(crate) struct TestPki {
    /// The CA certificate, PEM: the one trust anchor of the bed's TLS clients.
    pub(crate) ca_pem: String,
    /// The server certificate, PEM.
    pub(crate) leaf_pem: String,
    /// The server's private key, PKCS#8 PEM.
    pub(crate) leaf_key_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

impl TestPki {
    /// The PKI of this test process, made on first use.
    pub(crate) fn shared() -> Result<Arc<TestPki>, BedError> {
        static PKI: OnceLock<Result<Arc<TestPki>, String>> = OnceLock::new();
        PKI.get_or_init(|| Self::generate().map(Arc::new))
            .clone()
            .map_err(|message| BedError::Backend {
                backend: "tls",
                message,
            })
    }

    fn generate() -> Result<Self, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let fail = |what: &str, e: rcgen::Error| format!("could not make the test {what}: {e}");

        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA certificate", e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kinesis-integration test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(|e| fail("CA certificate", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(|e| fail("server certificate", e))?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| fail("server certificate", e))?;

        Ok(Self {
            ca_pem: ca.pem(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
            ca_der: ca.der().clone(),
        })
    }

    /// kinesis-mock's certificate file (its Node build reads `KINESIS_MOCK_CERT_PATH`, a JSON
    /// object `{"server": {"cert": PEM, "key": PEM}}`).
    pub(crate) fn kinesis_mock_cert_json(&self) -> String {
        format!(
            "{{\"server\":{{\"cert\":{},\"key\":{}}}}}\n",
            json_string(&self.leaf_pem),
            json_string(&self.leaf_key_pem)
        )
    }

    /// A rustls server configuration presenting the leaf and offering [`ALPN`].
    fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(vec![self.leaf_der.clone()], key)
            })
            .map_err(|e| format!("could not configure the TLS server: {e}"))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A rustls client configuration trusting the CA only (for the front's upstream side).
    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| format!("could not trust the test CA: {e}"))?;
        Ok(
            rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("could not configure the TLS client: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// The SDK's own HTTPS client (rustls on aws-lc, ALPN `h2` and `http/1.1`) trusting this
    /// CA and nothing else.
    pub(crate) fn https_client(&self) -> Result<SharedHttpClient, BedError> {
        let context = TlsContext::builder()
            .with_trust_store(TrustStore::empty().with_pem_certificate(self.ca_pem.as_bytes()))
            .build()
            .map_err(|e| BedError::Backend {
                backend: "tls",
                message: format!("could not configure the SDK's TLS client: {e}"),
            })?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https())
    }
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the bed's TLS servers negotiated, per client socket address. Entries are written after
/// the handshake and before the connection serves anything, so a response can always be looked
/// up; they are never removed (a reused port overwrites its entry).
#[derive(Clone, Default)]
pub(crate) struct Negotiated {
    by_peer: Arc<Mutex<HashMap<SocketAddr, HttpVersion>>>,
}

impl Negotiated {
    fn record(&self, peer: SocketAddr, version: HttpVersion) {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, version);
    }

    fn get(&self, peer: SocketAddr) -> Option<HttpVersion> {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .copied()
    }
}

/// A TLS endpoint of a bed, with what is needed to reach it and to observe it.
#[derive(Clone)]
pub(crate) struct H2Endpoint {
    /// `https://127.0.0.1:PORT`.
    pub(crate) url: String,
    pub(crate) pki: Arc<TestPki>,
    pub(crate) negotiated: Negotiated,
}

/// The interceptor behind [`ObservedCall`]s: after each response, the protocol of the
/// connection that carried it.
#[derive(Clone, Debug)]
pub(crate) struct RecordHttpVersion {
    negotiated: Negotiated,
    calls: Arc<Mutex<Vec<ObservedCall>>>,
}

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiated").finish_non_exhaustive()
    }
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

/// Binds a TLS listener on `127.0.0.1:0` for the given PKI.
pub(crate) fn bind_tls(
    pki: &TestPki,
    what: &'static str,
) -> Result<(std::net::TcpListener, SocketAddr, TlsAcceptor), BedError> {
    let io = |source| BedError::Io { what, source };
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let config = pki.server_config().map_err(|message| BedError::Backend {
        backend: "tls",
        message,
    })?;
    Ok((listener, addr, TlsAcceptor::from(Arc::new(config))))
}

/// Serves `app` over TLS on `listener` (HTTP/2 or HTTP/1.1, as ALPN decides) until the task is
/// dropped, recording each connection's protocol in `negotiated`.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    negotiated: Negotiated,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TLS listener could not accept a connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let negotiated = negotiated.clone();
        // One task per connection, owned by this loop: dropping it (the bed stopping) aborts
        // them all.
        connections.spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let version = HttpVersion::from_alpn(stream.get_ref().1.alpn_protocol());
            negotiated.record(peer, version);
            let builder = match version {
                HttpVersion::Http2 => auto::Builder::new(TokioExecutor::new()).http2_only(),
                HttpVersion::Http11 => auto::Builder::new(TokioExecutor::new()).http1_only(),
            };
            let service = TowerToHyperService::new(app);
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "TLS connection ended with an error");
            }
        });
    }
}

/// A TLS-terminating relay on `127.0.0.1` in front of a TLS server on `upstream` that presents
/// the test certificate: each client connection is relayed byte for byte over a connection to
/// `upstream` negotiated with the same ALPN protocol. Its own runtime; dropping it stops it.
pub(crate) struct TlsFront {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    /// Starts the relay; it accepts connections as soon as this returns.
    pub(crate) fn start(
        upstream: SocketAddr,
        pki: &TestPki,
        negotiated: Negotiated,
    ) -> Result<Self, BedError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testbed-tls-front")
            .enable_all()
            .build()
            .map_err(|source| BedError::Io {
                what: "the TLS front's runtime",
                source,
            })?;
        let (listener, addr, acceptor) = bind_tls(pki, "the TLS front")?;
        let client_config = Arc::new(pki.client_config().map_err(|message| BedError::Backend {
            backend: "tls",
            message,
        })?);
        runtime.spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "the TLS front's listener could not join its runtime");
                    return;
                }
            };
            // One task per connection, owned by this loop (and so by the front's runtime).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "the TLS front could not accept a connection");
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let client_config = Arc::clone(&client_config);
                let negotiated = negotiated.clone();
                connections.spawn(async move {
                    if let Err(error) =
                        relay(tcp, peer, acceptor, &client_config, upstream, negotiated).await
                    {
                        tracing::warn!(%peer, %upstream, %error, "TLS front connection failed");
                    }
                });
            }
        });
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One client connection of a [`TlsFront`]: TLS in, the same ALPN protocol upstream, then bytes
/// both ways until either side closes.
async fn relay(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    client_config: &rustls::ClientConfig,
    upstream: SocketAddr,
    negotiated: Negotiated,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let mut downstream = acceptor.accept(tcp).await?;
    let alpn = downstream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);

    let mut config = client_config.clone();
    config.alpn_protocols = alpn.iter().cloned().collect();
    let upstream_tcp = TcpStream::connect(upstream).await?;
    let _ = upstream_tcp.set_nodelay(true);
    let server_name = ServerName::IpAddress(upstream.ip().into());
    let mut upstream_tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, upstream_tcp)
        .await?;
    let chosen = upstream_tls.get_ref().1.alpn_protocol();
    if chosen != alpn.as_deref() {
        return Err(std::io::Error::other(format!(
            "the client negotiated {:?} but the upstream server chose {:?}",
            alpn.as_deref().map(String::from_utf8_lossy),
            chosen.map(String::from_utf8_lossy)
        )));
    }
    negotiated.record(peer, HttpVersion::from_alpn(alpn.as_deref()));
    tokio::io::copy_bidirectional(&mut downstream, &mut upstream_tls)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTPS server on loopback answering `200 served` to everything, as the embedded
    /// backend serves ferrokinesis.
    async fn start_server(pki: &TestPki, negotiated: Negotiated) -> SocketAddr {
        let (listener, addr, acceptor) = bind_tls(pki, "a test server").unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let app = axum::Router::new().fallback(|| async { "served" });
        tokio::spawn(serve_tls(listener, acceptor, app, negotiated));
        addr
    }

    /// Connects to `addr` over TLS offering `alpn`, sends one HTTP/1.1 request, and returns the
    /// connection's local address and the response.
    async fn http1_request(
        pki: &TestPki,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> (SocketAddr, String) {
        let mut config = pki.client_config().unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.unwrap();
        (local, response)
    }

    #[tokio::test]
    async fn the_tls_server_records_http1_when_alpn_says_so_or_is_absent() {
        let pki = TestPki::shared().unwrap();
        let negotiated = Negotiated::default();
        let addr = start_server(&pki, negotiated.clone()).await;

        for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
            let (local, response) = http1_request(&pki, addr, alpn).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(response.ends_with("served"), "{response}");
            assert_eq!(
                negotiated.get(local),
                Some(HttpVersion::Http11),
                "ALPN {alpn:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_tls_server_prefers_h2_and_then_speaks_h2() {
        let pki = TestPki::shared().unwrap();
        let negotiated = Negotiated::default();
        let addr = start_server(&pki, negotiated.clone()).await;

        let mut config = pki.client_config().unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        // The HTTP/2 connection preface and an empty SETTINGS frame; an HTTP/2 server answers
        // with its own SETTINGS frame (type 4 on stream 0), and records before it serves.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut frame_header = [0u8; 9];
        tls.read_exact(&mut frame_header).await.unwrap();
        assert_eq!(frame_header[3], 4, "a SETTINGS frame: {frame_header:?}");
        assert_eq!(
            frame_header[5..],
            [0, 0, 0, 0],
            "on stream 0: {frame_header:?}"
        );
        assert_eq!(negotiated.get(local), Some(HttpVersion::Http2));
    }

    #[tokio::test]
    async fn the_front_relays_with_the_protocol_the_client_chose() {
        let pki = TestPki::shared().unwrap();
        let upstream_negotiated = Negotiated::default();
        let upstream = start_server(&pki, upstream_negotiated.clone()).await;
        let negotiated = Negotiated::default();
        let front = TlsFront::start(upstream, &pki, negotiated.clone()).unwrap();
        let addr = front.addr;

        let (local, response) = http1_request(&pki, addr, &[b"http/1.1"]).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("served"), "{response}");
        assert_eq!(negotiated.get(local), Some(HttpVersion::Http11));
        let upstream_side: Vec<_> = upstream_negotiated
            .by_peer
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect();
        assert_eq!(upstream_side, [HttpVersion::Http11]);
        // Dropped inside the test's runtime: the front stops without blocking it.
        drop(front);
    }

    #[test]
    fn the_kinesis_mock_certificate_file_is_json_with_both_pems() {
        let pki = TestPki::generate().unwrap();
        let json = pki.kinesis_mock_cert_json();
        assert!(json.starts_with("{\"server\":{\"cert\":\"-----BEGIN CERTIFICATE-----\\n"));
        assert!(json.contains("\"key\":\"-----BEGIN PRIVATE KEY-----\\n"));
        assert!(!json.trim_end().contains('\n'));
    }

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }
}
