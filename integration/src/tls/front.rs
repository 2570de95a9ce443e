//! The TLS front of the emulators backend: it terminates the client's TLS and relays the bytes,
//! unchanged, over a second TLS connection negotiated with the same ALPN protocol to an
//! upstream server presenting the test certificate (kinesis-mock's own TLS port).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::observer::{HttpVersion, Negotiated};
use super::pki::TestPki;
use super::server::bind_tls;
use crate::BedError;

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
    use super::*;
    use crate::tls::testing::{http1_request, start_server};

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
}
