//! The HTTP admin endpoint (production operations): Prometheus metrics, the JSON the `ctl`
//! commands read, and the `ctl` client itself.
//!
//! It only reads through a `NodeHandle`; it never touches broker or cluster state directly and
//! makes no protocol decisions. Who may call it is decided in `guard` (DESIGN §1 Security):
//! with `admin.token` set every request needs `Authorization: Bearer TOKEN`; without one (only on
//! loopback) `Host` must name the endpoint and a state-changing request needs a JSON body and no
//! foreign `Origin`, so a web page in a browser on the host cannot drive it. Connections are
//! bounded in number and in time (see the constants below).

pub mod ctl;
mod guard;
mod metrics;

pub use metrics::render_prometheus;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::cluster::{NodeName, SeedNode};
use crate::log_limit::LogLimiter;
use crate::net::Net;
use crate::node::{Attachment, CommandError, NodeError, NodeHandle};
use guard::{Policy, Refusal};

/// Pause after a failed accept so a full fd table does not make us spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Admin connections open at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a connection has to send a request's headers, counted from when the server starts
/// waiting for them (on accept, and after each answer on a kept-alive connection); then it is
/// closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a request has to send its body once its headers are in; then 408 and close.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from a request's headers to its answer, body and handler included (longer than the 15 s
/// a join waits for the link); then 503 and close.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body (the JSON bodies are a few bytes); larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;
/// At most one log line per refusal reason per this long (with the count suppressed meanwhile).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Time since the endpoint started, read through `Net::now`.
type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    handle: NodeHandle,
    policy: Arc<Policy>,
    refusals: Refusals,
}

/// The rate-limited log of refused requests and connections.
#[derive(Clone)]
struct Refusals {
    log: Arc<Mutex<LogLimiter<Refusal>>>,
    clock: Clock,
}

impl Refusals {
    fn note(&self, refusal: Refusal, peer: Option<SocketAddr>) {
        let now = (self.clock)();
        let admitted = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(refusal, now);
        if let Some(suppressed) = admitted {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            tracing::warn!(
                %peer,
                suppressed,
                "admin request refused: {}",
                refusal.message()
            );
        }
    }
}

/// The peer of the connection a request came on (a request extension, for the refusal log).
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Body of `POST /api/v1/cluster/join` and `/force-leave`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeRequest {
    /// `name@host` (join also takes `name@host:port`).
    pub node: String,
}

/// The admin routes: `GET /metrics`, `GET /api/v1/metrics`, `GET /api/v1/clients`,
/// `GET /api/v1/cluster/status`, `GET /api/v1/routes`, `POST /api/v1/cluster/join`,
/// `POST /api/v1/cluster/leave`, `POST /api/v1/cluster/force-leave` (each POST with a JSON body:
/// `{"node": "name@host"}`, `{}` for leave). A refused cluster command answers 400 with the
/// reason as plain text; a refused caller 401 / 403 with `{"error": "..."}`.
fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/api/v1/metrics", get(metrics_json))
        .route("/api/v1/clients", get(clients_json))
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/routes", get(routes_json))
        .route("/api/v1/cluster/join", post(cluster_join))
        .route("/api/v1/cluster/leave", post(cluster_leave))
        .route("/api/v1/cluster/force-leave", post(cluster_force_leave))
        .layer(middleware::from_fn_with_state(state.clone(), guard_request))
        .with_state(state)
}

fn refusal_response(refusal: Refusal) -> Response {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        axum::Json(serde_json::json!({ "error": refusal.message() })),
    )
        .into_response();
    let headers = response.headers_mut();
    match refusal {
        Refusal::Token => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Refusal::SlowBody | Refusal::BadBody | Refusal::Timeout => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// Every request passes here: the caller check, then the body (bounded in size and time), then
/// the handler (bounded in time).
async fn guard_request(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    let refuse = |refusal: Refusal| {
        state.refusals.note(refusal, peer);
        refusal_response(refusal)
    };
    let must_be_json = match state
        .policy
        .check(request.method(), request.uri(), request.headers())
    {
        Ok(must_be_json) => must_be_json,
        Err(refusal) => return refuse(refusal),
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async move {
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY as u64) {
            return Err(Refusal::BadBody);
        }
        let bytes =
            match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
                Err(_) => return Err(Refusal::SlowBody),
                Ok(Err(_)) => return Err(Refusal::BadBody),
                Ok(Ok(bytes)) => bytes,
            };
        if must_be_json && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            return Err(Refusal::BadJson);
        }
        Ok(next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await)
    })
    .await;
    match answer {
        Ok(Ok(response)) => response,
        Ok(Err(refusal)) => refuse(refusal),
        Err(_) => refuse(Refusal::Timeout),
    }
}

