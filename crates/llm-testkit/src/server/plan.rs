//! Fault plans: which requests get which fault, as scripted sequences or time windows.

use std::path::Path;
use std::time::Duration;

use llm_core::ConfigError;
use llm_core::config::{duration, option_duration};
use serde::{Deserialize, Serialize};

/// The wire format a request arrived in, by the path it was sent to.
///
/// ```
/// use llm_testkit::server::Route;
///
/// assert_eq!(Route::Anthropic.path(), "/v1/messages");
/// assert_eq!("gemini".parse::<Route>().unwrap(), Route::Gemini);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Route {
    /// `POST /v1/chat/completions` — OpenAI and any OpenAI-compatible server.
    #[serde(rename = "openai")]
    OpenAi,
    /// `POST /openai/deployments/{deployment}/chat/completions?api-version=…`.
    Azure,
    /// `POST /api/v1/chat/completions` — OpenAI's shape plus `: OPENROUTER PROCESSING`
    /// comments, numeric error codes and errors inside 200 streams.
    #[serde(rename = "openrouter")]
    OpenRouter,
    /// `POST /v1/messages` — named SSE events, `ping`, `event: error`.
    Anthropic,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
    /// (CRLF framing, no `[DONE]`).
    Gemini,
    /// `POST /api/chat` — NDJSON, `done: true`.
    Ollama,
}

impl Route {
    /// Every route, in the order above.
    pub const ALL: [Route; 6] = [
        Route::OpenAi,
        Route::Azure,
        Route::OpenRouter,
        Route::Anthropic,
        Route::Gemini,
        Route::Ollama,
    ];

    /// The route's name in plans and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Route::OpenAi => "openai",
            Route::Azure => "azure",
            Route::OpenRouter => "openrouter",
            Route::Anthropic => "anthropic",
            Route::Gemini => "gemini",
            Route::Ollama => "ollama",
        }
    }

    /// The path (template) the route answers on.
    pub const fn path(self) -> &'static str {
        match self {
            Route::OpenAi => "/v1/chat/completions",
            Route::Azure => "/openai/deployments/{deployment}/chat/completions",
            Route::OpenRouter => "/api/v1/chat/completions",
            Route::Anthropic => "/v1/messages",
            Route::Gemini => "/v1beta/models/{model}:generateContent",
            Route::Ollama => "/api/chat",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Route {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::ALL
            .into_iter()
            .find(|route| route.name() == s)
            .ok_or_else(|| {
                ConfigError::new(
                    "route",
                    format!(
                        "must be one of openai, azure, openrouter, anthropic, gemini, ollama (got {s:?})"
                    ),
                )
            })
    }
}

/// How a 429's `Retry-After` is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DelayFormat {
    /// `retry-after: 2` (whole seconds, rounded up).
    #[default]
    Seconds,
    /// `retry-after-ms: 1500` (OpenAI's and Azure's extension), no `retry-after`.
    Millis,
    /// `retry-after: Sun, 06 Nov 1994 08:49:37 GMT` — an HTTP-date that far in the future.
    HttpDate,
}

