//! The HTTP admin endpoint (production operations): Prometheus metrics, the JSON the `ctl`
//! commands read, and the `ctl` client itself.
//!
//! It only reads through a `NodeHandle`; it never touches broker or cluster state directly and
//! makes no protocol decisions. With `admin.token` set every request needs
//! `Authorization: Bearer TOKEN`.

pub mod ctl;
mod metrics;

pub use metrics::render_prometheus;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, watch};

use crate::config::{NodeName, SeedNode};
use crate::net::Net;
use crate::node::{CommandError, NodeError, NodeHandle};

/// Pause after a failed accept so a full fd table does not make us spin.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone)]
struct AdminState {
    handle: NodeHandle,
    token: Option<Arc<str>>,
}

/// Body of `POST /api/v1/cluster/join` and `/force-leave`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeRequest {
    /// `name@host` (join also takes `name@host:port`).
    pub node: String,
}

/// The admin routes: `GET /metrics`, `GET /api/v1/metrics`, `GET /api/v1/clients`,
/// `GET /api/v1/cluster/status`, `GET /api/v1/routes`, `POST /api/v1/cluster/join`,
/// `POST /api/v1/cluster/leave`, `POST /api/v1/cluster/force-leave`. A refused cluster command
/// answers 400 with the reason as plain text.
pub fn router(handle: NodeHandle, token: Option<String>) -> Router {
    let state = AdminState {
        handle,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/api/v1/metrics", get(metrics_json))
        .route("/api/v1/clients", get(clients_json))
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/routes", get(routes_json))
        .route("/api/v1/cluster/join", post(cluster_join))
        .route("/api/v1/cluster/leave", post(cluster_leave))
        .route("/api/v1/cluster/force-leave", post(cluster_force_leave))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if authorized(state.token.as_deref(), request.headers()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response()
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

/// Lets axum serve on any `Net` listener (so the endpoint also exists on simulated hosts).
struct NetListener<N: Net> {
    net: N,
    listener: N::TcpListener,
}

impl<N: Net> axum::serve::Listener for NetListener<N> {
    type Io = N::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (N::TcpStream, SocketAddr) {
        loop {
            match self.net.accept(&self.listener).await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.net.local_addr(&self.listener)
    }
}

/// Serves the admin routes on `listener` until `stop` turns true (or its sender is dropped).
/// Holds `_alive` so the node's shutdown waits for it.
pub(crate) async fn serve<N: Net>(
    net: N,
    listener: N::TcpListener,
    handle: NodeHandle,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let app = router(handle, token);
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(NetListener { net, listener }, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "admin endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn no_token_configured_allows_everything() {
        assert!(authorized(None, &HeaderMap::new()));
    }

    #[test]
    fn token_requires_matching_bearer_header() {
        assert!(authorized(Some("s3cret"), &headers("Bearer s3cret")));
        assert!(!authorized(Some("s3cret"), &headers("Bearer s3cre")));
        assert!(!authorized(Some("s3cret"), &headers("Basic s3cret")));
        assert!(!authorized(Some("s3cret"), &HeaderMap::new()));
    }
}
