//! The default backend: `ferrokinesis` (Kinesis) and `dynoxide` (DynamoDB) served in-process.
//!
//! Both servers run on a small Tokio runtime of their own, owned by the bed, so they neither
//! depend on nor compete with the runtime flavour a test chooses, and they stop when the bed is
//! dropped. Each bed gets fresh, empty servers on ephemeral `127.0.0.1` ports (or the ports
//! [`BedOptions`] names): tests never share state and can run in parallel.
//!
//! What these servers do, measured with the real AWS SDK (the bed's smoke tests cover the first
//! three):
//! - ferrokinesis 0.7: PutRecords/GetRecords with real MD5 hash-key routing, SubscribeToShard
//!   over plain HTTP/1.1 (and h2c), stream-state delays configurable (set to 0 here), real
//!   per-shard write throttling with `enforce_limits`. Gaps: StreamARN addressing (address
//!   streams by name in tests), ListShards `NextToken` paging and `ShardFilter` are not honoured,
//!   GetRecords never returns `ChildShards` at shard end. Our libraries use those features where
//!   they exist but never depend on them alone (the Java KCL also falls back to ListShards).
//! - dynoxide 3.2 (SQLite in memory): conditional writes, `ConditionalCheckFailedException`,
//!   paging and consistent reads behave as DynamoDB.
//! - A debug-build SDK client makes a few hundred calls per second against them on this 2-core
//!   machine; the servers are not the bottleneck.
//!
//! ferrokinesis is served twice, from one store: on a plain `http://` port (HTTP/1.1, and h2c
//! with prior knowledge) and on a TLS port that offers ALPN `h2` then `http/1.1` with the bed's
//! test certificate, recording each connection's protocol (see [`crate::tls`]).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::BedOptions;
use crate::BedError;
use crate::tls::{self, H2Endpoint, Negotiated, TestPki};

/// A running pair of in-process servers; dropping it stops both.
pub(crate) struct EmbeddedServers {
    kinesis_addr: SocketAddr,
    dynamodb_addr: SocketAddr,
    kinesis_h2: H2Endpoint,
    stop: watch::Sender<bool>,
    runtime: Option<Runtime>,
}

impl EmbeddedServers {
    /// Binds both listeners (so the servers accept connections as soon as this returns) and
    /// starts serving them on the bed's own runtime.
    pub(crate) fn start(options: &BedOptions, pki: Arc<TestPki>) -> Result<Self, BedError> {
        let (kinesis_listener, kinesis_addr) = bind_loopback("ferrokinesis", options.kinesis_port)?;
        let (dynamodb_listener, dynamodb_addr) = bind_loopback("dynoxide", options.dynamodb_port)?;
        let (kinesis_tls_listener, kinesis_tls_addr, acceptor) =
            tls::bind_tls(&pki, "ferrokinesis over TLS")?;
        let kinesis_h2 = H2Endpoint {
            url: format!("https://{kinesis_tls_addr}"),
            pki,
            negotiated: Negotiated::default(),
        };
        let database = dynoxide::Database::memory().map_err(|e| BedError::Backend {
            backend: "embedded",
            message: format!("dynoxide could not open an in-memory database: {e}"),
        })?;
        // The runtime comes last of the fallible steps: one dropped inside an async context
        // (a failed bind, with the caller on a runtime) panics.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testbed-server")
            .enable_all()
            .build()
            .map_err(|source| BedError::Io {
                what: "the embedded servers' runtime",
                source,
            })?;
        let (stop, stopped) = watch::channel(false);

        let store_options = ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: options.shard_limit,
            iterator_ttl_seconds: options.iterator_ttl.as_secs().max(1),
            subscribe_to_shard_session_ms: options.subscribe_to_shard_session.as_millis() as u64,
            enforce_limits: options.enforce_limits,
            ..Default::default()
        };
        let _enter = runtime.enter();
        let (kinesis_app, _store) = ferrokinesis::create_app(store_options);
        let tls_app = kinesis_app.clone();
        let negotiated = kinesis_h2.negotiated.clone();
        let mut tls_stop = stopped.clone();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(kinesis_tls_listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "ferrokinesis TLS listener could not join the runtime");
                    return;
                }
            };
            tokio::select! {
                () = tls::serve_tls(listener, acceptor, tls_app, negotiated) => {}
                _ = tls_stop.wait_for(|stop| *stop) => {}
            }
        });
        let mut kinesis_stop = stopped.clone();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(kinesis_listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "ferrokinesis listener could not join the runtime");
                    return;
                }
            };
            let shutdown = async move {
                let _ = kinesis_stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, kinesis_app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "ferrokinesis stopped serving");
            }
        });
        let mut dynamodb_stop = stopped;
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(dynamodb_listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "dynoxide listener could not join the runtime");
                    return;
                }
            };
            let shutdown = async move {
                let _ = dynamodb_stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) =
                dynoxide::server::serve_with_shutdown(listener, database, shutdown).await
            {
                tracing::error!(%error, "dynoxide stopped serving");
            }
        });
        drop(_enter);

        tracing::debug!(%kinesis_addr, %dynamodb_addr, "embedded servers started");
        Ok(Self {
            kinesis_addr,
            dynamodb_addr,
            kinesis_h2,
            stop,
            runtime: Some(runtime),
        })
    }

    pub(crate) fn kinesis_endpoint(&self) -> String {
        format!("http://{}", self.kinesis_addr)
    }

    pub(crate) fn dynamodb_endpoint(&self) -> String {
        format!("http://{}", self.dynamodb_addr)
    }

    /// ferrokinesis over TLS (ALPN `h2`, `http/1.1`).
    pub(crate) fn kinesis_h2(&self) -> H2Endpoint {
        self.kinesis_h2.clone()
    }
}

impl Drop for EmbeddedServers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            // Allowed from inside an async context, unlike dropping the runtime.
            runtime.shutdown_background();
        }
    }
}

fn bind_loopback(what: &'static str, port: u16) -> Result<(StdTcpListener, SocketAddr), BedError> {
    let io = |source| BedError::Io { what, source };
    let listener = StdTcpListener::bind(("127.0.0.1", port)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    Ok((listener, addr))
}
