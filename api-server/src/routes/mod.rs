//! The routes of conda-store's REST API, and what every handler shares: the caller, query
//! parameters and bodies read with conda-store-style errors.

mod artifacts;
mod builds;
mod environments;
mod misc;
mod namespaces;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::query::Params;

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, ApiError> {
        app.auth.caller(&parts.headers).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ApiError> {
        Ok(Params::parse(parts.uri.query()))
    }
}

/// Reads a JSON body, refusing one larger than the limit or not the expected shape. An empty
/// body reads as `{}`.
pub async fn json_body<T: DeserializeOwned>(app: &App, body: Body) -> ApiResult<T> {
    let bytes = read_body(app, body).await?;
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// Reads a body up to the configured limit.
pub async fn read_body(app: &App, body: Body) -> ApiResult<bytes::Bytes> {
    axum::body::to_bytes(body, app.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    app.max_body_bytes
                ),
            )
        })
}

/// The whole application: the API under its prefix, health and metrics at the root. Paths are
/// matched with or without a trailing `/`, and a `/` after the query (as the `conda-store` CLI
/// sends it) is dropped.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/v1", get(misc::root))
        .route("/api/v1/permission", get(misc::permission))
        .route("/api/v1/token", post(misc::token))
        .route("/api/v1/usage", get(misc::usage))
        .route("/api/v1/channel", get(misc::channels))
        .route("/api/v1/package", get(misc::packages))
        .route("/api/v1/namespace", get(namespaces::list))
        .route(
            "/api/v1/namespace/{namespace}",
            get(namespaces::get_one)
                .post(namespaces::create)
                .put(namespaces::update)
                .delete(namespaces::delete),
        )
        .route(
            "/api/v1/namespace/{namespace}/metadata",
            put(namespaces::update_metadata),
        )
        .route(
            "/api/v1/namespace/{namespace}/role",
            get(namespaces::get_role)
                .post(namespaces::set_role)
                .put(namespaces::set_role)
                .delete(namespaces::delete_role),
        )
        .route(
            "/api/v1/namespace/{namespace}/roles",
            get(namespaces::list_roles).delete(namespaces::delete_roles),
        )
        .route("/api/v1/environment", get(environments::list))
        .route("/api/v2/environment", get(environments::list_v2))
        .route(
            "/api/v1/environment/{namespace}/{name}",
            get(environments::get_one)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route(
            "/api/v1/environment/{namespace}/{name}/lockfile",
            get(artifacts::env_lockfile),
        )
        .route(
            "/api/v1/environment/{namespace}/{name}/{file}",
            get(artifacts::env_conda_lock),
        )
        .route(
            "/api/v1/specification",
            post(environments::post_specification).get(misc::solve),
        )
        .route("/api/v1/build", get(builds::list))
        .route(
            "/api/v1/build/{id}",
            get(builds::get_one)
                .put(builds::rebuild)
                .delete(builds::delete),
        )
        .route("/api/v1/build/{id}/cancel", put(builds::cancel))
        .route("/api/v1/build/{id}/packages", get(builds::packages))
        .route(
            "/api/v1/build/{id}/{artifact}",
            get(artifacts::build_artifact),
        )
        .route("/login", post(misc::login).get(misc::login_form))
        .route("/logout", post(misc::logout));
    let root = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(misc::readyz))
        .route("/metrics", get(misc::metrics));
    let prefix = app.prefix.trim_end_matches('/').to_string();
    let app_router = if prefix.is_empty() {
        root.merge(api)
    } else {
        root.nest(&prefix, api)
    };
    app_router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::metrics::track,
        ))
        .with_state(app)
}

/// Rewrites a request's URI before routing: no trailing `/` on the path (but `/`), none at the
/// end of the query.
pub fn normalize(mut req: Request) -> Request {
    let uri = req.uri();
    let path = uri.path();
    let query = uri.query();
    let new_path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let new_path = if new_path.is_empty() { "/" } else { new_path };
    let new_query = query.map(|q| q.trim_end_matches('/'));
    if new_path != path || new_query != query {
        let pq = match new_query {
            Some(q) if !q.is_empty() => format!("{new_path}?{q}"),
            _ => new_path.to_string(),
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::Layer;
    let service = tower::util::MapRequestLayer::new(normalize).layer(router(app));
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(service),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A response with a status and a conda-store envelope around `data`.
pub fn created(data: serde_json::Value) -> Response {
    (StatusCode::OK, crate::error::ok(data)).into_response()
}

/// The state extractor every handler uses.
pub type AppState = State<Arc<App>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let req = Request::builder().uri(s).body(Body::empty()).unwrap();
        normalize(req).uri().to_string()
    }

    #[test]
    fn trailing_slashes_are_dropped() {
        assert_eq!(
            norm("/conda-store/api/v1/build/"),
            "/conda-store/api/v1/build"
        );
        assert_eq!(
            norm("/conda-store/api/v1/build?status=COMPLETED/"),
            "/conda-store/api/v1/build?status=COMPLETED"
        );
        assert_eq!(norm("/"), "/");
        assert_eq!(
            norm("/api/v1/namespace/?page=2/"),
            "/api/v1/namespace?page=2"
        );
    }
}
