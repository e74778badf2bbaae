//! How an API handler fails: a status and a message that says what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use spillway_api::ErrorBody;

use super::store::StoreError;

/// An API failure: a status and a message that says what to do.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub(super) fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}
