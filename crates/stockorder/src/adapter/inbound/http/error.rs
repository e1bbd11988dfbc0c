//! One error type for the REST API: each cause picks its status code and a message a client can
//! act on, and every error body is `{"error": "…"}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::ValidationError;
use crate::port::OrderError;

/// Seconds a client is told to wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// An error answer of the REST API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// Every error answer: `{"error": "what went wrong, naming the field"}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// An error with an explicit status, for causes outside the order domain (unknown route…).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: &self.message })).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let status = match &e {
            OrderError::NotFound(_) => StatusCode::NOT_FOUND,
            OrderError::NotCancellable { .. } | OrderError::ClientOrderIdReused(_) => StatusCode::CONFLICT,
            OrderError::EventsPruned { .. } => StatusCode::GONE,
            // Storage faults are logged once per change of state (`service::StorageHealth`),
            // not once per request: a full disk would otherwise write a line per refusal.
            OrderError::Unavailable | OrderError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OrderError::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
            OrderError::Internal(source) => {
                tracing::error!(error = %source, "order operation failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // axum answers 422 for well-formed JSON of the wrong shape; to a client it is as
            // much a bad request as a syntax error, and its message names the field.
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                match snake_case_hint(&text) {
                    Some(hint) => Self::new(StatusCode::BAD_REQUEST, format!("{text}; {hint}")),
                    None => Self::new(StatusCode::BAD_REQUEST, text),
                }
            }
            JsonRejection::JsonSyntaxError(e) => Self::new(StatusCode::BAD_REQUEST, e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request body must be JSON, sent with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes",
                    super::MAX_BODY_BYTES
                ),
            ),
            other => Self::new(other.status(), other.body_text()),
        }
    }
}

/// For serde's "unknown field `clientOrderId`, expected one of `symbol`, …, `client_order_id`":
/// "did you mean `client_order_id`?" when the unknown field is the camelCase (or any other
/// casing) of one that is expected.
fn snake_case_hint(message: &str) -> Option<String> {
    let unknown = message.split("unknown field `").nth(1)?.split('`').next()?;
    let expected = message.split("expected one of ").nth(1)?;
    let mut snake = String::with_capacity(unknown.len() + 4);
    for (i, c) in unknown.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    let snake = snake.replace('-', "_");
    (snake != unknown && expected.contains(&format!("`{snake}`")))
        .then(|| format!("did you mean `{snake}`? field names are snake_case"))
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case_hint;

    #[test]
    fn a_camel_case_field_is_named_in_snake_case() {
        let serde = "Failed to deserialize the JSON body into the target type: unknown field `clientOrderId`, expected one of `symbol`, `order_type`, `order_side`, `quantity`, `price`, `client_order_id` at line 1 column 17";
        assert_eq!(
            snake_case_hint(serde).as_deref(),
            Some("did you mean `client_order_id`? field names are snake_case")
        );
        assert_eq!(snake_case_hint(&serde.replace("clientOrderId", "foo")), None);
        assert_eq!(
            snake_case_hint(&serde.replace("clientOrderId", "OrderType")).as_deref(),
            Some("did you mean `order_type`? field names are snake_case")
        );
        assert_eq!(snake_case_hint("missing field `symbol`"), None);
    }
}