/// One fault the mock provider injects, written in the provider's own bytes (see the crate
/// README for the exact status, headers and body of each fault on each route).
///
/// In TOML a fault is a table tagged by `fault`:
///
/// ```
/// use std::time::Duration;
/// use llm_testkit::server::{DelayFormat, Fault};
///
/// let fault: Fault = toml::from_str(r#"
///     fault = "rate_limited"
///     retry_after = "1500ms"
///     format = "millis"
/// "#).unwrap();
/// assert_eq!(fault, Fault::RateLimited { retry_after: Some(Duration::from_millis(1500)), format: DelayFormat::Millis });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// Answer normally.
    Ok,
    /// A rate-limit 429 — with a server delay when `retry_after` is set (Gemini carries it
    /// as `RetryInfo.retryDelay` in the body), without one otherwise.
    RateLimited {
        /// The delay the server asks for.
        #[serde(
            default,
            with = "option_duration",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after: Option<Duration>,
        /// How the delay is written.
        #[serde(default)]
        format: DelayFormat,
    },
    /// Exhausted quota or credits: OpenAI 429 `insufficient_quota`, OpenRouter 402,
    /// Anthropic's 400 "credit balance is too low", Gemini 429 with a per-day quota id.
    QuotaExceeded,
    /// OpenAI's 429 "Request too large … on tokens per min": the request alone exceeds the
    /// per-minute budget (Anthropic: 413 `request_too_large`).
    RequestTooLarge,
    /// A bare status with the route's body for it (500, 502, 503, 504, 529, …); 502s come as
    /// an HTML page, as gateways in front of real providers send them.
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The provider is overloaded: Anthropic 529 `overloaded_error`, Gemini 503
    /// `UNAVAILABLE`, OpenAI 503, Ollama 503 "server busy".
    Overloaded,
    /// The key was refused: 401 (Gemini: 400 `API_KEY_INVALID`).
    Unauthorized,
    /// The model does not exist: 404 (Azure: `DeploymentNotFound`).
    ModelNotFound,
    /// The prompt exceeds the model's context window: 400 with the route's message.
    ContextLength,
    /// The prompt was refused by a content policy: OpenAI 400 `content_policy_violation`,
    /// Azure 400 `content_filter`, OpenRouter 403 moderation, Anthropic 200
    /// `stop_reason: "refusal"`, Gemini 200 `promptFeedback.blockReason`. Ollama has none
    /// and answers normally.
    ContentFilter,
    /// The connection is reset before any response header is written.
    Reset,
    /// The request is read and never answered (the connection stays open).
    NoResponse,
    /// Headers at once, the first content chunk after `delay` (non-streaming: the whole
    /// response after `delay`).
    SlowFirstToken {
        /// How long the first token takes.
        #[serde(with = "duration")]
        delay: Duration,
    },
    /// The stream ends after `chunks` content chunks, without finish reason or terminator:
    /// a clean end of body, or with `abort = true` a connection dropped mid-body.
    /// Non-streaming requests answer normally.
    CutAfter {
        /// Content chunks delivered before the cut.
        chunks: usize,
        /// Drop the connection instead of ending the body cleanly.
        #[serde(default)]
        abort: bool,
    },
    /// The stream stops sending after `chunks` content chunks and keeps the connection open.
    StallAfter {
        /// Content chunks delivered before the stall.
        chunks: usize,
    },
    /// Content chunk number `chunk` (1-based) is truncated JSON; the rest of the stream
    /// follows normally (non-streaming: the whole body is truncated JSON).
    MalformedAt {
        /// The 1-based index of the malformed content chunk.
        chunk: usize,
    },
    /// After `chunks` content chunks the route's in-stream error event (OpenAI
    /// `data: {"error":…}`, OpenRouter's error chunk with `finish_reason: "error"`, Anthropic
    /// `event: error` `overloaded_error`, Gemini `data: {"error":…}`, Ollama's `{"error":…}`
    /// line), then the body ends.
    ErrorAfter {
        /// Content chunks delivered before the error event.
        chunks: usize,
    },
    /// The stream ends after its finish reason and usage without `data: [DONE]` (Anthropic:
    /// without `message_stop`, which makes it truncated; Gemini and Ollama have no separate
    /// terminator and answer normally).
    NoDone,
    /// A model that refuses an assistant prefill (as Claude 4.6 and later do): a request whose
    /// conversation ends with an assistant message gets a 400 invalid request ("This model
    /// does not support assistant message prefill"); any other request is answered normally.
    RejectPrefill,
}

impl Fault {
    /// `Fault::Status { status }`.
    pub const fn status(status: u16) -> Fault {
        Fault::Status { status }
    }

    /// A 429 asking for `retry_after`, written as `retry-after` seconds.
    pub const fn rate_limited(retry_after: Duration) -> Fault {
        Fault::RateLimited {
            retry_after: Some(retry_after),
            format: DelayFormat::Seconds,
        }
    }

