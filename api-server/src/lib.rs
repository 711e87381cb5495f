//! The gateway: conda-store's REST API (`/api/v1/...`) served from the conda.store resources.
//! This first slice serves the API root and the health endpoints; the resource-backed endpoints,
//! auth and the registry build on it.

use axum::Router;
use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

/// The conda-store API version this server is compatible with, as `GET /api/v1/` reports it.
pub const CONDA_STORE_API_VERSION: &str = "2025.2.2";

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path prefix of the conda-store API, with leading and trailing `/` (conda-store's default
    /// is `/conda-store/`).
    pub url_prefix: String,
}

impl Config {
    /// Normalises `prefix` to `/segment/.../` form (`""` and `/` both mean the root).
    pub fn with_prefix(prefix: &str) -> Config {
        let trimmed = prefix.trim_matches('/');
        let url_prefix = if trimmed.is_empty() {
            "/".to_string()
        } else {
            format!("/{trimmed}/")
        };
        Config { url_prefix }
    }
}

/// conda-store's response envelope.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// `ok` or `error`.
    pub status: &'static str,
    /// The payload.
    pub data: Option<T>,
    /// A message for people, on errors.
    pub message: Option<String>,
}

/// An error answered as conda-store does: a status code and `{status: "error", message}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the person.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope::<()> {
            status: "error",
            data: None,
            message: Some(self.message),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The application's routes.
pub fn router(config: &Config) -> Router {
    let api = Router::new().route("/api/v1/", get(api_root));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let app = if config.url_prefix == "/" {
        app.merge(api)
    } else {
        app.nest(config.url_prefix.trim_end_matches('/'), api)
    };
    app.fallback(|| async {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: "not found".into(),
        }
    })
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

async fn api_root() -> Json<Envelope<Version>> {
    Json(Envelope {
        status: "ok",
        data: Some(Version {
            version: CONDA_STORE_API_VERSION,
        }),
        message: None,
    })
}
