//! The routes of conda-store's REST API, and what every handler shares: the caller, query
//! parameters and bodies read with conda-store-style errors.

mod artifacts;
mod builds;
mod environments;
mod filters;
mod misc;
mod namespaces;
mod openapi;
mod registry;
mod settings;
pub mod solve;
mod sso;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Bytes per chunk when streaming an object from storage. Measured with a 1 GiB blob: 256 KiB
/// gave 1.3 GB/s, 1 MiB 1.9 GB/s, 2 MiB less again; memory stays flat (a few MiB).
pub const STREAM_CHUNK: usize = 1024 * 1024;

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
    // A body that trickles in holds its connection: bounded like the headers are.
    tokio::time::timeout(
        app.body_timeout,
        axum::body::to_bytes(body, app.max_body_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                app.body_timeout.as_secs()
            ),
        )
    })?
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
    let (api, doc) = api_routes().split_for_parts();
    let api = api
        .route("/login", post(misc::login).get(ui::login_page))
        .route("/logout", post(misc::logout).get(ui::logout_page))
        // Browser sign-in through an identity provider (routes/sso.rs).
        .route("/oauth_login/{provider}", get(sso::oauth_login))
        .route("/oauth_callback", get(sso::oauth_callback))
        // The web UI (routes/ui.rs): the page at ui/ and below, its bundle's files.
        .route("/", get(ui::root))
        .route("/ui", get(ui::ui_page))
        .route("/ui/{*path}", get(ui::ui_page))
        .route("/static/conda-store-ui/{file}", get(ui::asset))
        // conda-store serves these under its prefix too (monitoring scripts call them there).
        .route("/metrics", get(misc::metrics))
        .route("/celery", get(misc::celery))
        .route("/openapi.json", get(openapi))
        .layer(axum::Extension(Arc::new(document(doc, &app.prefix))));
    // The OCI registry (distribution spec, pull side) at the root, as clients expect it.
    let root = Router::new()
        .route("/v2", get(registry::base))
        .route("/v2/token", get(registry::token))
        .route("/v2/conda-store-dynamic/{*rest}", get(registry::dynamic))
        .route(
            "/v2/{namespace}/{environment}/tags/list",
            get(registry::tags),
        )
        .route(
            "/v2/{namespace}/{environment}/manifests/{reference}",
            get(registry::manifest),
        )
        .route(
            "/v2/{namespace}/{environment}/blobs/{digest}",
            get(registry::blob),
        )
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
        .fallback(|uri: Uri| async move {
            if uri.path().starts_with("/v2/") {
                registry::unknown().await.into_response()
            } else {
                ApiError::not_found("no such endpoint").into_response()
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(app)
}

/// The documented API: each handler's route and its OpenAPI operation come from its
/// `#[utoipa::path]`, so the document cannot drift from what is served.
fn api_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(misc::root))
        .routes(routes!(misc::permission))
        .routes(routes!(misc::token, misc::revoke_token))
        .routes(routes!(misc::usage))
        .routes(routes!(misc::channels))
        .routes(routes!(misc::packages))
        .routes(routes!(namespaces::list))
        .routes(routes!(
            namespaces::get_one,
            namespaces::create,
            namespaces::update,
            namespaces::delete
        ))
        .routes(routes!(namespaces::update_metadata))
        .routes(routes!(
            namespaces::get_role,
            namespaces::set_role,
            namespaces::delete_role
        ))
        .routes(routes!(namespaces::list_roles, namespaces::delete_roles))
        .routes(routes!(environments::list))
        .routes(routes!(environments::list_v2))
        .routes(routes!(
            environments::get_one,
            environments::update,
            environments::delete
        ))
        .routes(routes!(artifacts::env_lockfile))
        .routes(routes!(artifacts::env_explicit))
        .routes(routes!(artifacts::env_conda_lock_yml))
        .routes(routes!(artifacts::env_conda_lock_yaml))
        .routes(routes!(environments::post_specification, solve::solve))
        .routes(routes!(builds::list))
        .routes(routes!(builds::get_one, builds::rebuild, builds::delete))
        .routes(routes!(builds::cancel))
        .routes(routes!(builds::packages))
        .routes(routes!(artifacts::build_lockfile))
        .routes(routes!(artifacts::build_explicit))
        .routes(routes!(artifacts::build_conda_lock_yml))
        .routes(routes!(artifacts::build_conda_lock_yaml))
        .routes(routes!(artifacts::build_yaml))
        .routes(routes!(artifacts::build_logs))
        .routes(routes!(artifacts::build_archive))
        .routes(routes!(artifacts::build_docker))
        .routes(routes!(artifacts::build_installer))
        .routes(routes!(settings::get_global, settings::put_global))
        .routes(routes!(settings::get_namespace, settings::put_namespace))
        .routes(routes!(
            settings::get_environment,
            settings::put_environment
        ))
        // conda-store also accepts PUT to set a namespace role.
        .route(
            "/api/v1/namespace/{namespace}/role",
            put(namespaces::set_role),
        )
}

/// The served document: conda-store's paths (with their trailing `/`), under the prefix.
fn document(mut doc: utoipa::openapi::OpenApi, prefix: &str) -> String {
    doc.info.title = "conda-store for Kubernetes".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.contact = None;
    doc.info.license = Some(utoipa::openapi::License::new("BSD-3-Clause"));
    doc.info.description = Some(format!(
        "conda-store's REST API ({}), served from the conda.store resources",
        misc::CONDA_STORE_API_VERSION
    ));
    doc.servers = Some(vec![utoipa::openapi::Server::new(
        prefix.trim_end_matches('/'),
    )]);
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, item) in paths {
        // As conda-store names them: a trailing `/` except on files and a few sub-resources.
        let bare = [".yml", ".yaml", "/metadata", "/role", "/roles"];
        let served = if bare.iter().any(|b| path.ends_with(b)) {
            path
        } else {
            format!("{path}/")
        };
        doc.paths.paths.insert(served, item);
    }
    serde_json::to_string(&doc).expect("the document serialises")
}

async fn openapi(axum::Extension(doc): axum::Extension<Arc<String>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_string(),
    )
        .into_response()
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
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::{Layer, ServiceExt};
    let service = tower::util::MapRequestLayer::new(normalize).layer(router(app.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(app.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the limit: closed at once, so a flood of connections cannot exhaust memory.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let svc = service.clone();
        let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            svc.clone().oneshot(req.map(Body::new))
        });
        // The header timeout also bounds the wait for the next request on a kept-alive
        // connection: an idle client is closed as a slow one is.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(app.header_timeout)
            .serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    // Requests in flight finish (a bounded time); then the listener is gone.
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after the shutdown signal; closing them");
    }
    Ok(())
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
