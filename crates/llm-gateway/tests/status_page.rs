//! The status page (`GET /status`) loaded in headless Chromium, against the gateway binary
//! over mock providers, after a scenario that trips a breaker and makes requests fall back:
//! the page, rendered by the browser from `/status/data`, shows both. Also writes a
//! screenshot of it to `target/tmp/status-page.png` (the README's comes from there).
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it); `CHROMIUM` names another
//! binary.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Running, TempDir};

const UPSTREAM_KEY: &str = "sk-upstream-test-key-0123456789";

/// The browser to run: `CHROMIUM`, or Debian's `chromium`. `None` when it is not installed
/// and `LLM_TOWER_REQUIRE_BROWSER` is not set (`.ci/run` sets it, and installs Chromium):
/// the test then says so and passes, as the Redis tests do without a server.
fn browser() -> Option<String> {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let found = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(binary);
    }
    assert!(
        std::env::var_os("LLM_TOWER_REQUIRE_BROWSER").is_none(),
        "no {binary}: install Debian's chromium, as .ci/run does"
    );
    eprintln!("SKIPPED: no {binary} (install Debian's chromium, as .ci/run does)");
    None
}

/// Runs headless Chromium on `url` with `args`, returning what it printed; bounded in time.
fn chromium(binary: &str, url: &str, args: &[&str]) -> String {
    let profile = TempDir::new();
    // NOTE: the flags this machine's closed network needs (no background connections), and
    // a fresh profile; `--virtual-time-budget` lets the page's script fetch and render
    // before the DOM is read.
    let output = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
            &format!("--user-data-dir={}", profile.0.display()),
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {binary} ({err}): install Debian's chromium, as .ci/run does")
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The opening tag of the first element whose tag carries `attribute`.
fn tag_with<'a>(dom: &'a str, attribute: &str) -> &'a str {
    let at = dom
        .find(attribute)
        .unwrap_or_else(|| panic!("no {attribute} in the rendered page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

#[tokio::test]
async fn the_page_shows_a_tripped_breaker_and_a_fallback() {
    let (down, up) = support::overloaded_and_up(UPSTREAM_KEY).await;
    let config = format!(
        r#"
[[providers]]
name = "anthropic"
api_key = "{UPSTREAM_KEY}"
base_url = "{down}"
model = "claude-sonnet-4-5"
retry = {{ max_retries = 1, base_delay = "10ms", max_delay = "20ms" }}
breaker = {{ consecutive_failures = 2, open_duration = "60s", open_jitter = 0.0 }}

# A pool of two keys, the first revoked: it leaves rotation after one request.
[[providers]]
name = "openai"
kind = "openai_compatible"
base_url = "{up}/v1"
model = "gpt-4o-mini"
rate_limit = {{ requests = {{ limit = 600, per = "1m" }} }}
keys = [{{ name = "old", api_key = "sk-revoked-0123456789" }}, {{ name = "main", api_key = "{UPSTREAM_KEY}" }}]

[[routes]]
model = "claude"
targets = [{{ provider = "anthropic", model = "claude-sonnet-4-5" }}, {{ provider = "openai", model = "gpt-4o-mini" }}]
"#,
        down = down.base_url(),
        up = up.base_url(),
    );
    let gateway = Running::start(&config, &[]).await;
    let client = reqwest::Client::new();
    // 1: anthropic fails twice (a retry), one failure to its breaker, and openai answers;
    // 2: anthropic fails, its breaker opens (the retry hands over at once), openai answers;
    // 3: anthropic is skipped at once, openai answers.
    for _ in 0..3 {
        let answer = client
            .post(gateway.url("/v1/chat/completions"))
            .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        // A pool's answer names its member.
        assert_eq!(answer.headers()["x-gateway-provider"], "openai/main");
    }
    assert_eq!(down.attempts().len(), 3);

    let data: Value = client
        .get(gateway.url("/status/data"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(data["providers"][0]["breaker"]["state"], "open");
    assert_eq!(data["providers"][0]["recent"]["successRate"], 0.0);
    // The pool's first request met the revoked key, then the other key answered it.
    assert_eq!(data["providers"][1]["recent"]["successRate"], 0.75);
    assert_eq!(data["providers"][1]["members"][0]["state"], "retired");
    assert_eq!(data["providers"][1]["members"][1]["state"], "available");
    assert_eq!(data["requests"].as_array().unwrap().len(), 3);
    let html = client
        .get(gateway.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "one self-contained page, no external assets"
    );

    // What a browser shows, after the page's script fetched and rendered the data.
    let Some(binary) = browser() else { return };
    let url = gateway.url("/status");
    let dom = tokio::task::spawn_blocking({
        let (binary, url) = (binary.clone(), url.clone());
        move || chromium(&binary, &url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the script did not render:\n{dom}"
    );
    assert!(
        tag_with(&dom, r#"data-provider="anthropic""#).contains(r#"data-breaker="open""#),
        "{dom}"
    );
    assert!(
        tag_with(&dom, r#"data-provider="openai""#).contains(r#"data-breaker="closed""#),
        "{dom}"
    );
    assert!(
        tag_with(&dom, r#"data-status="#).contains(r#"data-status="degraded""#),
        "{dom}"
    );
    // Three requests, newest first, each fallen back; the newest skipped anthropic at once.
    assert_eq!(dom.matches(r#"data-fallback="true""#).count(), 3, "{dom}");
    assert!(dom.contains(r#"data-outcome="circuit_open""#), "{dom}");
    assert!(
        tag_with(&dom, r#"data-member="old""#).contains(r#"data-state="retired""#),
        "{dom}"
    );
    assert!(
        tag_with(&dom, r#"data-member="main""#).contains(r#"data-state="available""#),
        "{dom}"
    );
    // The revoked key's request went to the other key: handed over, not a fallback.
    assert!(dom.contains("→ next member"), "{dom}");
    assert!(
        dom.contains("fell back") && dom.contains("⇢ fallback"),
        "{dom}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let screenshot = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || {
        chromium(&binary, &url, &[&screenshot, "--window-size=1280,900"]);
    })
    .await
    .unwrap();
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot"
    );
}
