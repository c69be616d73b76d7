//! Configuration: serde, presets, variables, and build errors that name the field.

use std::time::Duration;

use llm_core::{ErrorKind, ErrorKinds};
use llm_retry_layer::{Jitter, RetryConfig, RetryLayer, Strategy};
use llm_testkit::vars;

#[test]
fn presets_are_valid_and_documented_values_hold() {
    for config in [
        RetryConfig::standard(),
        RetryConfig::streaming(),
        RetryConfig::aggressive(),
    ] {
        config.validate().unwrap();
        RetryLayer::new(config).unwrap();
    }
    let standard = RetryConfig::standard();
    assert_eq!(standard.max_retries, 3);
    assert_eq!(standard.base_delay, Duration::from_millis(500));
    assert_eq!(standard.max_delay, Duration::from_secs(8));
    assert_eq!(standard.max_retry_after, Duration::from_secs(120));
    assert_eq!(standard.retry_on, ErrorKinds::RETRYABLE);
    assert_eq!(
        RetryConfig::streaming().max_elapsed,
        Some(Duration::from_secs(15))
    );
    assert_eq!(RetryConfig::aggressive().jitter, Jitter::Decorrelated);
}

#[test]
fn config_round_trips_through_json() {
    let config = RetryConfig {
        stop_on: ErrorKind::RateLimited.into(),
        ..RetryConfig::streaming()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""base_delay":"250ms""#), "{json}");
    let back: RetryConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn partial_config_fills_in_the_standard_preset() {
    let config: RetryConfig =
        serde_json::from_str(r#"{"max_retries": 5, "strategy": "linear", "step": "250ms"}"#)
            .unwrap();
    assert_eq!(config.max_retries, 5);
    assert_eq!(config.strategy, Strategy::Linear);
    assert_eq!(config.base_delay, RetryConfig::standard().base_delay);
    assert_eq!(config.backoff().base_delay(3), Duration::from_millis(1000));
}

#[test]
fn unknown_fields_and_bad_values_are_rejected() {
    let err = serde_json::from_str::<RetryConfig>(r#"{"max_retrys": 5}"#).unwrap_err();
    assert!(err.to_string().contains("max_retrys"), "{err}");
    let err = serde_json::from_str::<RetryConfig>(r#"{"base_delay": "quickly"}"#).unwrap_err();
    assert!(err.to_string().contains("expected a duration"), "{err}");
    let err = serde_json::from_str::<RetryConfig>(r#"{"retry_on": ["timeout", "sometimes"]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("sometimes"), "{err}");
}

#[test]
fn invalid_settings_fail_at_build_naming_the_field() {
    let cases: [(RetryConfig, &str); 5] = [
        (
            RetryConfig {
                max_retries: 101,
                ..RetryConfig::standard()
            },
            "max_retries",
        ),
        (
            RetryConfig {
                multiplier: 0.5,
                ..RetryConfig::standard()
            },
            "multiplier",
        ),
        (
            RetryConfig {
                multiplier: f64::NAN,
                ..RetryConfig::standard()
            },
            "multiplier",
        ),
        (
            RetryConfig {
                base_delay: Duration::from_secs(9),
                ..RetryConfig::standard()
            },
            "max_delay",
        ),
        (
            RetryConfig {
                budget: llm_retry_layer::BudgetConfig {
                    retry_ratio: -1.0,
                    ..Default::default()
                },
                ..RetryConfig::standard()
            },
            "budget.retry_ratio",
        ),
    ];
    for (config, field) in cases {
        let err = RetryLayer::new(config).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn variables_override_the_preset() {
    let config = RetryConfig::standard()
        .merge_vars(
            "",
            vars(&[
                ("RETRY_MAX_ATTEMPTS", "5"),
                ("RETRY_BASE_DELAY", "1s"),
                ("RETRY_MAX_DELAY", "1m"),
            ]),
        )
        .unwrap();
    assert_eq!(config.max_retries, 4);
    assert_eq!(config.base_delay, Duration::from_secs(1));
    assert_eq!(config.max_delay, Duration::from_secs(60));
}

#[test]
fn prefixed_variables_are_read_and_others_ignored() {
    let config = RetryConfig::standard()
        .merge_vars(
            "LLM_",
            vars(&[("RETRY_MAX_ATTEMPTS", "9"), ("LLM_RETRY_MAX_ATTEMPTS", "2")]),
        )
        .unwrap();
    assert_eq!(config.max_retries, 1);
}

#[test]
fn bad_variables_name_the_variable() {
    for (pairs, key) in [
        (&[("RETRY_MAX_ATTEMPTS", "three")][..], "RETRY_MAX_ATTEMPTS"),
        (&[("RETRY_MAX_ATTEMPTS", "0")][..], "RETRY_MAX_ATTEMPTS"),
        (&[("RETRY_BASE_DELAY", "soon")][..], "RETRY_BASE_DELAY"),
        (
            &[("RETRY_BASE_DELAY", "10s"), ("RETRY_MAX_DELAY", "1s")][..],
            "max_delay",
        ),
    ] {
        let pairs: &'static [(&'static str, &'static str)] = pairs;
        let err = RetryConfig::standard()
            .merge_vars("", vars(pairs))
            .unwrap_err();
        assert_eq!(err.field(), key, "{err}");
    }
}

#[test]
fn from_env_reads_the_process_environment() {
    // The test environment sets none of these; the standard preset comes back.
    let config = RetryConfig::from_env_with_prefix("LLM_TOWER_TEST_UNSET_").unwrap();
    assert_eq!(config, RetryConfig::standard());
}
