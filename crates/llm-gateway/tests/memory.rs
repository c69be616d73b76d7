//! The gateway's memory under large request bodies (RELIABILITY.md, "Memory per request"):
//! 200 concurrent requests of 1 MiB each against a slow upstream. The byte budget admits what
//! fits and answers the rest at once with a 503; the process's peak resident memory stays
//! bounded. Its own test binary, so that no other test's memory counts.

use std::time::Duration;

use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use llm_testkit::server::{MockProvider, Plan};
use tokio::net::TcpListener;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_one_mib_bodies_stay_inside_the_byte_budget() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc on this platform");
        return;
    }
    let mock = MockProvider::builder()
        .plan(Plan::from_toml("latency = \"1s\"\n").unwrap())
        .api_key("k")
        .start()
        .await
        .unwrap();
    let text = format!(
        r#"
max_body_bytes = 2097152
[server]
max_in_flight_bytes = 16777216

[[providers]]
name = "llm"
kind = "openai_compatible"
base_url = "{}/v1"
model = "m"
api_key = "k"
"#,
        mock.base_url()
    );
    let config = GatewayConfig::from_toml(&text, "memory.toml", &|_| None).unwrap();
    let gateway = Gateway::new(&config, &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    // One body, shared by every request (the client holds it once).
    let prompt = "word ".repeat((1 << 20) / 5);
    let body = bytes::Bytes::from(
        serde_json::json!({
            "model": "m",
            "max_tokens": 4,
            "messages": [{ "role": "user", "content": prompt }],
        })
        .to_string(),
    );
    drop(prompt);
    let client = reqwest::Client::new();
    let before = status_kib("VmRSS:");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let peak = status_kib("VmHWM:");
    let answered = statuses.iter().filter(|s| **s == 200).count();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "200 requests of 1 MiB: {answered} answered, {shed} shed with 503; peak RSS {} MiB (+{grown_mib} MiB)",
        peak / 1024
    );
    assert_eq!(answered + shed, 200, "{statuses:?}");
    assert!(answered >= 8, "the budget admits what fits: {answered}");
    assert!(grown_mib < 192, "peak RSS grew by {grown_mib} MiB");
}
