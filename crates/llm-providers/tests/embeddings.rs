//! Embeddings for every kind with an embeddings API, against the test kit's mock provider:
//! vectors back in input order, the dimensions asked for, inputs split into the batches a
//! provider takes, errors classified as a chat call's are; Anthropic refuses before any call.

use llm_core::ErrorKind;
use llm_providers::{EmbeddingRequest, ProviderKind};
use llm_testkit::server::MockProvider;
use tower::ServiceExt;

mod support;
use support::provider;

const KEY: &str = "sk-live-SECRET-0123456789";

/// Inputs whose lengths say their place (the mock's vectors start with the input's length).
fn inputs(n: usize) -> Vec<String> {
    (1..=n).map(|i| "x".repeat(i)).collect()
}

#[tokio::test]
async fn every_kind_answers_one_vector_per_input_in_order() {
    let mock = MockProvider::builder().api_key(KEY).start().await.unwrap();
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::OpenAiCompatible,
        ProviderKind::OpenRouter,
        ProviderKind::Azure,
        ProviderKind::Gemini,
        ProviderKind::Ollama,
    ] {
        let answer = provider(&mock.base_url(), kind, KEY)
            .oneshot(EmbeddingRequest::new("embed-model", inputs(3)).dimensions(5))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let firsts: Vec<f32> = answer.embeddings.iter().map(|v| v[0]).collect();
        assert_eq!(firsts, [1.0, 2.0, 3.0], "{kind:?}");
        assert_eq!(answer.dimensions(), 5, "{kind:?}: the dimensions asked for");
        let with_usage = !matches!(kind, ProviderKind::Gemini);
        assert_eq!(answer.usage.is_some(), with_usage, "{kind:?}");
    }
    let paths: Vec<String> = mock.attempts().into_iter().map(|a| a.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/embeddings",
            "/v1/embeddings",
            "/api/v1/embeddings",
            "/openai/deployments/embed-model/embeddings",
            "/v1beta/models/embed-model:batchEmbedContents",
            "/api/embed",
        ]
    );
}

#[tokio::test]
async fn inputs_are_sent_in_the_batches_each_provider_takes() {
    let mock = MockProvider::builder().api_key(KEY).start().await.unwrap();
    let gemini = provider(&mock.base_url(), ProviderKind::Gemini, KEY);
    let answer = gemini
        .oneshot(EmbeddingRequest::new("gemini-embedding-001", inputs(250)))
        .await
        .unwrap();
    assert_eq!(answer.embeddings.len(), 250);
    let firsts: Vec<f32> = answer.embeddings.iter().map(|v| v[0]).collect();
    #[allow(clippy::cast_precision_loss)]
    let expected: Vec<f32> = (1..=250).map(|i| i as f32).collect();
    assert_eq!(firsts, expected, "the batches put back in order");
    assert_eq!(mock.attempts().len(), 3, "100 + 100 + 50");

    mock.reset();
    let openai = provider(&mock.base_url(), ProviderKind::OpenAi, KEY);
    let answer = openai
        .oneshot(EmbeddingRequest::new("e", vec!["a".to_owned(); 2049]))
        .await
        .unwrap();
    assert_eq!(answer.embeddings.len(), 2049);
    assert_eq!(mock.attempts().len(), 2, "2,048 + 1");
    assert_eq!(
        answer.usage.unwrap().input_tokens,
        2049,
        "summed over the batches"
    );
}

#[tokio::test]
async fn failures_are_classified_and_anthropic_is_refused_before_any_call() {
    let mock = MockProvider::builder().api_key(KEY).start().await.unwrap();
    let wrong = provider(
        &mock.base_url(),
        ProviderKind::OpenAi,
        "sk-wrong-key-000000",
    );
    let err = wrong
        .oneshot(EmbeddingRequest::new("e", ["a"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("sk-wrong-key"), "{err}");

    let anthropic = provider(&mock.base_url(), ProviderKind::Anthropic, KEY);
    let err = anthropic
        .oneshot(EmbeddingRequest::new("claude", ["a"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

    let openai = provider(&mock.base_url(), ProviderKind::OpenAi, KEY);
    let err = openai
        .oneshot(EmbeddingRequest::new("e", Vec::<String>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert_eq!(
        mock.attempts().len(),
        1,
        "only the wrong key reached the mock"
    );
}
