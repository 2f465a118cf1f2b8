//! One error type for every handler, answered as RFC 9457 `application/problem+json`.
//! Internal causes are logged with the request's id and never sent to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem type URI for each kind of error a client can act on (RFC 9457 section 3.1.1).
const TYPE_BASE: &str = "https://eriop.dev/problems/";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_seconds: u64,
    },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged whole, answered as a bare 500.
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Validation {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError {
                field: field.to_owned(),
                message,
            }],
        }
    }

    /// The HTTP status this error answers.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "The request is not valid",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            Self::Internal(cause) => {
                // The request id is on the enclosing span (see edge.rs).
                tracing::error!(error = %cause, "internal error");
                "an unexpected error occurred; quote the x-request-id header when reporting it"
                    .to_owned()
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                "a dependency of the service is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match &self {
            Self::Validation { errors, .. } => Some(errors.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::TooManyRequests {
            retry_after_seconds,
            ..
        } = &self
        {
            if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // serde says which field and why ("unknown field `x`", "invalid type: ...").
            JsonRejection::JsonDataError(e) => Self::Validation {
                detail: e.body_text(),
                errors: Vec::new(),
            },
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// Whether a database error means "the database cannot be reached" (answer 503, the
/// client may retry) rather than a fault of ours.
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
    )
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if database_unreachable(&e) {
            Self::Unavailable(format!("database: {e}"))
        } else if refused_text(&e) {
            // A NUL in text the client sent (PostgreSQL stores none): the client's mistake,
            // wherever it slipped past the parsers (found by schemathesis on a query string).
            Self::Validation {
                detail: "text must not contain NUL characters".into(),
                errors: Vec::new(),
            }
        } else {
            Self::internal(e)
        }
    }
}

impl From<eriop_nats::db::pipelined::ReadError> for ApiError {
    fn from(e: eriop_nats::db::pipelined::ReadError) -> Self {
        use eriop_nats::db::pipelined::ReadError;
        match e {
            ReadError::Unreachable(_) => Self::Unavailable(e.to_string()),
            // As `refused_text` below.
            ReadError::Refused(_) if e.code() == Some("22021") => Self::Validation {
                detail: "text must not contain NUL characters".into(),
                errors: Vec::new(),
            },
            ReadError::Refused(cause) => Self::internal(cause),
        }
    }
}

/// PostgreSQL's refusal of a NUL byte in text (SQLSTATE 22021, character not in repertoire).
fn refused_text(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "22021")
}

impl From<crate::services::auth::passwords::Busy> for ApiError {
    fn from(busy: crate::services::auth::passwords::Busy) -> Self {
        Self::TooManyRequests {
            detail: busy.to_string(),
            retry_after_seconds: 1,
        }
    }
}
