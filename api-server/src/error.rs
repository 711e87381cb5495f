//! Errors answered as conda-store does (`{"status": "error", "message": ...}` with a 4xx or
//! 5xx code), and the success envelope.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// An error for the caller: status code and a message saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the person.
    pub message: String,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// 401: credentials are needed (or the given ones are not valid).
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    /// 503: a backend (Kubernetes, storage, database) cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "data": null, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> ApiError {
        match &e {
            kube::Error::Api(s) if s.code == 404 => ApiError::not_found(s.message.clone()),
            kube::Error::Api(s) if s.code == 409 => ApiError::conflict(s.message.clone()),
            // The API server refused the object: the request carried something invalid.
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
                ApiError::bad_request(s.message.clone())
            }
            _ => {
                tracing::warn!(error = %e, "Kubernetes API");
                ApiError::unavailable(format!("the Kubernetes API did not answer: {e}"))
            }
        }
    }
}

impl From<conda_store_storage::StorageError> for ApiError {
    fn from(e: conda_store_storage::StorageError) -> ApiError {
        use conda_store_storage::StorageError as S;
        match e {
            S::NotFound(key) => ApiError::not_found(format!("artifact {key} is not in storage")),
            other => {
                tracing::warn!(error = %other, "artifact storage");
                ApiError::unavailable(format!("artifact storage: {other}"))
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        tracing::warn!(error = %e, "SQL index");
        ApiError::unavailable(format!("the index database: {e}"))
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `{"status": "ok", "data": data, "message": null}`.
pub fn ok(data: impl Serialize) -> Response {
    Json(json!({"status": "ok", "data": data, "message": null})).into_response()
}

/// `{"status": "ok", "message": message}` for writes that return nothing.
pub fn ack(message: impl Into<String>) -> Response {
    Json(json!({"status": "ok", "data": null, "message": message.into()})).into_response()
}

/// A page of a list: the envelope plus `page`, `size` and `count` (items over all pages).
pub fn page<T: Serialize>(data: Vec<T>, page: usize, size: usize, count: usize) -> Response {
    #[derive(Serialize)]
    struct Page<T> {
        status: &'static str,
        data: Vec<T>,
        message: Option<String>,
        page: usize,
        size: usize,
        count: usize,
    }
    Json(Page {
        status: "ok",
        data,
        message: None,
        page,
        size,
        count,
    })
    .into_response()
}