    /// A short name for logs: `ok`, `status 503`, `cut_after 5`, ….
    pub fn label(&self) -> String {
        match self {
            Fault::Ok => "ok".into(),
            Fault::RateLimited { retry_after, .. } => match retry_after {
                Some(d) => format!("rate_limited {}", humantime::format_duration(*d)),
                None => "rate_limited".into(),
            },
            Fault::QuotaExceeded => "quota_exceeded".into(),
            Fault::RequestTooLarge => "request_too_large".into(),
            Fault::Status { status } => format!("status {status}"),
            Fault::Overloaded => "overloaded".into(),
            Fault::Unauthorized => "unauthorized".into(),
            Fault::ModelNotFound => "model_not_found".into(),
            Fault::ContextLength => "context_length".into(),
            Fault::ContentFilter => "content_filter".into(),
            Fault::Reset => "reset".into(),
            Fault::NoResponse => "no_response".into(),
            Fault::SlowFirstToken { delay } => {
                format!("slow_first_token {}", humantime::format_duration(*delay))
            }
            Fault::CutAfter { chunks, abort } => {
                format!("cut_after {chunks}{}", if *abort { " (abort)" } else { "" })
            }
            Fault::StallAfter { chunks } => format!("stall_after {chunks}"),
            Fault::MalformedAt { chunk } => format!("malformed_at {chunk}"),
            Fault::ErrorAfter { chunks } => format!("error_after {chunks}"),
            Fault::NoDone => "no_done".into(),
            Fault::RejectPrefill => "reject_prefill".into(),
        }
    }
}

/// Added latency before a response: fixed, or drawn uniformly from a range with the plan's
/// seed (so a run is repeatable).
///
/// In TOML: `latency = "20ms"` or `latency = { min = "5ms", max = "50ms" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Latency {
    /// Always this long.
    Fixed(#[serde(with = "duration")] Duration),
    /// Uniformly between `min` and `max`.
    Uniform {
        /// Shortest latency.
        #[serde(with = "duration")]
        min: Duration,
        /// Longest latency.
        #[serde(with = "duration")]
        max: Duration,
    },
}

impl Latency {
    pub(crate) fn draw(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_nanos() as u64;
                min + Duration::from_nanos(if span == 0 { 0 } else { rng.u64(0..=span) })
            }
        }
    }
}

/// Which requests a rule applies to and what happens to them.
///
/// A rule matches by model (exact, or a prefix ending in `*`), route and streaming, inside
/// its time window (measured from the server's start or last reset). It injects either one
/// `fault` into every matching request, or a `sequence` — one fault per matching request —
/// after which it stops matching (or starts over with `repeat`). The first matching rule
/// decides; no match answers normally.
///
/// ```
/// use std::time::Duration;
/// use llm_testkit::server::{Fault, Route, Rule};
///
/// // The first two calls for gpt-4o fail with 503 and 429, then it answers.
/// let flaky = Rule::model("gpt-4o").sequence([Fault::status(503), Fault::rate_limited(Duration::from_secs(1))]);
/// // Anthropic is overloaded for the first 30 seconds.
/// let outage = Rule::any().route(Route::Anthropic).fault(Fault::Overloaded).down_for(Duration::from_secs(30));
/// # let _ = (flaky, outage);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// The model it applies to: exact, or a prefix followed by `*`; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The route it applies to; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// Only streaming (`true`) or only non-streaming (`false`) requests; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// The window opens this long after start (or reset).
    #[serde(
        default,
        with = "option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Duration>,
    /// The window closes this long after start (or reset): "down for D, then healthy".
    #[serde(
        default,
        with = "option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Duration>,
    /// The fault every matching request gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// One fault per matching request, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<Fault>,
    /// Start the sequence over when it is used up, instead of no longer matching.
    #[serde(default)]
    pub repeat: bool,
    /// Latency added to matching requests (replaces the plan's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Pause between stream chunks for matching requests (replaces the plan's).
    #[serde(
        default,
        with = "option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub chunk_interval: Option<Duration>,
}