fn node_error(e: NodeError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
}

async fn prometheus(State(state): State<AdminState>) -> Response {
    match state.handle.metrics().await {
        Ok(m) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render_prometheus(&m),
        )
            .into_response(),
        Err(e) => node_error(e),
    }
}

async fn metrics_json(State(state): State<AdminState>) -> Response {
    match state.handle.metrics().await {
        Ok(m) => axum::Json(m).into_response(),
        Err(e) => node_error(e),
    }
}

async fn clients_json(State(state): State<AdminState>) -> Response {
    match state.handle.clients().await {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => node_error(e),
    }
}

async fn cluster_status(State(state): State<AdminState>) -> Response {
    match state.handle.cluster_status().await {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => node_error(e),
    }
}

async fn routes_json(State(state): State<AdminState>) -> Response {
    match state.handle.routes().await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => node_error(e),
    }
}

fn command_result(result: Result<(), CommandError>) -> Response {
    match result {
        Ok(()) => axum::Json(serde_json::json!({"ok": true})).into_response(),
        Err(CommandError::Node(e)) => node_error(e),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

async fn cluster_join(
    State(state): State<AdminState>,
    axum::Json(req): axum::Json<NodeRequest>,
) -> Response {
    match req.node.parse::<SeedNode>() {
        Ok(seed) => command_result(state.handle.cluster_join(seed).await),
        Err(e) => bad_request(format!("bad node name: {e}")),
    }
}

async fn cluster_leave(State(state): State<AdminState>) -> Response {
    command_result(state.handle.cluster_leave().await)
}

async fn cluster_force_leave(
    State(state): State<AdminState>,
    axum::Json(req): axum::Json<NodeRequest>,
) -> Response {
    match req.node.parse::<NodeName>() {
        Ok(node) => command_result(state.handle.cluster_force_leave(node).await),
        Err(e) => bad_request(format!("bad node name '{}': {e}", req.node)),
    }
}

/// Binds the admin endpoint on `addr` and serves it beside the node of `attachment` until that
/// node stops; returns the address really bound.
pub async fn start<N: Net>(
    net: N,
    addr: SocketAddr,
    token: Option<String>,
    attachment: Attachment,
) -> Result<SocketAddr, NodeError> {
    let listener = net
        .bind(addr)
        .await
        .map_err(|source| NodeError::BindAdmin { addr, source })?;
    let local = net
        .local_addr(&listener)
        .map_err(|source| NodeError::BindAdmin { addr, source })?;
    let Attachment {
        handle,
        stop,
        alive,
        span,
    } = attachment;
    tokio::spawn(serve(net, listener, handle, token, stop, alive).instrument(span));
    Ok(local)
}

/// Serves the admin routes on `listener` until `stop` turns true (or its sender is dropped).
/// Holds `_alive`, and so does every connection task, so the node's shutdown waits for them.
async fn serve<N: Net>(
    net: N,
    listener: N::TcpListener,
    handle: NodeHandle,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let local = match net.local_addr(&listener) {
        Ok(local) => local,
        Err(e) => {
            tracing::warn!(error = %e, "admin endpoint has no local address");
            return;
        }
    };
    let started = net.now();
    let clock_net = net.clone();
    let refusals = Refusals {
        log: Arc::new(Mutex::new(LogLimiter::new(REFUSAL_LOG_EVERY))),
        clock: Arc::new(move || clock_net.now().saturating_duration_since(started)),
    };
    let app = router(AdminState {
        handle,
        policy: Arc::new(Policy::new(token, local)),
        refusals: refusals.clone(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = net.accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refusals.note(Refusal::TooManyConnections, Some(peer));
            drop(stream);
            continue;
        };
        let connection = serve_connection(stream, peer, app.clone(), stop.clone(), alive.clone());
        tokio::spawn(
            async move {
                connection.await;
                drop(slot);
            }
            .instrument(tracing::Span::current()),
        );
    }
}

/// One HTTP/1.1 connection: hyper with a header-read timeout on tokio's timer; on stop, the
/// request in progress is answered and the connection closed.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        tower_service::Service::call(&mut app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let finished = tokio::select! {
        biased;
        () = stopped => None,
        result = connection.as_mut() => Some(result),
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "admin connection ended");
    }
}
