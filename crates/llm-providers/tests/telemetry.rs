//! The events a provider call leaves for tracing, with OpenTelemetry's GenAI attribute names
//! (`gen_ai.provider.name`, not the retired `gen_ai.system`), captured by a subscriber of
//! the test's own against the test kit's mock provider.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use llm_providers::{ChatRequest, EmbeddingRequest, ProviderKind};
use llm_testkit::server::{Fault, MockProvider, Rule};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

mod support;
use support::provider;

/// One event's fields: (name, value as text).
type EventFields = Vec<(String, String)>;

/// Every event's fields.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<EventFields>>>);

struct Fields(EventFields);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Events {
    /// The events whose message is `message`, each as its fields.
    fn named(&self, message: &str) -> Vec<EventFields> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|fields| fields.iter().any(|(k, v)| k == "message" && v == message))
            .cloned()
            .collect()
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn provider_events_carry_the_genai_attributes() {
    let events = Events::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(events.clone(), || {
        runtime.block_on(async {
            let mock = MockProvider::builder()
                .api_key("k")
                .rule(Rule::model("broken").fault(Fault::status(500)))
                .start()
                .await
                .unwrap();
            let gemini = provider(&mock.base_url(), ProviderKind::Gemini, "k");
            let answer = gemini
                .clone()
                .oneshot(ChatRequest::new("gemini-2.0-flash").user("Hi"))
                .await
                .unwrap();
            assert!(!answer.text.is_empty());
            gemini
                .clone()
                .oneshot(ChatRequest::new("broken").user("Hi"))
                .await
                .unwrap_err();
            let mut stream = gemini
                .streaming()
                .oneshot(ChatRequest::new("gemini-2.0-flash").user("Hi"))
                .await
                .unwrap();
            while stream.next().await.is_some() {}
            drop(stream);
            gemini
                .oneshot(EmbeddingRequest::new("gemini-embedding-001", ["Hi"]))
                .await
                .unwrap();
        });
    });

    let calls = events.named("provider call");
    assert_eq!(calls.len(), 3, "two chat calls and a stream");
    for call in &calls {
        assert_eq!(field(call, "gen_ai.operation.name"), Some("chat"));
        assert_eq!(field(call, "gen_ai.provider.name"), Some("gcp.gemini"));
        assert_eq!(field(call, "server.address"), Some("127.0.0.1"));
        assert!(
            field(call, "gen_ai.system").is_none(),
            "the retired name is gone"
        );
    }
    let answered = &events.named("provider answered")[0];
    assert_eq!(
        field(answered, "gen_ai.response.model"),
        Some("gemini-2.0-flash")
    );
    assert_eq!(
        field(answered, "gen_ai.response.finish_reasons"),
        Some("stop")
    );
    assert_eq!(field(answered, "gen_ai.usage.output_tokens"), Some("60"));
    let failed = &events.named("provider failed")[0];
    assert_eq!(field(failed, "error.type"), Some("server_error"));
    let ended = &events.named("stream ended")[0];
    assert_eq!(field(ended, "error.type"), None, "a complete stream");
    assert_eq!(field(ended, "gen_ai.provider.name"), Some("gcp.gemini"));
    let embedded = &events.named("provider embeddings call")[0];
    assert_eq!(field(embedded, "gen_ai.operation.name"), Some("embeddings"));
}
