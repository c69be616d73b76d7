//! The `llm-gateway` binary started as a user starts it: a spawned process, a configuration
//! file, an ephemeral port (read from its JSON log), mock providers from llm-testkit behind
//! it. Who may call (keys, endpoints, models, per-key limits), the admin endpoints, the
//! refusal to serve keyless on a public address, and a graceful shutdown with a stream in
//! flight.
//!
//! Timings are real and short; every wait is bounded.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llm_testkit::server::MockProvider;
use serde_json::{Value, json};
use support::{Running, TempDir, command, message};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The mock provider's key (the gateway's upstream key).
const UPSTREAM_KEY: &str = "sk-upstream-test-key-0123456789";
/// Gateway keys the tests call with.
const TEAM_A: &str = "gw-team-a-0123456789abcdef";
const TEAM_B: &str = "gw-team-b-0123456789abcdef";
const ADMIN: &str = "gw-admin-0123456789abcdef";

async fn mock() -> MockProvider {
    MockProvider::builder()
        .api_key(UPSTREAM_KEY)
        .start()
        .await
        .unwrap()
}

/// One OpenAI-compatible provider and two routes.
fn providers(mock: &MockProvider) -> String {
    format!(
        r#"
[[providers]]
name = "llm"
kind = "openai_compatible"
base_url = "{}/v1"
model = "gpt-4o"
api_key = "{UPSTREAM_KEY}"

[[routes]]
model = "fast"
targets = [{{ provider = "llm", model = "gpt-4o-mini" }}]

[[routes]]
model = "smart"
targets = [{{ provider = "llm", model = "gpt-4o" }}]
"#,
        mock.base_url()
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
}

async fn post(
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

const KEYS: &str = r#"
[[auth.keys]]
name = "team-a"
key_env = "TEAM_A_KEY"
models = ["fast"]

[[auth.keys]]
name = "team-b"
key_env = "TEAM_B_KEY"
rate_limit = { requests = { limit = 2, per = "1m" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_checked_and_never_logged() {
    let mock = mock().await;
    let gateway = Running::start(
        &(providers(&mock) + KEYS),
        &[("TEAM_A_KEY", TEAM_A), ("TEAM_B_KEY", TEAM_B)],
    )
    .await;
    let completions = gateway.url("/v1/chat/completions");

    // No key, a wrong key: 401 in OpenAI's shape.
    let (status, body, headers) = post(&completions, None, &chat("fast")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, body, _) =
        post(&completions, Some("gw-not-a-key-0123456789"), &chat("fast")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // /api/chat answers in its own shape.
    let (status, body, _) = post(&gateway.url("/api/chat"), None, &json!({"message": "Hi"})).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "{body}"
    );

    // The right key, as a bearer token and as `x-api-key`.
    let (status, body, _) = post(&completions, Some(TEAM_A), &chat("fast")).await;
    assert_eq!(status, 200, "{body}");
    let response = reqwest::Client::new()
        .post(&completions)
        .header("x-api-key", TEAM_A)
        .json(&chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // team-a may use `fast` only: `smart` is refused before any upstream call, and
    // `/v1/models` lists what it may use.
    let calls = mock.attempts().len();
    let (status, body, _) = post(&completions, Some(TEAM_A), &chat("smart")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert_eq!(
        mock.attempts().len(),
        calls,
        "no upstream call for a refused model"
    );
    let models: Value = reqwest::Client::new()
        .get(gateway.url("/v1/models"))
        .bearer_auth(TEAM_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast"]);

    // team-b: two requests a minute, then a 429 at once with Retry-After; team-a unaffected.
    for _ in 0..2 {
        let (status, body, _) = post(&completions, Some(TEAM_B), &chat("smart")).await;
        assert_eq!(status, 200, "{body}");
    }
    let calls = mock.attempts().len();
    let started = std::time::Instant::now();
    let (status, body, headers) = post(&completions, Some(TEAM_B), &chat("smart")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    assert_eq!(
        mock.attempts().len(),
        calls,
        "no upstream call over the key's limit"
    );
    let (status, _, _) = post(&completions, Some(TEAM_A), &chat("fast")).await;
    assert_eq!(status, 200, "another key's limit is its own");

    // Neither key ever reaches the log; the key names do.
    let log = gateway.log_text();
    for secret in [TEAM_A, TEAM_B, UPSTREAM_KEY] {
        assert!(!log.contains(secret), "a key in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_take_the_admin_key_or_their_own_listener() {
    let mock = mock().await;
    let config = providers(&mock) + "\n[admin]\nkey_env = \"ADMIN_KEY\"\n";
    let gateway = Running::start(&config, &[("ADMIN_KEY", ADMIN)]).await;
    let client = reqwest::Client::new();
    for path in ["/health", "/metrics", "/status/data"] {
        let refused = client.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let wrong = client
            .get(gateway.url(path))
            .bearer_auth(TEAM_A)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let allowed = client
            .get(gateway.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200, "{path}");
    }
    // The status page holds no data (it asks for the key to read `/status/data`).
    let page = client.get(gateway.url("/status")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("admin key"));
    // The API itself needs no key here (none configured, loopback).
    let (status, _, _) = post(&gateway.url("/v1/chat/completions"), None, &chat("fast")).await;
    assert_eq!(status, 200);

    // On a listener of their own, they leave the API's.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = providers(&mock) + &format!("\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
    let gateway = Running::start(&config, &[]).await;
    assert_eq!(
        client
            .get(gateway.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(response) = client.get(format!("{admin}/health")).send().await {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the admin listener answers");
    assert_eq!(health.status(), 200);
    let metrics = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_public_address_is_refused() {
    let mock = mock().await;
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    std::fs::write(&path, providers(&mock)).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        command(&path, "0.0.0.0:0", &[]).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`auth.keys`"), "{stderr}");
    assert!(stderr.contains("allow_unauthenticated"), "{stderr}");

    // With a key from the environment, the same address is served.
    std::fs::write(&path, providers(&mock)).unwrap();
    let mut child = command(&path, "0.0.0.0:0", &[("GATEWAY_API_KEYS", TEAM_A)])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if message(&line).starts_with("llm-gateway on ") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(listening);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish() {
    let mock = MockProvider::builder()
        .api_key(UPSTREAM_KEY)
        .answer_tokens(30)
        .chunk_interval(Duration::from_millis(40))
        .start()
        .await
        .unwrap();
    let mut gateway = Running::start(&providers(&mock), &[]).await;
    let response = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    gateway.signal("TERM");
    let mut text = String::from_utf8_lossy(&first).into_owned();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    })
    .await
    .expect("the stream ends within its drain");
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream finished whole:\n{rest}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(gateway.log_text().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_and_refuses_a_bad_file() {
    let mock = MockProvider::builder()
        .api_key(UPSTREAM_KEY)
        .answer_tokens(30)
        .chunk_interval(Duration::from_millis(30))
        .start()
        .await
        .unwrap();
    let gateway = Running::start(&providers(&mock), &[]).await;
    let path = gateway.dir.0.join("gateway.toml");
    let completions = gateway.url("/v1/chat/completions");

    // A stream in flight across the reload.
    let response = reqwest::Client::new()
        .post(&completions)
        .json(&json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut streamed = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).into_owned();
    let streaming = tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            streamed.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        streamed
    });
    // Load: requests one after another through the reload, every one answered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, completions) = (stop.clone(), completions.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(post(&completions, None, &chat("smart")).await.0);
            }
            statuses
        })
    };

    // A new route, then SIGHUP: it answers once the file is read again.
    let newer = providers(&mock)
        + "\n[[routes]]\nmodel = \"newer\"\ntargets = [{ provider = \"llm\", model = \"gpt-4o\" }]\n";
    std::fs::write(&path, &newer).unwrap();
    let (status, _, _) = post(&completions, None, &chat("newer")).await;
    assert_eq!(status, 404, "not routed before the reload");
    assert!(
        !streaming.is_finished(),
        "the stream is still in flight at the reload"
    );
    gateway.signal("HUP");
    tokio::time::timeout(Duration::from_secs(10), async {
        while post(&completions, None, &chat("newer")).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new route answers after SIGHUP");

    // A bad file: refused with its field named; the configuration in force stays.
    std::fs::write(
        &path,
        newer.replace(
            "model = \"gpt-4o\"\napi_key",
            "model = \"gpt-4o\"\ntimeouts = { connect = \"soon\" }\napi_key",
        ),
    )
    .unwrap();
    gateway.signal("HUP");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !gateway.log_text().contains("reload refused") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the refusal is logged");
    let log = gateway.log_text();
    assert!(log.contains("providers[0].timeouts.connect"), "{log}");
    let (status, _, _) = post(&completions, None, &chat("newer")).await;
    assert_eq!(status, 200, "the configuration in force stays");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let streamed = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .unwrap()
        .unwrap();
    assert!(
        streamed.trim_end().ends_with("data: [DONE]"),
        "the stream in flight finished whole:\n{streamed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_set_or_kept_and_echoed() {
    let mock = mock().await;
    let gateway = Running::start(
        &(providers(&mock) + KEYS),
        &[("TEAM_A_KEY", TEAM_A), ("TEAM_B_KEY", TEAM_B)],
    )
    .await;
    let client = reqwest::Client::new();
    let completions = gateway.url("/v1/chat/completions");
    // A fresh id on an answer and on a refusal alike.
    let answered = client
        .post(&completions)
        .bearer_auth(TEAM_A)
        .json(&chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let id = answered.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        id.starts_with("gw-") && id.len() > 20,
        "the process's prefix and a counter: {id}"
    );
    let refused = client
        .post(&completions)
        .json(&chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let other = refused.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(other, id, "each request its own");
    // The caller's own id is kept.
    let kept = client
        .post(&completions)
        .bearer_auth(TEAM_A)
        .header("x-request-id", "trace-me-42")
        .json(&chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probes_every_target_and_health_shows_the_probes() {
    let good = mock().await;
    let other_key = MockProvider::builder()
        .api_key("sk-another-key-entirely-0000")
        .start()
        .await
        .unwrap();
    let provider = |name: &str, mock: &MockProvider, model: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai_compatible\"\nbase_url = \"{}/v1\"\nmodel = \"{model}\"\napi_key = \"{UPSTREAM_KEY}\"\n\n",
            mock.base_url()
        )
    };
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    let run_check = |text: String| {
        std::fs::write(&path, text).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_llm-gateway"));
        command
            .args(["check", "--config", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("GATEWAY_API_KEYS");
        async move {
            tokio::time::timeout(Duration::from_secs(30), command.output())
                .await
                .unwrap()
                .unwrap()
        }
    };

    // A key the provider rejects, a model it does not list: exit 1, each named.
    let text = provider("good", &good, "gpt-4o")
        + &provider("rejected", &other_key, "gpt-4o")
        + &provider("unlisted", &good, "gpt-9-imaginary");
    let output = run_check(text).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {stdout}"))
            .to_owned()
    };
    assert!(line("good").contains("ok ("), "{stdout}");
    assert!(line("rejected").contains("FAILED unauthorized"), "{stdout}");
    assert!(
        line("unlisted").contains("FAILED model_not_found"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(UPSTREAM_KEY) && !stdout.contains("sk-another-key"),
        "{stdout}"
    );
    assert!(
        good.attempts().is_empty() && other_key.attempts().is_empty(),
        "no chat call"
    );

    // A route target's model is probed too.
    let text = provider("good", &good, "gpt-4o")
        + "[[routes]]\nmodel = \"fast\"\ntargets = [{ provider = \"good\", model = \"gpt-4o-mini\" }, { provider = \"good\", model = \"gpt-5-unlisted\" }]\n";
    let output = run_check(text).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("gpt-4o-mini") && stdout.contains("gpt-5-unlisted"),
        "{stdout}"
    );

    // All good: exit 0. An invalid file: exit 2 naming the field.
    let output = run_check(provider("good", &good, "gpt-4o")).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = run_check(provider("good", &good, "gpt-4o").replace(
        "kind = \"openai_compatible\"",
        "kind = \"openai_compatible\"\nretry = { base_delay = \"soon\" }",
    ))
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("providers[0].retry.base_delay"));

    // The running gateway probes at start, and /health shows it.
    let gateway = Running::start(
        &(provider("good", &good, "gpt-4o") + &provider("rejected", &other_key, "gpt-4o")),
        &[],
    )
    .await;
    let health = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let health: Value = reqwest::get(gateway.url("/health"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if health["providers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !p["probes"].as_array().unwrap().is_empty())
            {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the probes answer");
    assert_eq!(health["providers"][0]["probes"][0]["ok"], true, "{health}");
    assert_eq!(health["providers"][1]["probes"][0]["ok"], false, "{health}");
    assert_eq!(
        health["providers"][1]["probes"][0]["error"], "unauthorized",
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_limit_is_shared_by_every_instance_through_redis() {
    let Some(redis) = llm_testkit::RedisServer::start() else {
        return; // No redis-server here (CI requires it: LLM_TOWER_REQUIRE_REDIS).
    };
    let mock = mock().await;
    let config = providers(&mock)
        + &format!(
            "\n[auth]\nshared = {{ url = \"{}\", key_prefix = \"gw-test-{}:\" }}\n\n[[auth.keys]]\nname = \"team-b\"\nkey_env = \"TEAM_B_KEY\"\nrate_limit = {{ requests = {{ limit = 3, per = \"1m\" }} }}\n",
            redis.url(),
            std::process::id()
        );
    let a = Running::start(&config, &[("TEAM_B_KEY", TEAM_B)]).await;
    let b = Running::start(&config, &[("TEAM_B_KEY", TEAM_B)]).await;
    let mut statuses = Vec::new();
    for gateway in [&a, &b, &a, &b] {
        statuses.push(
            post(
                &gateway.url("/v1/chat/completions"),
                Some(TEAM_B),
                &chat("fast"),
            )
            .await
            .0,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "three a minute across both instances"
    );
}

#[tokio::test]
async fn the_command_line_refuses_mock_providers_beside_a_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_llm-gateway"))
        .args(["--mock", "--config", "gateway.toml"])
        .env_remove("GATEWAY_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
