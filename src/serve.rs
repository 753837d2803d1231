//! A hyper server with defaults fit for a public webhook endpoint.
//!
//! `axum::serve` installs no header-read timeout: a client that opens a
//! connection and stalls halfway through its headers holds that connection
//! (and its memory) for as long as it likes, and a few thousand such clients
//! exhaust the process. [`Server`] serves any tower service over HTTP/1.1 and
//! HTTP/2 with hyper-util, and by default
//!
//! * gives every connection, whatever its protocol, 10 seconds to send its
//!   first complete request head: a connection that sends nothing, half an
//!   HTTP/2 preface, or an HTTP/2 connection that opens no stream is closed
//!   then (hyper's own header-read timeout covers later requests on an
//!   HTTP/1 connection);
//! * closes a connection with no request in flight for 60 seconds (idle
//!   keep-alive, either protocol), and pings HTTP/2 peers every 20 seconds,
//!   closing those that do not answer within 10;
//! * allows 32 concurrent HTTP/2 streams per connection, and reads HTTP/1
//!   into a buffer of at most 64 KiB per connection (a request head larger
//!   than that is refused with `431`), so a flood of connections each
//!   holding part of a body costs the receiver's body budget plus a small
//!   buffer each, not hyper's default of about 400 KiB each;
//! * holds at most 1024 connections; at the cap it keeps accepting while
//!   any connection has had no request in flight for a second, and makes
//!   room by closing the one that has been idle longest, whether or not it
//!   was ever answered: silent connections, half-sent heads and keep-alive
//!   connections parked between cheap requests go before a sender that is
//!   delivering. A connection with a request in flight, or idle only a
//!   moment (just opened, or just answered), is never shed;
//! * optionally caps the connections one peer address may hold
//!   ([`Server::max_connections_per_peer`], off by default: behind a proxy
//!   every connection comes from the proxy);
//! * hands the peer's address to the service as [`PeerAddr`], and with the
//!   `axum` feature also as axum's `ConnectInfo<SocketAddr>`;
//! * shuts down gracefully when asked ([`shutdown_signal`] for SIGTERM and
//!   SIGINT): stops accepting, lets requests in flight finish and waits
//!   for the deliveries they answered to be recorded (done or released)
//!   within 25 seconds (under Kubernetes' default 30), then aborts what is
//!   left and logs, by event id, each delivery whose end was not recorded.
//!
//! The body's own deadline and size limit are the receiver's
//! ([`WebhookConfig`](crate::WebhookConfig)).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::serve::{Server, shutdown_signal};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/healthz", get(|| async { "ok" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! Server::new(listener).serve_with_shutdown(app, shutdown_signal()).await
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::{Future, pending};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::receiver::handover::Unsettled;

/// Default deadline for a connection's first complete request head, and for
/// each later request's head on an HTTP/1 connection.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time a connection may stay open with no request in flight.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default cap on connections held at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default cap on concurrent HTTP/2 streams per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 32;

/// Default time requests in flight get to finish after shutdown is asked for.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// How long a connection must have been idle before it may be shed: a
/// sender that just connected, or just got an answer, is about to send.
const SHED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How often HTTP/2 peers are pinged, and how long they have to answer.
const HTTP2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(10));

/// The most an HTTP/1 connection buffers from its socket: it bounds the
/// request head and what each connection in a flood holds.
const HTTP1_READ_BUFFER: usize = 64 * 1024;

/// Longer durations are clamped to this: a timer set further ahead would
/// overflow the clock.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use crate::PeerAddr;

/// Serves a tower service on a bound listener with hardened defaults.
/// See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_connections_per_peer: Option<usize>,
    max_concurrent_streams: u32,
    shutdown_grace: Duration,
}

