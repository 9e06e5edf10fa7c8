//! `--listen ADDR`: `/metrics` (Prometheus text format), `/healthz` and `/status`,
//! served by axum.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Monitor;

/// Binds `addr` and serves the monitor's endpoints until `stop` is cancelled. Returns
/// the bound address (port 0 picks a free one) once listening.
pub async fn serve(
    addr: SocketAddr,
    monitor: Arc<Monitor>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(monitor);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("the HTTP listener failed: {e}");
        }
    });
    Ok((bound, task))
}

async fn metrics(State(m): State<Arc<Monitor>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.metrics_text().await,
    )
}

/// 200 while no followed pipeline is failing, else 503; the body says which. A
/// pipeline whose new plugin file was rejected (its running plugin goes on) makes it
/// `degraded`, still 200, with the reason.
async fn healthz(State(m): State<Arc<Monitor>>) -> impl IntoResponse {
    let health = m.health();
    let degraded: serde_json::Map<String, serde_json::Value> = health
        .iter()
        .filter_map(|(p, h)| {
            h.rejected
                .as_ref()
                .map(|e| (p.clone(), serde_json::json!({"rejected_plugin_file": e})))
        })
        .collect();
    let failing: serde_json::Map<String, serde_json::Value> = health
        .iter()
        .filter_map(|(p, h)| {
            h.failing.as_ref().map(|e| {
                (
                    p.clone(),
                    serde_json::json!({"error": e, "failures_in_a_row": h.failures}),
                )
            })
        })
        .collect();
    let code = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = match (failing.is_empty(), degraded.is_empty()) {
        (false, _) => "failing",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let body = serde_json::json!({
        "status": status,
        "pipelines": health.len(),
        "failing": failing,
        "degraded": degraded,
    });
    (code, axum::Json(body))
}

/// What `dlink-rt status --json` prints, for the pipelines the service knows.
async fn status(State(m): State<Arc<Monitor>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "pipelines": m.status().await }))
}
