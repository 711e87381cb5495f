//! What the handlers' OpenAPI operations share: the answers every endpoint can give, and the
//! paging parameters of lists.

/// Answers of an API endpoint.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only the derive reads it
pub enum Answers {
    /// The data.
    #[response(status = 200, description = "conda-store's envelope with the data")]
    Ok,
    /// Bad input.
    #[response(status = 400, description = "bad input")]
    BadRequest,
    /// No credentials.
    #[response(status = 401, description = "credentials needed")]
    Unauthorized,
    /// Not allowed.
    #[response(status = 403, description = "not allowed")]
    Forbidden,
    /// Not found.
    #[response(status = 404, description = "not found")]
    NotFound,
}

/// Answers of an artifact download.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ArtifactAnswers {
    /// The artifact.
    #[response(status = 200, description = "the artifact")]
    Ok,
    /// Where it is.
    #[response(status = 307, description = "a presigned URL of the artifact")]
    Redirect,
    /// Bad input.
    #[response(status = 400, description = "bad input")]
    BadRequest,
    /// No credentials.
    #[response(status = 401, description = "credentials needed")]
    Unauthorized,
    /// Not allowed.
    #[response(status = 403, description = "not allowed")]
    Forbidden,
    /// Not found.
    #[response(status = 404, description = "not found")]
    NotFound,
}

/// Paging of a list.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// 1-based page.
    page: Option<i64>,
    /// Items per page (at most 100).
    size: Option<i64>,
    /// Fields to sort by.
    sort_by: Option<Vec<String>>,
    /// asc or desc.
    order: Option<String>,
}