impl Server {
    /// A server on `listener` with the default limits.
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How long a connection may take to send its first complete request
    /// head (and, on HTTP/1, each later one) before it is closed. Default:
    /// 10 s. At least 1 ms; at most a year.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout.clamp(Duration::from_millis(1), LONGEST);
        self
    }

    /// How long a connection may stay open with no request in flight.
    /// Default: 60 s. At least 1 ms; at most a year.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.clamp(Duration::from_millis(1), LONGEST);
        self
    }

    /// How many connections are held at once. Default: 1024.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How many connections one peer address may hold at once; off by
    /// default. Past it, the peer's own connection idle longest is closed
    /// to make room, or the new one is refused when each of the peer's
    /// connections has a request in flight or was idle only a moment. Turn
    /// it on only when clients connect directly: behind a proxy or load
    /// balancer every connection comes from the proxy's address.
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use ltvboost_webhooks::serve::Server;
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
    /// let server = Server::new(listener).max_connections_per_peer(64);
    /// # Ok(()) }
    /// ```
    pub fn max_connections_per_peer(mut self, max: usize) -> Self {
        self.max_connections_per_peer = Some(max.max(1));
        self
    }

    /// How many HTTP/2 streams one connection may have open at once.
    /// Default: 32.
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max.max(1);
        self
    }

    /// How long requests in flight may take to finish after shutdown is
    /// asked for. Default: 25 s. At most a year.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace.min(LONGEST);
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
            .max_buf_size(HTTP1_READ_BUFFER)
            .header_read_timeout(self.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .keep_alive_interval(HTTP2_KEEP_ALIVE.0)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE.1);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Connections::default());
        let unsettled = Unsettled::default();
        let mut tasks = JoinSet::new();
        let limits = Limits {
            first_request: self.header_read_timeout,
            idle: self.idle_timeout,
        };
        let mut signal = std::pin::pin!(signal);

        loop {
            // At the cap with every connection busy (a request in flight on
            // each, or idle only a moment), wait for one to close or go idle.
            while connections.len() >= self.max_connections && !connections.any_sheddable() {
                tokio::select! {
                    () = connections.closed.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = &mut signal => return self.drain(graceful, tasks, unsettled).await,
                }
            }
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    // Out of file descriptors before the connection cap
                    // (a low open-file limit): make room the same way.
                    Err(e) if is_out_of_descriptors(&e) && connections.shed_idle_longest(None) => {
                        tracing::warn!(error = %e, "accept failed; shed the connection idle longest");
                        tokio::select! {
                            () = connections.closed.notified() => {}
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                        continue;
                    }
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
            while tasks.try_join_next().is_some() {}
            let _ = stream.set_nodelay(true);
            if let Some(cap) = self.max_connections_per_peer
                && connections.count_from(peer.ip()) >= cap
                && !connections.shed_idle_longest(Some(peer.ip()))
            {
                tracing::debug!(%peer, "connection refused: the peer holds its cap, all busy");
                continue;
            }
            // At the cap, make room by shedding the connection idle longest.
            if connections.len() >= self.max_connections {
                connections.shed_idle_longest(None);
            }
            let watch = connections.open(peer.ip());
            let service = TowerToHyperService::new(Watched {
                inner: service.clone(),
                watch: watch.clone(),
                peer,
                unsettled: unsettled.clone(),
            });
            let connection = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            let connections = connections.clone();
            tasks.spawn(async move {
                // Forgotten when the task ends, even by a panic or an abort.
                let _open = Open(&connections, &watch);
                tokio::select! {
                    result = connection => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    reason = watch.expire(limits) => {
                        tracing::debug!(%peer, reason, "connection closed");
                    }
                }
            });
        }
        self.drain(graceful, tasks, unsettled).await
    }

    /// Stops accepting; within the grace, lets open connections finish and
    /// waits for the deliveries they answered to be recorded; then aborts
    /// what is left and names each delivery whose end was not recorded.
    async fn drain(
        self,
        graceful: GracefulShutdown,
        mut tasks: JoinSet<()>,
        unsettled: Unsettled,
    ) -> io::Result<()> {
        drop(self.listener);
        let deadline = Instant::now() + self.shutdown_grace;
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace; closing them");
        }
        tasks.shutdown().await;
        if tokio::time::timeout_at(deadline, unsettled.settled())
            .await
            .is_err()
        {
            for event_id in unsettled.event_ids() {
                tracing::error!(
                    event_id = &*event_id,
                    "shut down before this delivery's end (done or released) was recorded: \
                     it was not recorded, and may run again when the sender retries after \
                     its claim lapses"
                );
            }
        }
        Ok(())
    }
}

/// The deadlines a connection lives under.
#[derive(Clone, Copy)]
struct Limits {
    first_request: Duration,
    idle: Duration,
}

/// What the server knows of one open connection.
struct Watch {
    id: u64,
    opened: Instant,
    peer: IpAddr,
    /// Requests whose head arrived.
    requests: AtomicU64,
    /// Requests not yet answered.
    in_flight: AtomicUsize,
    /// When the last request was answered, in ms since `opened` (0 until
    /// then: idle since it opened).
    idle_since_ms: AtomicU64,
    /// Chosen to close, to make room at the cap (until it closes, or keeps
    /// a request that started meanwhile).
    shedding: AtomicBool,
    /// Told to close, to make room at the cap.
    shed: Notify,
}