impl Rule {
    /// A rule for every request.
    pub fn any() -> Rule {
        Rule::default()
    }

    /// A rule for requests naming `model` (a trailing `*` matches a prefix).
    pub fn model(model: impl Into<String>) -> Rule {
        Rule {
            model: Some(model.into()),
            ..Rule::default()
        }
    }

    /// Only requests on `route`.
    #[must_use]
    pub fn route(mut self, route: Route) -> Rule {
        self.route = Some(route);
        self
    }

    /// Only streaming (`true`) or only non-streaming (`false`) requests.
    #[must_use]
    pub fn streaming(mut self, stream: bool) -> Rule {
        self.stream = Some(stream);
        self
    }

    /// Every matching request gets `fault`.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Rule {
        self.fault = Some(fault);
        self
    }

    /// Matching requests get these faults one by one; then the rule stops matching.
    #[must_use]
    pub fn sequence(mut self, faults: impl IntoIterator<Item = Fault>) -> Rule {
        self.sequence = faults.into_iter().collect();
        self
    }

    /// Start the sequence over when it is used up.
    #[must_use]
    pub fn repeat(mut self) -> Rule {
        self.repeat = true;
        self
    }

    /// Active only from `from` to `until` after start (or reset).
    #[must_use]
    pub fn between(mut self, from: Duration, until: Duration) -> Rule {
        self.from = Some(from);
        self.until = Some(until);
        self
    }

    /// Active for the first `period` after start (or reset): down for `period`, then healthy.
    #[must_use]
    pub fn down_for(mut self, period: Duration) -> Rule {
        self.until = Some(period);
        self
    }

    /// Adds `latency` to matching requests.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Rule {
        self.latency = Some(latency);
        self
    }

    /// Pauses `interval` between stream chunks of matching requests.
    #[must_use]
    pub fn chunk_interval(mut self, interval: Duration) -> Rule {
        self.chunk_interval = Some(interval);
        self
    }

    pub(crate) fn matches(
        &self,
        route: Route,
        model: &str,
        stream: bool,
        elapsed: Duration,
    ) -> bool {
        let model_matches = match self.model.as_deref() {
            None | Some("*") => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => model == pattern,
            },
        };
        model_matches
            && self.route.is_none_or(|r| r == route)
            && self.stream.is_none_or(|s| s == stream)
            && self.from.is_none_or(|from| elapsed >= from)
            && self.until.is_none_or(|until| elapsed < until)
    }

    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let field = |name: &str| format!("rule[{index}].{name}");
        match (&self.fault, self.sequence.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    field("sequence"),
                    "cannot be combined with `fault`: give one fault for every request or a sequence",
                ));
            }
            (None, true) => {
                return Err(ConfigError::new(
                    field("fault"),
                    "is missing: a rule needs a `fault` or a non-empty `sequence`",
                ));
            }
            _ => {}
        }
        if let (Some(from), Some(until)) = (self.from, self.until) {
            if until <= from {
                return Err(ConfigError::new(
                    field("until"),
                    format!(
                        "must be later than `from` ({} <= {})",
                        humantime::format_duration(until),
                        humantime::format_duration(from)
                    ),
                ));
            }
        }
        if let Some(Latency::Uniform { min, max }) = self.latency {
            if max < min {
                return Err(ConfigError::new(
                    field("latency.max"),
                    "must not be shorter than latency.min",
                ));
            }
        }
        for (i, fault) in self.fault.iter().chain(&self.sequence).enumerate() {
            if let Fault::MalformedAt { chunk: 0 } = fault {
                let name = if self.fault.is_some() {
                    field("fault.chunk")
                } else {
                    field(&format!("sequence[{i}].chunk"))
                };
                return Err(ConfigError::new(name, "is 1-based and must be at least 1"));
            }
        }
        Ok(())
    }
}

