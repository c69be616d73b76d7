//! `Provider::probe` for every kind against the test kit's mock provider: credentials
//! accepted and the model listed, a rejected key, a model the listing lacks, an unreachable
//! server — each classified as a call's failure would be, no chat call made.

use llm_core::ErrorKind;
use llm_providers::ProviderKind;
use llm_testkit::server::MockProvider;

mod support;
use support::provider;

const KEY: &str = "sk-live-SECRET-0123456789";

#[tokio::test]
async fn every_kind_confirms_a_listed_model_and_refuses_an_unlisted_one() {
    let mock = MockProvider::builder()
        .api_key(KEY)
        .models([
            "gpt-4o-mini",
            "claude-3-5-haiku-latest",
            "gemini-2.0-flash",
            "llama3.2",
        ])
        .start()
        .await
        .unwrap();
    for (kind, model) in [
        (ProviderKind::OpenAi, "gpt-4o-mini"),
        (ProviderKind::OpenAiCompatible, "gpt-4o-mini"),
        (ProviderKind::OpenRouter, "gpt-4o-mini"),
        (ProviderKind::Anthropic, "claude-3-5-haiku-latest"),
        (ProviderKind::Gemini, "gemini-2.0-flash"),
        (ProviderKind::Ollama, "llama3.2"),
        (ProviderKind::Azure, "gpt-4o-mini"),
    ] {
        let p = provider(&mock.base_url(), kind, KEY);
        let probe = p
            .probe(model)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(
            probe.model_confirmed,
            kind != ProviderKind::Azure,
            "{kind:?}"
        );
        if kind == ProviderKind::Azure {
            continue; // Deployments are not listed to a key: nothing to refuse.
        }
        let err = p.probe("no-such-model").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelNotFound, "{kind:?}: {err}");
    }
    assert!(mock.attempts().is_empty(), "a probe is not a chat call");
}

#[tokio::test]
async fn a_rejected_key_is_unauthorized_and_never_echoed() {
    let mock = MockProvider::builder().api_key(KEY).start().await.unwrap();
    let wrong = "sk-wrong-SECRET-9876543210";
    for kind in ProviderKind::ALL {
        if kind == ProviderKind::Ollama {
            continue; // Ollama takes no key.
        }
        let err = provider(&mock.base_url(), kind, wrong)
            .probe("gpt-4o")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{kind:?}: {err}");
        assert!(!err.to_string().contains(wrong), "{kind:?}: {err}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = provider(
        &format!("http://127.0.0.1:{port}"),
        ProviderKind::OpenAi,
        KEY,
    )
    .probe("gpt-4o")
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout),
        "{err}"
    );
}
