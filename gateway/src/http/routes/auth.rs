//! `/api/v1/auth/*` and `/.well-known/jwks.json`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use secrecy::SecretString;
use serde::Deserialize;

use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::services::auth::Caller;
use crate::services::identity::{LoginOutcome, OAuthError};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    mfa_token: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    code: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    throttle_address(&state, peer, &headers, "login").await?;
    match state
        .identity()
        .login(&body.email, body.password, &request_id.0)
        .await?
    {
        LoginOutcome::Tokens(pair) => Ok(Json(pair).into_response()),
        LoginOutcome::MfaRequired { mfa_token } => Ok(Json(serde_json::json!({
            "mfa_required": true,
            "mfa_token": mfa_token,
        }))
        .into_response()),
    }
}

/// Per client address: one client cannot lock out many accounts, nor guess many passwords
/// or second factors (`login` and `mfa/verify` each have their own count). The address is a
/// key of the throttle only: it is never logged.
async fn throttle_address(
    state: &AppState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    what: &str,
) -> Result<(), ApiError> {
    let auth = state.auth();
    let client = crate::http::limits::client_address(state, Some(peer), headers);
    let attempts = auth
        .sessions
        .count_per_minute(&format!("{what}:{client}"))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if attempts > auth.login_attempts_per_ip_per_minute {
        state.metrics().refused(what);
        return Err(ApiError::TooManyRequests {
            detail: format!("too many {what} attempts from this address; wait a minute"),
            retry_after_seconds: 60,
        });
    }
    Ok(())
}

pub async fn mfa_verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<MfaVerifyRequest>,
) -> Result<Response, ApiError> {
    throttle_address(&state, peer, &headers, "mfa-verify").await?;
    let pair = state
        .identity()
        .verify_mfa(&body.mfa_token, &body.code, &request_id.0)
        .await?;
    Ok(Json(pair).into_response())
}

/// The OAuth 2.0 token endpoint (RFC 6749): form body, section 5 answers and errors.
/// `refresh_token` only for now; never the password grant (RFC 9700 section 2.4).
pub async fn token(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let oauth_error =
        |status: StatusCode, error: OAuthError| (status, no_store(), Json(error)).into_response();
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            OAuthError {
                error: "invalid_request",
                error_description: "send an application/x-www-form-urlencoded body",
            },
        );
    };
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some("client_credentials") => {
            let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    OAuthError {
                        error: "invalid_request",
                        error_description: "client_id and client_secret are required",
                    },
                );
            };
            let request_id = request_id.0;
            return match state.identity().client_credentials(id, SecretString::from(secret.clone()), &request_id).await {
                Ok((access_token, expires_in)) => (
                    StatusCode::OK,
                    no_store(),
                    Json(serde_json::json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in })),
                )
                    .into_response(),
                Err(e) if e.error == "invalid_client" => oauth_error(StatusCode::UNAUTHORIZED, e),
                Err(e) if e.error == "temporarily_unavailable" => {
                    let mut busy = oauth_error(StatusCode::TOO_MANY_REQUESTS, e);
                    busy.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                    busy
                }
                Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
        }
        Some("password") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                OAuthError {
                    error: "unsupported_grant_type",
                    error_description:
                        "the password grant is not offered (RFC 9700); use /api/v1/auth/login",
                },
            )
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                OAuthError {
                    error: "unsupported_grant_type",
                    error_description: "supported: refresh_token",
                },
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                OAuthError {
                    error: "invalid_request",
                    error_description: "grant_type is required",
                },
            )
        }
    }
    let Some(refresh_token) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            OAuthError {
                error: "invalid_request",
                error_description: "refresh_token is required",
            },
        );
    };
    match state.identity().refresh(refresh_token).await {
        Ok(pair) => (StatusCode::OK, no_store(), Json(pair)).into_response(),
        Err(e) if e.error == "temporarily_unavailable" => {
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Err(e) if e.error == "invalid_grant" => oauth_error(StatusCode::BAD_REQUEST, e),
        Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn no_store() -> [(axum::http::HeaderName, &'static str); 2] {
    [
        (axum::http::header::CACHE_CONTROL, "no-store"),
        (axum::http::header::PRAGMA, "no-cache"),
    ]
}

pub async fn logout(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    state.identity().logout(&caller, &request_id.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    Ok(Json(state.identity().me(&caller).await?).into_response())
}

pub async fn start_totp(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
) -> Result<Response, ApiError> {
    Ok(Json(state.identity().start_totp(&caller, &request_id.0).await?).into_response())
}

pub async fn confirm_totp(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    let codes = state
        .identity()
        .confirm_totp(&caller, &body.code, &request_id.0)
        .await?;
    Ok(Json(serde_json::json!({ "recovery_codes": codes })).into_response())
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    Json(state.auth().keys.jwks().clone()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: SecretString,
    new_password: SecretString,
}

/// Changes the caller's password; every other session ends, and this one gets new tokens.
pub async fn change_password(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let pair = state
        .identity()
        .change_password(
            &caller,
            body.current_password,
            body.new_password,
            &request_id.0,
        )
        .await?;
    Ok(Json(pair).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableMfa {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
}

pub async fn disable_totp(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
    ApiJson(body): ApiJson<DisableMfa>,
) -> Result<StatusCode, ApiError> {
    state
        .identity()
        .disable_own_mfa(&caller, body.code.as_deref(), body.password, &request_id.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The permission catalogue.
pub async fn permissions(_caller: Caller) -> Response {
    let items: Vec<serde_json::Value> = eriop_domain::Permission::ALL
        .iter()
        .map(|p| serde_json::json!({ "name": p.as_str(), "description": p.description() }))
        .collect();
    Json(serde_json::json!({ "items": items })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchAgency {
    agency_id: uuid::Uuid,
}

/// Tokens scoped to another agency the caller belongs to (recorded as AgencyEntered); 404
/// for any other agency.
pub async fn switch_agency(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Caller,
    ApiJson(body): ApiJson<SwitchAgency>,
) -> Result<Response, ApiError> {
    let agency = eriop_domain::AgencyId::from_uuid(body.agency_id);
    let tokens = state
        .identity()
        .switch_agency(&caller, agency, &request_id.0)
        .await?;
    Ok(Json(tokens).into_response())
}
