//! What the in-process tests share.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::routes;
use serde_json::Value;
use tower::{Layer, ServiceExt};

/// Serves `req` as the running gateway does (trailing-slash normalisation, then the router);
/// the status and the body as JSON (`Null` when it is not JSON).
pub async fn respond(app: &Arc<App>, req: Request<Body>) -> (StatusCode, Value) {
    let svc =
        tower::util::MapRequestLayer::new(routes::normalize).layer(routes::router(app.clone()));
    let resp = svc.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
