//! The demo: with no configuration and no API keys, the gateway runs over four embedded mock
//! providers (llm-testkit's `MockProvider`, speaking each provider's real wire format) whose
//! fault plans make every layer show itself within a minute of `curl` traffic:
//!
//! - **openai** (the default provider) cycles through an answer, a `429` with
//!   `Retry-After: 5` (the gateway moves on to the next provider at once, and the limiter
//!   pauses openai for 5 s), an answer, an answer 3 s late (past the 2.5 s timeout: retried
//!   1 s later), two answers and a `500` (retried). Every third stream it serves is cut after
//!   15 chunks: the `gpt-4o-mini` route continues it on the next target that answers (its
//!   `recovery` policy); a route without one ends such a stream with an error event.
//! - **anthropic** is overloaded (`529`) for the first 45 s after start: the requests that
//!   fall back to it are retried, its breaker trips after 3 failures in a row, stays open
//!   20 s, then probes until the outage is over.
//! - **gemini** and **openrouter** answer, with some latency.
//!
//! Every mock answers with the same deterministic text (`"Alfa-1 Bravo-2 Charlie-3 …"`), on
//! every front door (`/v1/chat/completions`, `/v1/messages`, `/v1/responses`, `/api/chat`);
//! `text-embedding-3-small` answers `/v1/embeddings`, falling back to Gemini.

use llm_testkit::server::{MockProvider, Plan};

use super::config::{ConfigFileError, GatewayConfig};

/// The key the mocks expect and the gateway sends (never printed).
const DEMO_KEY: &str = "demo-key-not-a-secret";

const OPENAI_PLAN: &str = r#"
latency = { min = "20ms", max = "120ms" }
chunk_interval = "25ms"

[[rule]]
stream = true
sequence = [{ fault = "ok" }, { fault = "ok" }, { fault = "cut_after", chunks = 15 }]
repeat = true

[[rule]]
sequence = [
  { fault = "ok" },
  { fault = "rate_limited", retry_after = "5s" },
  { fault = "ok" },
  { fault = "slow_first_token", delay = "3s" },
  { fault = "ok" },
  { fault = "ok" },
  { fault = "status", status = 500 },
]
repeat = true
"#;

const ANTHROPIC_PLAN: &str = r#"
latency = { min = "30ms", max = "150ms" }
chunk_interval = "25ms"

[[rule]]
until = "45s"
fault = { fault = "overloaded" }
"#;

const HEALTHY_PLAN: &str = r#"
latency = { min = "50ms", max = "250ms" }
chunk_interval = "25ms"
"#;

/// The demo's gateway configuration; `{openai}` and the like become the mocks' URLs.
const DEMO_CONFIG: &str = r#"
request_timeout = "30s"

[[providers]]
name = "openai"
api_key = "{key}"
base_url = "{openai}/v1"
# Short enough that the plan's 3 s answer times out (a 60-token stream takes about 1.5 s).
timeouts = { connect = "2s", first_token = "2s", idle = "2s", total = "2500ms" }
rate_limit = { requests = { limit = 120, per = "1m" } }

[[providers]]
name = "anthropic"
api_key = "{key}"
base_url = "{anthropic}"
timeouts = { connect = "2s", first_token = "5s", idle = "5s", total = "30s" }
retry = { max_retries = 2 }
breaker = { consecutive_failures = 3, open_duration = "20s", open_jitter = 0.0 }

[[providers]]
name = "gemini"
api_key = "{key}"
base_url = "{gemini}/v1beta"
timeouts = { connect = "2s", first_token = "5s", idle = "5s", total = "30s" }

[[providers]]
name = "openrouter"
api_key = "{key}"
base_url = "{openrouter}/api/v1"
timeouts = { connect = "2s", first_token = "5s", idle = "5s", total = "30s" }

# Streams cut mid-answer are continued on the next target that answers.
[[routes]]
model = "gpt-4o-mini"
targets = [
  { provider = "openai", model = "gpt-4o-mini" },
  { provider = "anthropic", model = "claude-3-5-haiku-latest" },
  { provider = "gemini", model = "gemini-2.0-flash" },
]
recovery = { after_output = "continue" }

[[routes]]
model = "claude-3-5-haiku-latest"
targets = [
  { provider = "anthropic" },
  { provider = "openai", model = "gpt-4o-mini" },
]

[[routes]]
model = "gemini-2.0-flash"
targets = [
  { provider = "gemini" },
  { provider = "openrouter", model = "google/gemini-2.0-flash-001" },
]

# Any other model name goes to OpenRouter as it is, falling back to OpenAI's gpt-4o-mini.
[[routes]]
model = "*"
targets = [
  { provider = "openrouter" },
  { provider = "openai", model = "gpt-4o-mini" },
]

# Embeddings (`POST /v1/embeddings`): OpenAI's model, then Gemini's asked for the same size.
[[embedding_routes]]
model = "text-embedding-3-small"
dimensions = 256
targets = [
  { provider = "openai", model = "text-embedding-3-small" },
  { provider = "gemini", model = "gemini-embedding-001" },
]
"#;

/// The running mock providers; they stop when this is dropped.
#[derive(Debug)]
pub struct DemoProviders {
    /// openai, anthropic, gemini, openrouter.
    pub mocks: Vec<(&'static str, MockProvider)>,
}

impl DemoProviders {
    /// Starts the four mocks on loopback ports.
    pub async fn start() -> std::io::Result<DemoProviders> {
        let mut mocks = Vec::new();
        for (name, plan) in [
            ("openai", OPENAI_PLAN),
            ("anthropic", ANTHROPIC_PLAN),
            ("gemini", HEALTHY_PLAN),
            ("openrouter", HEALTHY_PLAN),
        ] {
            let plan = Plan::from_toml(plan).expect("the demo plans are valid");
            let mock = MockProvider::builder()
                .plan(plan)
                .api_key(DEMO_KEY)
                .start()
                .await?;
            mocks.push((name, mock));
        }
        Ok(DemoProviders { mocks })
    }

    /// The gateway configuration over these mocks.
    pub fn config(&self) -> Result<GatewayConfig, ConfigFileError> {
        let mut text = DEMO_CONFIG.replace("{key}", DEMO_KEY);
        for (name, mock) in &self.mocks {
            text = text.replace(&format!("{{{name}}}"), &mock.base_url());
        }
        GatewayConfig::from_toml(&text, "built-in demo configuration", &|_| None)
    }
}
