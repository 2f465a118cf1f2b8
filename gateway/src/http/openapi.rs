//! The API's description: `gateway/api/openapi.json` (OpenAPI 3.1), served at
//! `{prefix}/openapi.json` with its paths moved to the configured prefix, and a page that
//! lists it at `{prefix}/docs`. A test checks that every operation it describes is routed.

use axum::response::{Html, IntoResponse, Response};
use axum::Json;

const DOCUMENT: &str = include_str!("../../api/openapi.json");
const PAGE: &str = include_str!("../../api/docs.html");
/// The prefix the document is written with.
const WRITTEN_PREFIX: &str = "/api/v1";

/// The document, with `/api/v1` paths moved under `prefix`.
pub fn document(prefix: &str) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let moved = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| match path.strip_prefix(WRITTEN_PREFIX) {
                Some(rest) => (format!("{prefix}{rest}"), item),
                None => (path, item),
            })
            .collect();
        *paths = moved;
    }
    doc
}

pub async fn serve(doc: std::sync::Arc<serde_json::Value>) -> Response {
    Json(doc.as_ref().clone()).into_response()
}

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_parses_and_moves_with_the_prefix() {
        let doc = super::document("/eriop/v1");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/eriop/v1/auth/login"].is_object());
        assert!(doc["paths"]["/health/ready"].is_object());
    }
}
