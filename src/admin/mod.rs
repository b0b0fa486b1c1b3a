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
use axum::routing::get;
use tokio::sync::{mpsc, watch};

use crate::net::Net;
use crate::node::{NodeError, NodeHandle};

/// Pause after a failed accept so a full fd table does not make us spin.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone)]
struct AdminState {
    handle: NodeHandle,
    token: Option<Arc<str>>,
}

/// The admin routes: `GET /metrics`, `GET /api/v1/metrics`, `GET /api/v1/clients`.
pub fn router(handle: NodeHandle, token: Option<String>) -> Router {
    let state = AdminState {
        handle,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/api/v1/metrics", get(metrics_json))
        .route("/api/v1/clients", get(clients_json))
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
