//! Configuration: serde, lookups, and errors that name the field.

use llm_fallback_layer::{Fallback, FallbackConfig};
use llm_testkit::{ReadyService, ScriptedService, Step, TestRequest, TestResponse};
use tower::ServiceExt;

fn parse(json: &str) -> FallbackConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (r#"{"targets": []}"#, "targets"),
        (r#"{"targets": [{"name": " "}]}"#, "targets[0].name"),
        (
            r#"{"targets": [{"name": "a"}, {"name": "a"}]}"#,
            "targets[1].name",
        ),
        (
            r#"{"targets": [{"name": "a", "max_tokens": 0}]}"#,
            "targets[0].max_tokens",
        ),
        (
            r#"{"targets": [{"name": "a", "temperature": -1}]}"#,
            "targets[0].temperature",
        ),
        (
            r#"{"targets": [{"name": "a"}], "hedge_after": "0s"}"#,
            "hedge_after",
        ),
        (
            r#"{"targets": [{"name": "a"}], "max_attempts": 0}"#,
            "max_attempts",
        ),
    ];
    for (json, field) in cases {
        assert_eq!(parse(json).validate().unwrap_err().field(), field, "{json}");
    }
}

#[test]
fn unknown_fields_and_chains_are_rejected() {
    assert!(
        serde_json::from_str::<FallbackConfig>(r#"{"targets": [{"name": "a", "modle": "x"}]}"#)
            .is_err()
    );
    assert!(
        serde_json::from_str::<FallbackConfig>(
            r#"{"targets": [{"name": "a", "chain": "bigger"}]}"#
        )
        .is_err()
    );
}

#[test]
fn an_unknown_service_name_is_an_error() {
    let config = parse(r#"{"targets": [{"name": "a"}, {"name": "ghost"}]}"#);
    let err = config
        .targets::<_, TestRequest>(|name| {
            (name == "a").then(|| ReadyService::new(TestResponse::EMPTY))
        })
        .unwrap_err();
    assert_eq!(err.field(), "targets[1].name");
    assert!(err.reason().contains("ghost"));
}

#[tokio::test(start_paused = true)]
async fn a_config_builds_a_working_chain_with_its_rewrites() {
    let config = parse(
        r#"{"targets": [
            {"name": "openai"},
            {"name": "openrouter", "model": "openai/gpt-4o", "max_tokens": 100, "on": ["rate_limited"]}
        ], "max_attempts": 3}"#,
    );
    let (openai, _) =
        ScriptedService::<TestRequest>::always(Step::fail(llm_core::ErrorKind::RateLimited));
    let (openrouter, calls) =
        ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
    let targets = config
        .targets(|name| match name {
            "openai" => Some(openai.clone()),
            "openrouter" => Some(openrouter.clone()),
            _ => None,
        })
        .unwrap();
    let svc = Fallback::builder(targets).config(&config).build().unwrap();
    svc.oneshot(TestRequest::new("gpt-4o")).await.unwrap();
    let sent = &calls.calls()[0].request;
    assert_eq!(
        (sent.model.as_str(), sent.max_tokens),
        ("openai/gpt-4o", Some(100))
    );
}

#[test]
fn config_round_trips() {
    let config = parse(
        r#"{"targets": [{"name": "a", "chain": "context_window", "model": "big"}], "hedge_after": "1500ms", "max_hedges": 2}"#,
    );
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<FallbackConfig>(&json).unwrap(),
        config
    );
}
