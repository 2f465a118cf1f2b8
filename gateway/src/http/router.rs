//! Every route of the gateway, with its layers (edge, CORS, body limits).

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::{get, post, put};
use axum::{middleware, Router};
use eriop_nats::Settings;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::routes::{agencies, audit, auth, devices, roles, telemetry, users};
use super::{edge, health, openapi};
use crate::app::StartupError;
use crate::state::AppState;

/// A bulk registration of thousands of devices is larger than an ordinary request.
const BULK_BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(settings: &Settings, state: AppState) -> Result<Router, StartupError> {
    let api = &settings.api_v1_prefix;
    let router = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(super::metrics::serve))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route(&format!("{api}/openapi.json"), {
            let doc = std::sync::Arc::new(openapi::document(api));
            get(move || openapi::serve(doc.clone()))
        })
        .route(&format!("{api}/docs"), get(openapi::page))
        .route(&format!("{api}/auth/login"), post(auth::login))
        .route(&format!("{api}/auth/mfa/verify"), post(auth::mfa_verify))
        .route(&format!("{api}/auth/token"), post(auth::token))
        .route(&format!("{api}/auth/logout"), post(auth::logout))
        .route(&format!("{api}/auth/me"), get(auth::me))
        .route(&format!("{api}/permissions"), get(auth::permissions))
        .route(&format!("{api}/audit/events"), get(audit::events))
        .route(&format!("{api}/audit/verify"), get(audit::verify))
        .route(&format!("{api}/audit/export"), get(audit::export))
        .route(
            &format!("{api}/audit/streams/{{aggregate_type}}/{{id}}"),
            get(audit::stream),
        )
        .route(
            &format!("{api}/auth/mfa/totp"),
            post(auth::start_totp).delete(auth::disable_totp),
        )
        .route(
            &format!("{api}/auth/mfa/totp/confirm"),
            post(auth::confirm_totp),
        )
        .route(
            &format!("{api}/users"),
            post(users::create).get(users::list),
        )
        .route(
            &format!("{api}/users/{{id}}"),
            get(users::get)
                .patch(users::update)
                .delete(users::deactivate),
        )
        .route(&format!("{api}/users/{{id}}/erase"), post(users::erase))
        .route(&format!("{api}/users/{{id}}/unlock"), post(users::unlock))
        .route(
            &format!("{api}/users/{{id}}/memberships/{{agency_id}}"),
            put(users::grant_membership).delete(users::revoke_membership),
        )
        .route(
            &format!("{api}/auth/switch-agency"),
            post(auth::switch_agency),
        )
        .route(
            &format!("{api}/roles"),
            post(roles::create).get(roles::list),
        )
        .route(
            &format!("{api}/roles/{{id}}"),
            get(roles::get).patch(roles::rename).delete(roles::delete),
        )
        .route(
            &format!("{api}/roles/{{id}}/permissions/{{permission}}"),
            put(roles::grant).delete(roles::revoke),
        )
        .route(
            &format!("{api}/users/{{id}}/roles/{{role}}"),
            put(users::assign_role).delete(users::unassign_role),
        )
        .route(
            &format!("{api}/users/{{id}}/reactivate"),
            post(users::reactivate),
        )
        .route(
            &format!("{api}/users/{{id}}/mfa/reset"),
            post(users::reset_mfa),
        )
        .route(&format!("{api}/auth/password"), post(auth::change_password))
        .route(
            &format!("{api}/service-accounts"),
            post(users::create_service_account),
        )
        .route(
            &format!("{api}/agencies"),
            get(agencies::list).post(agencies::create),
        )
        .route(
            &format!("{api}/agencies/{{id}}"),
            get(agencies::get).patch(agencies::patch),
        )
        .route(
            &format!("{api}/registries"),
            post(devices::registries::assign).get(devices::registries::list),
        )
        .route(
            &format!("{api}/registries/{{registry}}"),
            get(devices::registries::get).delete(devices::registries::remove),
        )
        .route(
            &format!("{api}/device-classes"),
            post(devices::classes::create).get(devices::classes::list),
        )
        .route(
            &format!("{api}/device-classes/{{id}}"),
            get(devices::classes::get),
        )
        .route(
            &format!("{api}/devices"),
            post(devices::registry::create).get(devices::registry::list),
        )
        .route(
            &format!("{api}/devices/bulk"),
            post(devices::bulk::register).layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)),
        )
        .route(
            &format!("{api}/devices/{{id}}"),
            get(devices::registry::get)
                .patch(devices::registry::patch)
                .delete(devices::registry::decommission),
        )
        .route(
            &format!("{api}/devices/{{id}}/commands"),
            post(devices::commands::issue).get(devices::commands::list),
        )
        .route(
            &format!("{api}/devices/{{id}}/commands/{{command_id}}"),
            get(devices::commands::get),
        )
        .route(
            &format!("{api}/devices/{{id}}/telemetry"),
            get(telemetry::series),
        )
        .route(
            &format!("{api}/devices/{{id}}/telemetry/export"),
            get(telemetry::export),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not accept that method".into())
        })
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes));
    let router = match cors(&settings.cors_allowed_origins)? {
        Some(cors) => router.layer(cors),
        None => router,
    };
    Ok(router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::limits::enforce,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            edge::request_context,
        ))
        .with_state(state))
}

/// CORS for the configured origins only; none configured: no CORS headers (same origin).
fn cors(origins: &str) -> Result<Option<CorsLayer>, StartupError> {
    let origins = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).map_err(|_| StartupError::CorsOrigin(o.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(edge::REQUEST_ID_HEADER),
            ])
            .expose_headers([HeaderName::from_static(edge::REQUEST_ID_HEADER)])
            .max_age(Duration::from_secs(600)),
    ))
}
