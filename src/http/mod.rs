//! The HTTP server: `/metrics`, the status page `/`, `/healthz` and `/api/readings`.
//!
//! hyper 1.x over HTTP/1.1, with what an exporter on a shared network needs:
//! - [`connections`]: a cap on connections from the file limit, and the policy that keeps a
//!   scraper in when someone holds hundreds of idle or half-sent ones;
//! - a header timeout ([`HEADER_READ_TIMEOUT`], also the keep-alive idle time), a cap on header
//!   size, request bodies never read;
//! - [`web_config`], [`tls`] and [`auth`]: the exporter-toolkit web configuration: TLS by
//!   rustls, basic auth with bcrypt, extra headers, a rate limit;
//! - a graceful stop that lets in-flight requests finish.
//!
//! # Layout
//! [`routes`] answers a request; [`api`] and [`page`] render the JSON and the page.

mod api;
mod auth;
pub(crate) mod connections;
mod gzip;
mod page;
mod routes;
pub(crate) mod tls;
pub mod web_config;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use self::auth::Auth;
use self::connections::{Connections, Place};
use self::routes::Limiter;
pub(crate) use self::web_config::WebSecurity;
use crate::board::Sensors;
use crate::metrics::Metrics;
use crate::sampler::Health;

/// A mistake in the web configuration file ([`web_config`], [`tls`]) at `key`.
pub(crate) struct Mistake {
    pub(crate) key: String,
    pub(crate) message: String,
}

pub(crate) fn mistake(key: impl Into<String>, message: impl Into<String>) -> Mistake {
    Mistake {
        key: key.into(),
        message: message.into(),
    }
}

/// A client must send its request headers within this time; a kept-alive connection waiting
/// for its next request is closed after it too.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake must end within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Request line plus headers; larger requests are refused.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// In-flight requests get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What the web configuration asks of every request.
pub(crate) struct WebState {
    security: WebSecurity,
    limiter: Option<Limiter>,
    /// `/healthz` answers without authentication.
    public_healthz: bool,
}

/// What the handlers serve.
pub(crate) struct App {
    /// The registry `/metrics` encodes, and the board of sensors it reports.
    pub(crate) metrics: Arc<Metrics>,
    /// Whether sampling is alive (`/healthz`).
    pub(crate) health: Health,
    /// When the daemon started.
    pub(crate) started: Instant,
    /// The package version.
    pub(crate) version: &'static str,
    web: RwLock<Arc<WebState>>,
    auth: Auth,
    connections: Arc<Connections>,
}

impl App {
    /// An app serving `metrics` and its board's sensors; `web` says how it is secured.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        health: Health,
        web: WebSecurity,
        public_healthz: bool,
    ) -> App {
        App {
            metrics,
            health,
            started: Instant::now(),
            version: crate::VERSION,
            web: RwLock::new(Arc::new(WebState::new(web, public_healthz))),
            auth: Auth::default(),
            connections: Connections::new(connections::cap_from_file_limit()),
        }
    }

    /// The sensors as of now.
    pub(crate) fn sensors(&self) -> Sensors {
        self.metrics.board().sensors()
    }

    fn web(&self) -> Arc<WebState> {
        Arc::clone(&self.web.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Secure the next connections and requests with `web` (a reload).
    pub(crate) fn set_web(&self, web: WebSecurity, public_healthz: bool) {
        *self.web.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(WebState::new(web, public_healthz));
    }

    /// Whether new connections get TLS.
    pub(crate) fn serves_tls(&self) -> bool {
        self.web().security.tls.is_some()
    }

    /// The connection table.
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    #[cfg(test)]
    fn for_tests() -> App {
        App::new(
            Arc::new(Metrics::new("0", "test", crate::board::Board::new()).expect("metrics")),
            Health::default(),
            WebSecurity::default(),
            false,
        )
    }
}

impl WebState {
    fn new(security: WebSecurity, public_healthz: bool) -> WebState {
        WebState {
            limiter: security.rate_limit.map(Limiter::new),
            security,
            public_healthz,
        }
    }
}

/// Serve on every listener until `shutdown` turns true (or its sender goes away).
pub(crate) async fn serve(
    listeners: Vec<TcpListener>,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) {
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(accept_loop(l, Arc::clone(&app), shutdown.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors: make room, let the closed connections go,
                        // and try again soon rather than spin.
                        if app.connections.evict_one() {
                            tokio::task::yield_now().await;
                        } else {
                            log::warn!("accepting a connection failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        continue;
                    }
                };
                // No place: every connection is busy serving; this one is closed (and logged).
                let Some((place, evicted)) = app.connections.admit(peer.ip()) else { continue };
                let place = Arc::new(place);
                let task = tokio::spawn(connection(
                    stream,
                    peer,
                    Arc::clone(&app),
                    Arc::clone(&place),
                    graceful.watcher(),
                ));
                place.set_abort(task.abort_handle());
                if evicted {
                    // Let the runtime drop the closed connection (and its socket) before the
                    // next accept, so that evictions never pile up file descriptors.
                    tokio::task::yield_now().await;
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// One connection: the TLS handshake if configured, then HTTP/1.1 requests until it closes,
/// times out or has to make room for another.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    place: Arc<Place>,
    watcher: Watcher,
) {
    let _ = stream.set_nodelay(true);
    let tls = app.web().security.tls.clone();
    let service = {
        let place = Arc::clone(&place);
        service_fn(move |request| {
            let (app, place) = (Arc::clone(&app), Arc::clone(&place));
            async move {
                place.busy();
                let response = routes::handle(&app, peer.ip(), &request).await;
                place.idle();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let served = match tls {
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service))
                .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        log::debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        log::debug!("TLS handshake with {peer} timed out");
                        return;
                    }
                };
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service))
                .await
        }
    };
    if let Err(e) = served {
        log::debug!("connection from {peer}: {e}");
    }
}
