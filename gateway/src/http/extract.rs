//! Extractors whose rejections are problem+json (axum's own answer in plain text). The
//! caller's identity is in `auth::extract`.

use axum::extract::{FromRequest, FromRequestParts};

use crate::http::error::ApiError;

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
