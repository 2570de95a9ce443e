//! What the TLS unit tests share: a TLS server to talk to and a raw HTTP/1.1 client.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::observer::Negotiated;
use super::pki::TestPki;
use super::server::{bind_tls, serve_tls};

/// An HTTPS server on loopback answering `200 served` to everything, as the embedded
/// backend serves ferrokinesis.
pub(super) async fn start_server(pki: &TestPki, negotiated: Negotiated) -> SocketAddr {
    let (listener, addr, acceptor) = bind_tls(pki, "a test server").unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    let app = axum::Router::new().fallback(|| async { "served" });
    tokio::spawn(serve_tls(listener, acceptor, app, negotiated));
    addr
}

/// Connects to `addr` over TLS offering `alpn`, sends one HTTP/1.1 request, and returns the
/// connection's local address and the response.
pub(super) async fn http1_request(
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
