//! Configuration: presets, serde, variables, and build errors that name the field.

use std::time::Duration;

use llm_breaker_layer::{BreakerConfig, BreakerLayer, WindowConfig};
use llm_testkit::vars;

#[test]
fn presets_are_valid() {
    BreakerConfig::standard().validate().unwrap();
    BreakerConfig::latency(Duration::from_secs(20))
        .validate()
        .unwrap();
    BreakerLayer::standard();
}

#[test]
fn config_round_trips_through_json() {
    let config = BreakerConfig::latency(Duration::from_secs(20));
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""slow_call_duration":"20s""#), "{json}");
    assert_eq!(
        serde_json::from_str::<BreakerConfig>(&json).unwrap(),
        config
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_str::<BreakerConfig>(r#"{"treshold": 5}"#).unwrap_err();
    assert!(err.to_string().contains("treshold"), "{err}");
}

#[test]
fn every_invalid_value_names_its_field() {
    let standard = BreakerConfig::standard;
    let cases: Vec<(BreakerConfig, &str)> = vec![
        (
            BreakerConfig {
                consecutive_failures: Some(0),
                ..standard()
            },
            "consecutive_failures",
        ),
        (
            BreakerConfig {
                failure_rate: Some(0.0),
                ..standard()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                failure_rate: Some(1.5),
                ..standard()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                failure_rate: Some(f64::NAN),
                ..standard()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                slow_call_duration: Some(Duration::from_secs(1)),
                slow_call_rate: 2.0,
                ..standard()
            },
            "slow_call_rate",
        ),
        (
            BreakerConfig {
                consecutive_failures: None,
                failure_rate: None,
                ..standard()
            },
            "consecutive_failures",
        ),
        (
            BreakerConfig {
                window: WindowConfig::Count { size: 0 },
                ..standard()
            },
            "window.size",
        ),
        (
            BreakerConfig {
                window: WindowConfig::Count { size: 5 },
                minimum_calls: 6,
                ..standard()
            },
            "minimum_calls",
        ),
        (
            BreakerConfig {
                window: WindowConfig::Time {
                    length: Duration::ZERO,
                    buckets: 1,
                },
                ..standard()
            },
            "window.length",
        ),
        (
            BreakerConfig {
                window: WindowConfig::Time {
                    length: Duration::from_secs(1),
                    buckets: 0,
                },
                ..standard()
            },
            "window.buckets",
        ),
        (
            BreakerConfig {
                half_open_probes: 0,
                ..standard()
            },
            "half_open_probes",
        ),
        (
            BreakerConfig {
                success_threshold: 0,
                ..standard()
            },
            "success_threshold",
        ),
        (
            BreakerConfig {
                open_duration: Duration::ZERO,
                ..standard()
            },
            "open_duration",
        ),
        (
            BreakerConfig {
                open_multiplier: 0.5,
                ..standard()
            },
            "open_multiplier",
        ),
        (
            BreakerConfig {
                max_open_duration: Duration::from_secs(1),
                ..standard()
            },
            "max_open_duration",
        ),
        (
            BreakerConfig {
                open_jitter: 1.0,
                ..standard()
            },
            "open_jitter",
        ),
        (
            BreakerConfig {
                open_jitter: -0.1,
                ..standard()
            },
            "open_jitter",
        ),
    ];
    for (config, field) in cases {
        let err = BreakerLayer::new(config).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn threshold_variable_reads_counts_and_rates() {
    let config = BreakerConfig::standard()
        .merge_vars("", vars(&[("CIRCUIT_BREAKER_THRESHOLD", "8")]))
        .unwrap();
    assert_eq!(config.consecutive_failures, Some(8));
    let config = BreakerConfig::standard()
        .merge_vars(
            "GW_",
            vars(&[
                ("GW_CIRCUIT_BREAKER_THRESHOLD", "0.3"),
                ("GW_CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "3"),
            ]),
        )
        .unwrap();
    assert_eq!(
        (config.failure_rate, config.success_threshold),
        (Some(0.3), 3)
    );
}

#[test]
fn a_long_timeout_raises_the_cap_with_it() {
    let config = BreakerConfig::standard()
        .merge_vars("", vars(&[("CIRCUIT_BREAKER_TIMEOUT", "10m")]))
        .unwrap();
    assert_eq!(config.open_duration, Duration::from_secs(600));
    assert!(config.max_open_duration >= config.open_duration);
}

#[test]
fn bad_variables_name_the_variable() {
    for (pairs, field) in [
        (
            &[("CIRCUIT_BREAKER_THRESHOLD", "lots")][..],
            "CIRCUIT_BREAKER_THRESHOLD",
        ),
        (
            &[("CIRCUIT_BREAKER_THRESHOLD", "1.5")][..],
            "CIRCUIT_BREAKER_THRESHOLD",
        ),
        (
            &[("CIRCUIT_BREAKER_THRESHOLD", "0")][..],
            "consecutive_failures",
        ),
        (
            &[("CIRCUIT_BREAKER_TIMEOUT", "a while")][..],
            "CIRCUIT_BREAKER_TIMEOUT",
        ),
        (
            &[("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "0")][..],
            "success_threshold",
        ),
    ] {
        let pairs: &'static [(&'static str, &'static str)] = pairs;
        let err = BreakerConfig::standard()
            .merge_vars("", vars(pairs))
            .unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn from_env_without_variables_is_the_standard_preset() {
    assert_eq!(
        BreakerConfig::from_env().unwrap(),
        BreakerConfig::standard()
    );
}

#[test]
fn zero_max_keys_is_rejected() {
    let err = BreakerLayer::builder()
        .max_keys(0)
        .keyed_by(|k: &u32| *k)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_keys");
}
