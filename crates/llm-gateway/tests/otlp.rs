//! `[telemetry]`: the gateway binary exports its spans and metrics over OTLP/HTTP (JSON) to
//! a receiver in the test, for a request that is retried on one provider and then falls
//! back to another; the caller's trace continues through the gateway to the upstream.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use support::Running;

const UPSTREAM_KEY: &str = "sk-upstream-test-key-0123456789";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver got: (path, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP receiver taking JSON on `/v1/traces` and `/v1/metrics`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let keep = |path: &'static str| {
        move |State(received): State<Received>, Json(body): Json<Value>| async move {
            received.lock().unwrap().push((path.to_owned(), body));
            Json(json!({}))
        }
    };
    let app = axum::Router::new()
        .route("/v1/traces", post(keep("traces")))
        .route("/v1/metrics", post(keep("metrics")))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// Every span received, flattened.
fn spans(received: &Received) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "traces")
        .flat_map(|(_, body)| {
            body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A span's attribute as text (OTLP's JSON wraps each value in its type).
fn attribute(span: &Value, key: &str) -> Option<String> {
    let value = span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]
        .clone();
    let inner = value.as_object()?.values().next()?.clone();
    Some(match inner {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// The metric names received.
fn metric_names(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "metrics")
        .flat_map(|(_, body)| {
            body["resourceMetrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|r| r["scopeMetrics"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["metrics"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_then_fallen_back_request_is_exported_as_one_trace() {
    let (collector, received) = receiver().await;
    let (down, up) = support::overloaded_and_up(UPSTREAM_KEY).await;
    let config = format!(
        r#"
[telemetry]
otlp_endpoint = "{collector}"
otlp_protocol = "http/json"
metrics_interval = "200ms"

[[providers]]
name = "anthropic"
api_key = "{UPSTREAM_KEY}"
base_url = "{down}"
model = "claude-sonnet-4-5"
retry = {{ max_retries = 1, base_delay = "10ms", max_delay = "20ms" }}

[[providers]]
name = "openai"
kind = "openai_compatible"
api_key = "{UPSTREAM_KEY}"
base_url = "{up}/v1"
model = "gpt-4o-mini"

[[routes]]
model = "claude"
targets = [{{ provider = "anthropic", model = "claude-sonnet-4-5" }}, {{ provider = "openai", model = "gpt-4o-mini" }}]
"#,
        down = down.base_url(),
        up = up.base_url(),
    );
    let mut gateway = Running::start(&config, &[]).await;
    let answer = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-gateway-attempts"], "3");

    // The upstream is told the caller's trace, with the gateway's own span as its parent.
    let sent = up.attempts()[0]
        .headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.clone())
        .expect("a traceparent upstream");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "{sent}");
    assert_ne!(parts[2], CALLER_SPAN, "{sent}");

    // The metrics are exported every 200 ms; the spans at the latest when the gateway stops.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !metric_names(&received)
            .iter()
            .any(|n| n == "llm_attempts_total")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the metrics reach the collector");
    let names = metric_names(&received);
    for name in [
        "llm_fallbacks_total",
        "gen_ai.client.operation.duration",
        "gateway_requests_total",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    gateway.signal("TERM");
    let exited = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait()).await;
    assert!(exited.expect("the gateway stops").unwrap().success());

    let spans = spans(&received);
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    let server = named("POST /v1/chat/completions");
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server["traceId"], TRACE_ID);
    assert_eq!(server["parentSpanId"], CALLER_SPAN);
    assert_eq!(
        server["spanId"], parts[2],
        "the upstream's parent is the gateway's span"
    );

    let request = named("chat claude");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    assert_eq!(request["traceId"], TRACE_ID);
    assert_eq!(request["parentSpanId"], server["spanId"]);
    assert_eq!(
        attribute(request, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        attribute(request, "gen_ai.request.model").as_deref(),
        Some("claude")
    );
    assert_eq!(
        attribute(request, "llm.upstream").as_deref(),
        Some("openai")
    );
    assert_eq!(attribute(request, "llm.fallbacks").as_deref(), Some("1"));
    assert_eq!(attribute(request, "llm.attempts").as_deref(), Some("3"));
    // The retry and the fallback are the request's events.
    let events: Vec<String> = request["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    assert!(events.iter().any(|e| e.contains("retrying")), "{events:?}");
    assert!(
        events.iter().any(|e| e.contains("falling back")),
        "{events:?}"
    );

    // Each upstream attempt is a client span under the request, as the GenAI conventions
    // describe one; no message content is recorded.
    let failed = named("chat claude-sonnet-4-5");
    assert_eq!(failed.len(), 2, "{spans:#?}");
    for attempt in &failed {
        assert_eq!(attempt["parentSpanId"], request["spanId"]);
        assert_eq!(attempt["kind"], json!(3), "client");
        assert_eq!(
            attribute(attempt, "gen_ai.provider.name").as_deref(),
            Some("anthropic")
        );
        assert_eq!(
            attribute(attempt, "error.type").as_deref(),
            Some("overloaded")
        );
        assert_eq!(
            attribute(attempt, "server.address").as_deref(),
            Some("127.0.0.1")
        );
    }
    let answered = named("chat gpt-4o-mini");
    assert_eq!(answered.len(), 1, "{spans:#?}");
    let answered = answered[0];
    assert_eq!(answered["parentSpanId"], request["spanId"]);
    assert_eq!(
        attribute(answered, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        attribute(answered, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert!(attribute(answered, "gen_ai.usage.output_tokens").is_some());
    assert!(attribute(answered, "gen_ai.response.id").is_some());
    assert_eq!(attribute(answered, "error.type"), None);
    let all = serde_json::to_string(&spans).unwrap();
    assert!(!all.contains("\"Hi\"") && !all.contains(UPSTREAM_KEY));
}
