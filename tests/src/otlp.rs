//! A local OTLP/HTTP receiver: what an OpenTelemetry collector is to the services. It
//! decodes every export (protobuf, as the services send it) and keeps the spans, so a test
//! can follow one trace across the hops.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

/// One span as the collector received it (ids in lower-case hex).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

pub struct Receiver {
    /// The full URL to export spans to (`…/v1/traces`).
    pub traces_endpoint: String,
    spans: Spans,
    /// Bodies that were not an OTLP export.
    pub rejected: Arc<Mutex<u32>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let spans = Spans::default();
        let rejected = Arc::new(Mutex::new(0));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state((spans.clone(), rejected.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            traces_endpoint: format!("http://{addr}/v1/traces"),
            spans,
            rejected,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

async fn export(
    State((spans, rejected)): State<(Spans, Arc<Mutex<u32>>)>,
    body: Bytes,
) -> axum::response::Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        *rejected.lock().unwrap() += 1;
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let attributes = |list: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            list.iter()
                .map(|kv| {
                    let value = kv
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(|v| {
                            use opentelemetry_proto::tonic::common::v1::any_value::Value;
                            match v {
                                Value::StringValue(s) => s.clone(),
                                Value::IntValue(i) => i.to_string(),
                                Value::BoolValue(b) => b.to_string(),
                                Value::DoubleValue(d) => d.to_string(),
                                other => format!("{other:?}"),
                            }
                        })
                        .unwrap_or_default();
                    (kv.key.clone(), value)
                })
                .collect::<Vec<_>>()
        };
        let service = resource
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default()
            .into_iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}
