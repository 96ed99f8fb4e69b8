use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Error, ErrorCode};
use serde_json::json;

/// `domain::Error` as an HTTP response: the status from the code, the body
/// `{"error":{"code","message"}}`. Internal details never reach the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if code == ErrorCode::Internal { "internal error".to_string() } else { self.0.message };
        (status, Json(json!({ "error": { "code": code.as_str(), "message": message } }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub async fn not_found(request: Request) -> Response {
    match request.extensions().get::<crate::context::Ctx>() {
        Some(ctx) if !request.uri().path().starts_with("/api/") => crate::pages::not_found_page(ctx),
        _ => ApiError(Error::not_found()).into_response(),
    }
}

pub async fn method_not_allowed() -> ApiError {
    ApiError(Error::new(ErrorCode::MethodNotAllowed, "method not allowed"))
}
