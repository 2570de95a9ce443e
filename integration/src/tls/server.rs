//! The bed's TLS server: a listener presenting the test certificate, and the loop that serves
//! an axum app over it with HTTP/2 or HTTP/1.1 as ALPN decides, recording each connection's
//! protocol before it serves a byte.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::observer::{HttpVersion, Negotiated};
use super::pki::TestPki;
use crate::BedError;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::tls::testing::{http1_request, start_server};

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
}