impl Watch {
    fn since_opened_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When it went idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }

    /// When it went idle, if it has been for long enough to be shed and is
    /// not being shed already.
    fn sheddable(&self) -> Option<Instant> {
        if self.shedding.load(Ordering::Acquire) {
            return None;
        }
        self.idle_since()
            .filter(|since| since.elapsed() >= SHED_AFTER_IDLE)
    }

    /// Completes when the connection must close: shed, no first request
    /// head within its deadline, or idle too long.
    async fn expire(&self, limits: Limits) -> &'static str {
        let first_deadline = self.opened + limits.first_request;
        loop {
            // Checked at deadlines rather than woken on every answer: a wake
            // per request would cost a task poll per request.
            let next_check = if self.requests.load(Ordering::Acquire) == 0 {
                if Instant::now() >= first_deadline {
                    return "no request head within the header-read timeout";
                }
                first_deadline.min(Instant::now() + limits.idle)
            } else if let Some(idle_since) = self.idle_since() {
                if idle_since.elapsed() >= limits.idle {
                    return "idle";
                }
                idle_since + limits.idle
            } else {
                Instant::now() + limits.idle
            };
            tokio::select! {
                // Checked on the connection's own task, where hyper calls the
                // service: a request that started since the choice keeps it.
                () = self.shed.notified() => {
                    if self.in_flight.load(Ordering::Acquire) == 0 {
                        return "shed at the connection cap";
                    }
                    self.shedding.store(false, Ordering::Release);
                }
                () = tokio::time::sleep_until(next_check) => {}
            }
        }
    }
}

/// A connection in [`Connections`], taken out on drop.
struct Open<'a>(&'a Connections, &'a Watch);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

/// Every open connection, oldest first.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Watch>>>,
    next_id: AtomicU64,
    /// Signalled whenever a connection closes.
    closed: Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Watch>>> {
        // A panic while the map was held leaves it consistent: keep using it.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self, peer: IpAddr) -> Arc<Watch> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watch = Arc::new(Watch {
            id,
            opened: Instant::now(),
            peer,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
            shed: Notify::new(),
        });
        self.lock().insert(id, watch.clone());
        watch
    }

    fn close(&self, watch: &Watch) {
        self.lock().remove(&watch.id);
        self.closed.notify_waiters();
    }

    fn any_sheddable(&self) -> bool {
        self.lock()
            .values()
            .any(|watch| watch.sheddable().is_some())
    }

    fn count_from(&self, peer: IpAddr) -> usize {
        self.lock()
            .values()
            .filter(|watch| watch.peer == peer)
            .count()
    }

    /// Tells the connection idle longest (of `peer`'s, when given; idle for
    /// at least [`SHED_AFTER_IDLE`]) to close. It stays counted until it has
    /// closed, and is not chosen twice. Whether there was one.
    fn shed_idle_longest(&self, peer: Option<IpAddr>) -> bool {
        let open = self.lock();
        let longest = open
            .values()
            .filter(|watch| peer.is_none_or(|peer| watch.peer == peer))
            .filter_map(|watch| Some((watch.sheddable()?, watch.id)))
            .min()
            .and_then(|(_, id)| open.get(&id));
        match longest {
            Some(watch) => {
                watch.shedding.store(true, Ordering::Release);
                watch.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The user's service, counting each connection's requests and handing it
/// the peer's address.
#[derive(Clone)]
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
    peer: SocketAddr,
    unsettled: Unsettled,
}

impl<S, B> Service<Request<Incoming>> for Watched<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        self.watch.requests.fetch_add(1, Ordering::AcqRel);
        self.watch.in_flight.fetch_add(1, Ordering::AcqRel);
        let extensions = request.extensions_mut();
        extensions.insert(PeerAddr(self.peer));
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        extensions.insert(self.unsettled.clone());
        Answering {
            inner: self.inner.call(request),
            watch: Some(self.watch.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future; marks the connection answered when done
    /// (or dropped).
    struct Answering<F> {
        #[pin]
        inner: F,
        watch: Option<Arc<Watch>>,
    }

    impl<F> PinnedDrop for Answering<F> {
        fn drop(this: Pin<&mut Self>) {
            finish(this.project().watch);
        }
    }
}

impl<F: Future> Future for Answering<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        finish(this.watch);
        Poll::Ready(output)
    }
}

/// Marks a request answered, once.
fn finish(watch: &mut Option<Arc<Watch>>) {
    if let Some(watch) = watch.take() {
        watch
            .idle_since_ms
            .store(watch.since_opened_ms(), Ordering::Release);
        watch.in_flight.fetch_sub(1, Ordering::AcqRel);
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

/// `EMFILE` or `ENFILE`: the process or the system has no file descriptor
/// left for a new connection.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24)) && cfg!(unix)
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
