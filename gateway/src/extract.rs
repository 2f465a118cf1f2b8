//! Extractors whose rejections are problem+json (axum's own answer in plain text), and the
//! caller's identity.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// `Json<T>` whose errors are problem+json.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Path<T>` whose errors are problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query<T>` whose errors are problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Holding one proves the request carried `Authorization: Bearer $ERIOP_BOOTSTRAP_TOKEN`.
/// A stop-gap until user authentication lands: without a configured token the routes that
/// need it are closed, never open.
pub struct BootstrapAdmin {
    _private: (),
}

impl BootstrapAdmin {
    /// The actor recorded in event metadata for commands of the bootstrap administrator.
    pub const ACTOR: &'static str = "bootstrap";
}

impl FromRequestParts<AppState> for BootstrapAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.bootstrap_token() else {
            return Err(ApiError::Unauthorized(
                "this route is closed until ERIOP_BOOTSTRAP_TOKEN is configured",
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "send `Authorization: Bearer <token>`",
            ))?;
        // Constant time: the comparison must not tell how many leading bytes were right.
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes()),
        ) {
            Ok(Self { _private: () })
        } else {
            Err(ApiError::Unauthorized("the bearer token is not valid"))
        }
    }
}
