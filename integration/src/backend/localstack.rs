//! LocalStack through `testcontainers`, for machines with a Docker engine.
//!
//! Built only with the crate's `localstack` feature (it pulls in the Docker client). One
//! LocalStack container (`SERVICES=kinesis,dynamodb`) is shared by all beds of a test process:
//! started by the first, removed when the last is dropped. Without Docker the bed fails with a
//! message saying so; it never skips silently.

use super::Running;
use crate::BedError;

#[cfg(not(feature = "localstack"))]
pub(crate) async fn start() -> Result<Running, BedError> {
    Err(BedError::Backend {
        backend: "localstack",
        message: "this build has no LocalStack support; rebuild with the `localstack` feature, e.g. \
                  `KINESIS_TEST_BACKEND=localstack cargo test --workspace --features kinesis-integration/localstack`"
            .to_owned(),
    })
}

#[cfg(feature = "localstack")]
pub(crate) use container::start;

#[cfg(feature = "localstack")]
mod container {
    use std::sync::{Arc, OnceLock, Weak};

    use testcontainers_modules::localstack::LocalStack;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};
    use tokio::runtime::Runtime;

    use super::{BedError, Running};

    /// The LocalStack edge port.
    const EDGE_PORT: u16 = 4566;

    struct Shared {
        endpoint: String,
        container: Option<ContainerAsync<LocalStack>>,
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            let Some(container) = self.container.take() else {
                return;
            };
            // The Docker client lives on the docker runtime: remove the container there and wait,
            // so the container is gone when the last bed is.
            let (done, wait) = std::sync::mpsc::channel();
            docker_runtime().spawn(async move {
                if let Err(error) = container.rm().await {
                    tracing::warn!(%error, "could not remove the LocalStack container");
                }
                let _ = done.send(());
            });
            let _ = wait.recv();
        }
    }

    fn docker_runtime() -> &'static Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("testbed-docker")
                .enable_all()
                .build()
                .expect("a one-thread Tokio runtime can always be built")
        })
    }

    fn shared() -> &'static tokio::sync::Mutex<Weak<Shared>> {
        static SHARED: OnceLock<tokio::sync::Mutex<Weak<Shared>>> = OnceLock::new();
        SHARED.get_or_init(|| tokio::sync::Mutex::new(Weak::new()))
    }

    pub(crate) async fn start() -> Result<Running, BedError> {
        let mut slot = shared().lock().await;
        let instance = match slot.upgrade() {
            Some(instance) => instance,
            None => {
                let instance = Arc::new(launch().await?);
                *slot = Arc::downgrade(&instance);
                instance
            }
        };
        Ok(Running {
            kinesis_endpoint: Some(instance.endpoint.clone()),
            dynamodb_endpoint: Some(instance.endpoint.clone()),
            kinesis_tls_endpoint: None,
            kinesis_h2: None,
            dummy_credentials: true,
            guard: Box::new(instance),
        })
    }

    async fn launch() -> Result<Shared, BedError> {
        let started = docker_runtime()
            .spawn(async {
                let container = LocalStack::default()
                    .with_env_var("SERVICES", "kinesis,dynamodb")
                    .with_env_var("KINESIS_LATENCY", "0")
                    .start()
                    .await?;
                let port = container.get_host_port_ipv4(EDGE_PORT).await?;
                Ok::<_, testcontainers_modules::testcontainers::TestcontainersError>((
                    container, port,
                ))
            })
            .await;
        match started {
            Ok(Ok((container, port))) => Ok(Shared {
                endpoint: format!("http://127.0.0.1:{port}"),
                container: Some(container),
            }),
            Ok(Err(error)) => Err(BedError::Backend {
                backend: "localstack",
                message: format!(
                    "could not start LocalStack through Docker ({error}); is a Docker engine \
                     running? Without Docker use KINESIS_TEST_BACKEND=embedded or emulators"
                ),
            }),
            Err(join) => Err(BedError::Backend {
                backend: "localstack",
                message: format!("the LocalStack start-up task failed: {join}"),
            }),
        }
    }
}
