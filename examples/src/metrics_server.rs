//! Prometheus metrics for the examples: `metrics-exporter-prometheus` records what
//! `kinesis-kcl` and `kinesis-kpl` report through the `metrics` facade, and a small HTTP
//! server answers `GET /metrics` with the text exposition format.
//!
//! The server binds its own listener, so an address with port 0 works and
//! [`MetricsServer::local_addr`] tells the port chosen.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let server = kinesis_examples::metrics_server::MetricsServer::install("127.0.0.1:0".parse()?).await?;
//! println!("metrics: http://{}/metrics", server.local_addr());
//! // … run the worker …
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often histogram buckets are rolled over (the exporter's default upkeep period).
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The error type of [`MetricsServer::install`].
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running `/metrics` endpoint; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    upkeep: JoinHandle<()>,
}

impl MetricsServer {
    /// Installs the Prometheus recorder as the process's global `metrics` recorder and serves
    /// it on `addr`.
    ///
    /// # Errors
    ///
    /// When a global recorder is installed already or `addr` cannot be bound.
    pub async fn install(addr: SocketAddr) -> Result<Self, Error> {
        let handle = PrometheusBuilder::new().install_recorder()?;
        Ok(Self::serve(handle, addr).await?)
    }

    /// Serves the recorder behind `handle` on `addr` (for a recorder that is not the global
    /// one, as in tests).
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn serve(handle: PrometheusHandle, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let render = handle.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { ([(CONTENT_TYPE, TEXT_FORMAT)], render.render()) }
            }),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_PERIOD);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
        Ok(MetricsServer {
            local_addr,
            stop,
            server,
            upkeep,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the metrics server failed"),
            Err(error) => tracing::warn!(%error, "the metrics server task failed"),
        }
        self.upkeep.abort();
        let _ = self.upkeep.await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    #[tokio::test]
    async fn serves_the_recorded_metrics_on_an_ephemeral_port() -> Result<(), Error> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(kinesis_kcl::metrics::RECORDS_PROCESSED, "stream" => "s")
                .increment(7);
        });
        let server = MetricsServer::serve(handle, "127.0.0.1:0".parse()?).await?;
        assert_ne!(server.local_addr().port(), 0);
        let response = get(server.local_addr(), "/metrics").await?;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(
            response.contains(&format!(
                "{}{{stream=\"s\"}} 7",
                kinesis_kcl::metrics::RECORDS_PROCESSED
            )),
            "{response}"
        );
        let missing = get(server.local_addr(), "/other").await?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let addr = server.local_addr();
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "stopped listening");
        Ok(())
    }
}