/// A simulated per-key budget: requests and tokens per minute, refilled continuously. Over
/// budget the server answers 429 with the provider's rate-limit body, `retry-after` and
/// reset headers that say when the budget returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSim {
    /// Requests per minute per API key.
    pub requests_per_minute: u64,
    /// Tokens (prompt + completion) per minute per API key.
    pub tokens_per_minute: u64,
}

impl Default for RateLimitSim {
    /// A budget no test reaches (1,000,000 RPM, 1,000,000,000 TPM): realistic headers,
    /// never a 429.
    fn default() -> Self {
        RateLimitSim {
            requests_per_minute: 1_000_000,
            tokens_per_minute: 1_000_000_000,
        }
    }
}

/// Everything the mock provider does: the answer's length, pacing, the rate-limit budget and
/// the fault rules. Loads from TOML (see the crate README for every field).
///
/// ```
/// use llm_testkit::server::{Fault, Plan};
///
/// let plan = Plan::from_toml(r#"
///     answer_tokens = 40
///
///     [[rule]]
///     model = "gpt-4o"
///     sequence = [{ fault = "status", status = 503 }, { fault = "ok" }]
/// "#).unwrap();
/// assert_eq!(plan.answer_tokens, 40);
/// assert_eq!(plan.rules[0].sequence[0], Fault::status(503));
///
/// let err = Plan::from_toml("[[rule]]\nmodel = \"x\"").unwrap_err();
/// assert_eq!(err.field(), "rule[0].fault");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Plan {
    /// Tokens in the canonical answer ([`canonical_answer`](crate::server::canonical_answer)); a
    /// smaller `max_tokens` in the request cuts it with finish reason `length`.
    #[serde(default = "default_answer_tokens")]
    pub answer_tokens: usize,
    /// Pause between stream chunks.
    #[serde(
        default,
        with = "option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub chunk_interval: Option<Duration>,
    /// Latency added to every response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Seed of the latency draws.
    #[serde(default)]
    pub seed: u64,
    /// The per-key budget; a generous default when absent.
    #[serde(default)]
    pub rate_limit: RateLimitSim,
    /// Fault rules, first match wins.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

fn default_answer_tokens() -> usize {
    60
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            answer_tokens: default_answer_tokens(),
            chunk_interval: None,
            latency: None,
            seed: 0,
            rate_limit: RateLimitSim::default(),
            rules: Vec::new(),
        }
    }
}

impl Plan {
    /// Parses and validates a TOML plan. Errors name the field (`rule[2].until`).
    pub fn from_toml(text: &str) -> Result<Plan, ConfigError> {
        let plan: Plan = toml::from_str(text).map_err(|err| {
            let message = err.message().to_owned();
            ConfigError::new("plan", message)
        })?;
        plan.validate()?;
        Ok(plan)
    }

    /// Reads a TOML plan from `path`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Plan, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new(path.display().to_string(), format!("cannot be read: {err}"))
        })?;
        Plan::from_toml(&text).map_err(|err| err.in_section(&path.display().to_string()))
    }

    /// Checks every rule and value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.answer_tokens == 0 {
            return Err(ConfigError::new("answer_tokens", "must be at least 1"));
        }
        if self.rate_limit.requests_per_minute == 0 {
            return Err(ConfigError::new(
                "rate_limit.requests_per_minute",
                "must be at least 1",
            ));
        }
        if self.rate_limit.tokens_per_minute == 0 {
            return Err(ConfigError::new(
                "rate_limit.tokens_per_minute",
                "must be at least 1",
            ));
        }
        if let Some(Latency::Uniform { min, max }) = self.latency {
            if max < min {
                return Err(ConfigError::new(
                    "latency.max",
                    "must not be shorter than latency.min",
                ));
            }
        }
        self.rules
            .iter()
            .enumerate()
            .try_for_each(|(i, rule)| rule.validate(i))
    }
}
