//! A provider with several `keys` is a pool: the gateway spreads requests over the keys by
//! their headroom, retires a revoked key after one request, and shows each key in
//! `/health`. Against the test kit's mock provider, which keeps a budget per API key and
//! reports it in `x-ratelimit-*` headers.

use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use llm_testkit::server::MockProvider;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A gateway configured by `text`, serving until the test ends; its base URL.
async fn gateway(text: &str) -> String {
    let config = GatewayConfig::from_toml(text, "test.toml", &|_| None).unwrap();
    let gateway = Gateway::new(&config, &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener, std::future::pending::<()>()));
    base
}

async fn ask(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let res = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "gpt-4o-mini",
            "messages": [{ "role": "user", "content": "Hello" }],
            "max_tokens": 50,
        }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn health(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn three_keys_of_20_a_minute_answer_60_with_at_most_two_upstream_429s() {
    let mock = MockProvider::builder()
        .rate_limit(20, 10_000_000)
        .start()
        .await
        .unwrap();
    let base = gateway(&format!(
        r#"
[[providers]]
name = "openai"
base_url = "{}/v1"
keys = [{{ api_key = "sk-one" }}, {{ api_key = "sk-two" }}, {{ api_key = "sk-three" }}]
"#,
        mock.base_url()
    ))
    .await;
    let client = reqwest::Client::new();
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..75 {
        match ask(&client, &base).await {
            (200, _) => answered += 1,
            (429, body) => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                refused += 1;
            }
            (status, body) => panic!("{status}: {body}"),
        }
    }
    let upstream_429s = mock.answered_with(429);
    eprintln!("{answered} answered, {refused} refused, {upstream_429s} upstream 429s");
    assert!((58..=63).contains(&answered), "{answered} answered");
    assert!(upstream_429s <= 2, "{upstream_429s} upstream 429s");

    let health = health(&client, &base).await;
    let members = health["providers"][0]["members"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<_> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["key-1", "key-2", "key-3"]);
    for member in &members {
        assert!(member["served"].as_u64().unwrap() >= 19, "{member}");
        assert_eq!(member["state"], "cooling_down", "{member}");
        assert_eq!(member["reason"], "rate_limited", "{member}");
        assert!(member["backInMs"].as_u64().unwrap() > 0, "{member}");
    }
    // No key in what /health says.
    assert!(!health.to_string().contains("sk-"), "{health}");
}

#[tokio::test]
async fn a_revoked_key_leaves_rotation_after_one_request_and_no_caller_sees_its_401() {
    let mock = MockProvider::builder()
        .api_key("sk-good")
        .start()
        .await
        .unwrap();
    let base = gateway(&format!(
        r#"
[[providers]]
name = "openai"
base_url = "{}/v1"
keys = [
  {{ name = "old", api_key = "sk-revoked" }},
  {{ name = "new", api_key = "sk-good", weight = 2 }},
]
"#,
        mock.base_url()
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let (status, body) = ask(&client, &base).await;
        assert_eq!(status, 200, "{body}");
    }
    let unauthorized = mock.answered_with(401);
    // Picked in turn while neither had answered, the revoked key was tried once.
    assert_eq!(unauthorized, 1);
    let health = health(&client, &base).await;
    let members = &health["providers"][0]["members"];
    assert_eq!(members[0]["state"], "retired", "{members}");
    assert_eq!(members[0]["reason"], "unauthorized", "{members}");
    assert_eq!(members[1]["state"], "available", "{members}");
    assert_eq!(members[1]["weight"], 2);
    assert_eq!(health["status"], "ok");

    // The start-up probes try each key: the revoked one is named, and fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let probes = loop {
        let health = self::health(&client, &base).await;
        let probes = health["providers"][0]["probes"].as_array().unwrap().clone();
        if probes.len() == 2 || std::time::Instant::now() > deadline {
            break probes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let outcome: Vec<_> = probes
        .iter()
        .map(|p| (p["provider"].as_str().unwrap(), p["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        outcome,
        [("openai/old", false), ("openai/new", true)],
        "{probes:?}"
    );
    assert_eq!(probes[0]["error"], "unauthorized");
}

#[test]
fn pool_settings_are_checked_and_named_by_their_path() {
    let err = |text: &str| {
        GatewayConfig::from_toml(text, "gw.toml", &|_| None)
            .unwrap_err()
            .to_string()
    };
    let base = "[[providers]]\nname = \"openai\"\napi_key = \"sk\"\n";
    for (table, field) in [
        (
            "keys = [{ api_key = \"a\" }, { api_key = \"b\", weight = 0 }]",
            "providers[0].keys[1].weight",
        ),
        (
            "keys = [{ api_key = \"a\", colour = \"red\" }]",
            "providers[0].keys[0]",
        ),
        (
            "keys = [{ api_key = \"a\" }]\ndeployments = [{ base_url = \"http://x\" }]",
            "providers[0].deployments",
        ),
        (
            "keys = [{ api_key = \"a\" }]\npool = { strategy = \"fastest\" }",
            "providers[0].pool.strategy",
        ),
        (
            "keys = [{ api_key = \"a\" }]\npool = { retire_for = \"0s\" }",
            "providers[0].pool.retire_for",
        ),
    ] {
        let err = err(&format!("{base}{table}"));
        assert!(err.contains(field), "{table}: {err}");
    }

    // What a pooled provider reads: members named by default, the strategy, a shared Redis.
    let text = format!(
        "{base}deployments = [{{ base_url = \"http://east\", region = \"eastus\" }}, {{ base_url = \"http://west\", tier = 1 }}]\npool = {{ strategy = \"peak_ewma\", shared = {{ url = \"redis://127.0.0.1:6379\" }} }}"
    );
    let config = GatewayConfig::from_toml(&text, "gw.toml", &|_| None).unwrap();
    let provider = &config.providers[0];
    let names: Vec<_> = provider
        .members
        .iter()
        .map(|m| m.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["eastus", "deployment-2"]);
    assert_eq!(provider.members[1].tier, 1);
    assert_eq!(
        provider.pool.strategy,
        llm_tower::balance::Strategy::PeakEwma
    );
    assert!(provider.shared_pool.is_some());
    // A member's key is never printed.
    let text = format!("{base}keys = [{{ api_key = \"sk-secret-123\" }}]");
    let config = GatewayConfig::from_toml(&text, "gw.toml", &|_| None).unwrap();
    assert!(!format!("{config:?}").contains("sk-secret-123"));
}

#[tokio::test]
async fn with_sticky_pools_a_users_requests_go_to_one_key() {
    let mock = MockProvider::builder().start().await.unwrap();
    let base = gateway(&format!(
        r#"
[[providers]]
name = "openai"
base_url = "{}/v1"
keys = [{{ api_key = "sk-one" }}, {{ api_key = "sk-two" }}, {{ api_key = "sk-three" }}]
pool = {{ sticky = true }}
"#,
        mock.base_url()
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let res = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": "Hello" }],
                "user": "alice",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let health = health(&client, &base).await;
    let served: Vec<u64> = health["providers"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["served"].as_u64().unwrap())
        .collect();
    assert_eq!(served.iter().sum::<u64>(), 6);
    assert!(
        served.contains(&6),
        "alice's requests went to one key: {served:?}"
    );
}
