//! A hyper server with defaults fit for a public webhook endpoint.
//!
//! `axum::serve` installs no header-read timeout: a client that opens a
//! connection and stalls halfway through its headers holds that connection
//! (and its memory) for as long as it likes, and a few thousand such clients
//! exhaust the process. [`Server`] serves any tower service over HTTP/1.1 and
//! HTTP/2 with hyper-util, and by default
//!
//! * closes a connection whose request headers do not arrive within
//!   10 seconds (this includes an idle keep-alive connection waiting for its
//!   next request),
//! * holds at most 1024 connections at once, leaving further ones waiting in
//!   the kernel's accept queue,
//! * shuts down gracefully when asked: stops accepting, lets requests in
//!   flight finish (within a deadline), then returns.
//!
//! The body's own deadline is the [`WebhookLayer`](crate::WebhookLayer)'s
//! read timeout.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::serve::Server;
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/healthz", get(|| async { "ok" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! Server::new(listener)
//!     .serve_with_shutdown(app, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// Default deadline for a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on connections held at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default time requests in flight get to finish after shutdown is asked for.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves a tower service on a bound listener with hardened defaults.
/// See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
}

impl Server {
    /// A server on `listener` with the default limits.
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How long a client may take to send a request's headers before its
    /// connection is closed. Default: 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How many connections are held at once. Default: 1024.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long requests in flight may take to finish after shutdown is
    /// asked for. Default: 30 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Serves until the process ends. Accept errors are logged and retried,
    /// never returned.
    pub async fn serve<S, B>(self, service: S) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(service, pending()).await
    }

    /// Serves until `signal` completes, then stops accepting and waits up to
    /// the shutdown grace for open connections to finish their requests.
    pub async fn serve_with_shutdown<S, B, F>(self, service: S, signal: F) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()> + Send,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut signal = std::pin::pin!(signal);

        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // the semaphore is never closed
                },
                () = &mut signal => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, then try again.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(service.clone());
            let connection = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }

        drop(self.listener);
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace; dropping them");
        }
        Ok(())
    }
}

/// Completes when the process is asked to stop: SIGTERM (what Docker,
/// Kubernetes and systemd send) or SIGINT (Ctrl-C). Give it to
/// [`Server::serve_with_shutdown`].
///
/// ```no_run
/// use ltvboost_webhooks::serve::{Server, shutdown_signal};
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// Server::new(listener).serve_with_shutdown(app, shutdown_signal()).await
/// # }
/// ```
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received: draining"),
        () = terminate => tracing::info!("SIGTERM received: draining"),
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
