//! The gateway's configuration: a TOML file, environment overrides, and validation whose
//! errors name the file, the field and the reason.
//!
//! ```toml
//! listen = "127.0.0.1:3000"
//! request_timeout = "60s"          # overall deadline of one gateway request
//! max_body_bytes = 1048576
//!
//! [[providers]]
//! name = "openai"                  # kind defaults to the name when it is a known kind
//! model = "gpt-4o-mini"            # the model `/api/chat` asks this provider for
//! api_key_env = "OPENAI_API_KEY"
//! timeouts = { connect = "5s", first_token = "20s", idle = "30s", total = "300s" }
//! retry = { max_retries = 3, base_delay = "1s" }
//! breaker = { consecutive_failures = 3, open_duration = "30s", shared = { url = "redis://127.0.0.1:6379" } }
//! rate_limit = { requests = { limit = 500, per = "1m" }, shared = { url = "redis://127.0.0.1:6379" } }
//!
//! [[routes]]
//! model = "fast"                   # what clients of /v1/chat/completions ask for
//! targets = [{ provider = "openai", model = "gpt-4o-mini" }, { provider = "anthropic", model = "claude-3-5-haiku-latest" }]
//! recovery = { after_output = "continue", hold_back_tokens = 8 }   # repair broken streams
//!
//! [[routes]]
//! model = "*"                      # any other name: same name upstream, then a fallback
//! targets = [{ provider = "openrouter" }, { provider = "openai", model = "gpt-4o-mini" }]
//! ```
//!
//! Each provider's `retry`, `breaker` and `rate_limit` tables override the gateway's defaults
//! field by field ([`default_retry`], [`default_breaker`], [`default_rate_limit`]).
//!
//! NOTE: the layers are the file read by `toml`, each section through `serde_path_to_error`
//! (an error names the whole key path, `providers[0].timeouts.connect`), then the
//! environment. `figment` was weighed and not taken: its environment provider cannot address
//! an element of an array by a name inside it, which the per-provider variables need
//! (`GATEWAY_<NAME>_BASE_URL`), and its paths name array elements by position only, after
//! the defaults are merged.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use llm_providers::recovery::{Prefill, RecoveryPolicy};
use llm_providers::{ProviderConfig, ProviderKind};
use llm_tower::__private::parse_duration;
use llm_tower::RedisConfig;
use llm_tower::balance::PoolConfig;
use llm_tower::breaker::BreakerConfig;
use llm_tower::ratelimit::{Mode, RateLimitConfig};
use llm_tower::retry::{Jitter, RetryConfig};
use llm_tower::{ConfigError, ErrorKind, ErrorKinds};
use serde::{Deserialize, Serialize};

pub use crate::keys::{AuthConfig, ENDPOINTS, KeyConfig};

/// A configuration the gateway refused, with where it came from.
#[derive(Debug)]
pub struct ConfigFileError {
    /// The file (or `environment`, or `built-in demo`).
    pub source: String,
    /// The field at fault and why.
    pub error: ConfigError,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}` {}",
            self.source,
            self.error.field(),
            self.error.reason()
        )
    }
}

impl std::error::Error for ConfigFileError {}

/// Everything the gateway needs to start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The overall deadline of one gateway request: retries and fallbacks fit inside it.
    pub request_timeout: Duration,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Upstream providers, in order: the first is `/api/chat`'s default, and the others are
    /// its fallbacks in this order.
    pub providers: Vec<ProviderSettings>,
    /// `/v1/chat/completions` routes: model name → chain of targets.
    pub routes: Vec<RouteConfig>,
    /// `/v1/embeddings` routes: model name → chain of targets of one vector size.
    pub embedding_routes: Vec<EmbeddingRouteConfig>,
    /// The front door's timeouts and caps.
    pub server: ServerLimits,
    /// Who may call: the gateway's API keys.
    pub auth: AuthConfig,
    /// Where `/health` and `/metrics` are served and who may read them.
    pub admin: AdminConfig,
    /// OpenTelemetry export: traces and metrics over OTLP, when an endpoint is set.
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: traces and metrics exported over OTLP/HTTP to a collector. Without an
/// endpoint nothing is exported (`/metrics` serves Prometheus either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP address (`http://127.0.0.1:4318`): spans go to
    /// `/v1/traces`, metrics to `/v1/metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (the default) or `http/json`.
    pub otlp_protocol: OtlpProtocol,
    /// The `service.name` of what is exported.
    pub service_name: String,
    /// How often metrics are exported.
    #[serde(with = "llm_tower::config::duration")]
    pub metrics_interval: Duration,
    /// Which spans and events are exported, as `RUST_LOG` directives: by default the
    /// requests' and attempts' spans, and the retries and fallbacks as their events.
    pub filter: String,
}

/// How OTLP is written over HTTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf (`application/x-protobuf`), what collectors expect by default.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// JSON (`application/json`).
    #[serde(rename = "http/json")]
    HttpJson,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            service_name: "llm-gateway".to_owned(),
            metrics_interval: Duration::from_secs(10),
            // NOTE: the gateway's `request` span is at DEBUG, so that it costs nothing
            // unless spans are exported.
            filter: "info,llm_gateway=debug,llm_retry_layer=debug,llm_fallback_layer=debug"
                .to_owned(),
        }
    }
}

impl TelemetryConfig {
    /// Checks the endpoint, the interval and the filter; the error names the field.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let scheme = endpoint.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("http" | "https")) || endpoint.len() < "http://x".len() {
                return Err(ConfigError::new(
                    "telemetry.otlp_endpoint",
                    format!("must be an http:// or https:// URL (got {endpoint:?})"),
                ));
            }
        }
        if self.metrics_interval.is_zero() {
            return Err(ConfigError::new(
                "telemetry.metrics_interval",
                "must be longer than 0s",
            ));
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.filter) {
            return Err(ConfigError::new("telemetry.filter", err.to_string()));
        }
        Ok(())
    }
}

/// `[admin]`: `/health` and `/metrics` on a listener of their own, or behind a key of their
/// own; by default they are served openly beside the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve `/health` and `/metrics` here, and not on the API's listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The environment variable holding the admin key: `/health` and `/metrics` then need
    /// it as a bearer token (`Authorization: Bearer …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

/// What the gateway allows a client connection, as an operator would set it at the edge
/// (`[server]` in the file). Durations are written as `"10s"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// A request's headers must arrive within this; an idle keep-alive connection is closed
    /// after it too (slowloris, half-open connections).
    #[serde(with = "llm_tower::config::duration")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this (a declared body that never comes).
    #[serde(with = "llm_tower::config::duration")]
    pub body_timeout: Duration,
    /// Open connections at most; a connection over the cap is closed at once.
    pub max_connections: usize,
    /// Requests in flight at most; one over the cap gets a fast 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Request body bytes in flight at most (each request counts its declared length, or
    /// `max_body_bytes` when it declares none); one over the budget gets the same 503.
    pub max_in_flight_bytes: usize,
    /// On shutdown, requests and streams in flight get this long to finish; then their
    /// connections are closed.
    #[serde(with = "llm_tower::config::duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_in_flight: 1_000,
            max_in_flight_bytes: 64 << 20,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerLimits {
    /// Checks every field; the error names the first at fault.
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(
                    format!("server.{field}"),
                    "must be longer than 0s",
                ));
            }
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            ("max_in_flight_bytes", self.max_in_flight_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("server.{field}"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// One upstream provider and the resilience settings of its stack.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// The name clients and logs use.
    pub name: String,
    /// The model `/api/chat` asks it for.
    pub model: String,
    /// Kind, endpoint, key variable, timeouts.
    pub connection: ProviderConfig,
    /// Retries on this provider (for `/v1/chat/completions` routes; `/api/chat` also hands
    /// over at once on a rate limit).
    pub retry: RetryConfig,
    /// Its circuit breaker.
    pub breaker: BreakerConfig,
    /// One breaker per upstream model (the default), or one for the whole provider.
    pub breaker_scope: BreakerScope,
    /// Its rate limit: with no limit set, it follows the provider's 429s and
    /// `x-ratelimit-*` headers only.
    pub rate_limit: RateLimitConfig,
    /// A Redis through which every gateway instance shares that rate limit.
    pub shared_limit: Option<RedisConfig>,
    /// A Redis through which every gateway instance shares the breaker's trips and recoveries.
    pub shared_breaker: Option<RedisConfig>,
    /// Whether it takes an assistant prefill when a broken stream is continued on it.
    pub prefill: Prefill,
    /// Its members, when it is a pool (`keys` or `deployments`): each with its own key,
    /// endpoint, retry, breaker and limiter.
    pub members: Vec<MemberSettings>,
    /// How the pool picks and how long a failed member stays out (`pool`).
    pub pool: PoolConfig,
    /// A Redis through which every gateway instance shares the pool's members going out
    /// (`pool.shared`).
    pub shared_pool: Option<RedisConfig>,
    /// Whether a session's requests stick to one member (`pool.sticky`): by the request's
    /// `prompt_cache_key`, else its `user` (Anthropic: `metadata.user_id`), else its
    /// `safety_identifier`.
    pub sticky_pool: bool,
}

/// One member of a pooled provider: an API key (`keys`) or a deployment or region with its
/// own endpoint (`deployments`). What it leaves out, it takes from the provider.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    /// Its name, in `/health`, logs and metrics (default: `key-1`, `key-2`, … or the region).
    pub name: Option<String>,
    /// Its endpoint (default: the provider's).
    pub base_url: Option<String>,
    /// The variable holding its key.
    pub api_key_env: Option<String>,
    /// Its key itself (prefer `api_key_env`); never printed.
    pub api_key: Option<String>,
    /// Its share within its tier (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Its priority tier: 0 first; a later tier takes traffic only when the earlier ones have
    /// no member available.
    #[serde(default)]
    pub tier: u32,
    /// Its region, shown in `/health`.
    pub region: Option<String>,
}

fn one() -> u32 {
    1
}

/// `value` read as `T`; an error names the key's whole path under `base`
/// (`providers[0].keys[1].weight`, `auth.keys[0].key_env`).
fn read_at<T: for<'de> Deserialize<'de>>(base: &str, value: toml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = match path.as_str() {
            "" | "." => base.to_owned(),
            _ if path.starts_with('[') => format!("{base}{path}"),
            _ => format!("{base}.{path}"),
        };
        ConfigError::new(field, err.into_inner().message().to_owned())
    })
}

impl fmt::Debug for MemberSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberSettings")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("weight", &self.weight)
            .field("tier", &self.tier)
            .field("region", &self.region)
            .finish()
    }
}

/// Reads `keys` or `deployments` (not both) and `pool` out of a provider's table.
fn pool_settings(
    table: &mut toml::Table,
    field: &dyn Fn(&str) -> String,
) -> Result<(Vec<MemberSettings>, PoolConfig, Option<RedisConfig>, bool), ConfigError> {
    let keys = table.remove("keys");
    let deployments = table.remove("deployments");
    let (list, value) = match (keys, deployments) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field("deployments"),
                "a provider lists `keys` or `deployments`, not both",
            ));
        }
        (Some(value), None) => ("keys", Some(value)),
        (None, Some(value)) => ("deployments", Some(value)),
        (None, None) => ("keys", None),
    };
    let members: Vec<MemberSettings> = match value {
        Some(value) => read_at(&field(list), value)?,
        None => Vec::new(),
    };
    let mut members = members;
    for (j, member) in members.iter_mut().enumerate() {
        if member.weight == 0 {
            return Err(ConfigError::new(
                format!("{}[{j}].weight", field(list)),
                "must be at least 1",
            ));
        }
        if member.name.is_none() {
            member.name = Some(match (&member.region, list) {
                (Some(region), _) => region.clone(),
                (None, "keys") => format!("key-{}", j + 1),
                (None, _) => format!("deployment-{}", j + 1),
            });
        }
    }
    let mut pool_table = table.remove("pool");
    let sticky = take_key(&mut pool_table, "sticky", &field("pool.sticky"))?.unwrap_or(false);
    let shared = take_shared(&mut pool_table, &field("pool.shared"))?
        .map(|shared: RedisConfig| shared.validate().map(|()| shared))
        .transpose()
        .map_err(|e| e.in_section(&field("pool.shared")))?;
    let pool = match pool_table {
        Some(value) => {
            let pool: PoolConfig = read_at(&field("pool"), value)?;
            pool.validate().map_err(|e| e.in_section(&field("pool")))?;
            pool
        }
        None => PoolConfig::default(),
    };
    Ok((members, pool, shared, sticky))
}

/// What one circuit breaker covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    /// One breaker per (provider, upstream model): one model failing never blocks another
    /// model of the same provider, nor a route's fallback to it.
    #[default]
    Model,
    /// One breaker for every model of the provider.
    Provider,
}

/// A `/v1/chat/completions` route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The model name clients ask for; `"*"` matches any name without a route of its own.
    pub model: String,
    /// Tried in order.
    pub targets: Vec<RouteTarget>,
    /// What a stream that breaks after its first chunk gets. Default: on a route with a
    /// fallback, the answer is continued on the next target that answers
    /// ([`RecoveryPolicy::continuing`]); on a route of one target, it ends with an error
    /// event. `recovery = { after_output = "fail" }` turns continuing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPolicy>,
}

/// One target of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// A configured provider's name.
    pub provider: String,
    /// The upstream model; absent: the model name the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A `/v1/embeddings` route: targets tried in order, all answering vectors of the size the
/// route declares (vectors of two sizes, or of two models, cannot be compared: a fallback
/// between them must keep one space).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRouteConfig {
    /// The model name clients ask for.
    pub model: String,
    /// The length of every vector the route answers: each target is asked for it, and an
    /// answer of another length moves on to the next target.
    pub dimensions: u32,
    /// Tried in order.
    pub targets: Vec<EmbeddingTarget>,
}

/// One target of an embedding route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingTarget {
    /// A configured provider's name (not an Anthropic one: Anthropic has no embeddings).
    pub provider: String,
    /// The upstream model; absent: the model name the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether the route's `dimensions` are sent to the model (default: yes). `false` for a
    /// model that takes no `dimensions` parameter and answers the route's size natively
    /// (OpenAI's `text-embedding-ada-002`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub send_dimensions: bool,
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_true(b: &bool) -> bool {
    *b
}

impl RouteConfig {
    /// Whether this is the wildcard route.
    pub fn is_wildcard(&self) -> bool {
        self.model == "*"
    }

    /// The recovery policy in force: the configured one, else continuing on a route with a
    /// fallback and failing clean on a route of one target.
    pub fn recovery_policy(&self) -> RecoveryPolicy {
        match &self.recovery {
            Some(policy) => policy.clone(),
            None if self.targets.len() > 1 => RecoveryPolicy::continuing(),
            None => RecoveryPolicy::default(),
        }
    }
}

/// Retries in the gateway unless configured otherwise: a 5xx or an overload is retried after
/// 1 s, 2 s and 4 s (no jitter: the schedule is the documented one), then hands over; a
/// timeout or a dropped connection (the target is silent or gone), an exhausted quota, an
/// open circuit or a local limit moves to the next target at once while one remains. A rate
/// limit with a `Retry-After` of 4 s or less is waited out once on the same target; a longer
/// one, none, or a second 429 moves on (`/api/chat` moves on at the first 429, as documented).
/// With no target left, everything transient is retried on the schedule within the deadline.
pub fn default_retry() -> RetryConfig {
    let mut retry = RetryConfig::standard();
    retry.max_retries = 3;
    retry.base_delay = Duration::from_secs(1);
    retry.max_delay = Duration::from_secs(4);
    retry.multiplier = 2.0;
    retry.jitter = Jitter::None;
    // The whole 1 s, 2 s, 4 s schedule runs before handing over to the next provider.
    retry.failover_delay = retry.max_delay;
    retry.failover_on = ErrorKinds::of(&[
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::QuotaExceeded,
        ErrorKind::CircuitOpen,
        ErrorKind::LocalRateLimited,
    ]);
    retry
}

/// The gateway's breaker: trips after 3 requests in a row failed (one request's own retries
/// count once) or half the last 20 calls; open 5 s, then 10 s while the target stays down, so
/// a recovered target gets traffic back within about 10 s and a long outage costs one probe
/// every 10 s.
pub fn default_breaker() -> BreakerConfig {
    let mut breaker = BreakerConfig::standard();
    breaker.consecutive_failures = Some(3);
    breaker.open_duration = Duration::from_secs(5);
    breaker.max_open_duration = Duration::from_secs(10);
    breaker
}

/// The rate limit of every provider: with no limit configured it follows the provider (a 429
/// with a delay, or an empty bucket in `x-ratelimit-*`, holds requests until the next one
/// fits); a request that would wait more than 2 s goes to the next target instead.
pub fn default_rate_limit() -> RateLimitConfig {
    RateLimitConfig {
        mode: Mode::Wait,
        max_wait: Duration::from_secs(2),
        ..RateLimitConfig::default()
    }
}

/// The model `/api/chat` asks a provider of `kind` for when its table names none.
fn default_model(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAi => Some("gpt-4o-mini"),
        ProviderKind::Anthropic => Some("claude-3-5-haiku-latest"),
        ProviderKind::Gemini => Some("gemini-2.0-flash"),
        ProviderKind::OpenRouter => Some("openai/gpt-4o-mini"),
        ProviderKind::Ollama => Some("llama3.2"),
        _ => None,
    }
}

/// The file's shape; providers stay raw tables until their gateway keys are taken out, so
/// that the rest is checked field by field by `ProviderConfig` itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    #[serde(default, with = "llm_tower::config::option_duration")]
    request_timeout: Option<Duration>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    providers: Vec<toml::Table>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    embedding_routes: Vec<EmbeddingRouteConfig>,
    #[serde(default)]
    server: ServerLimits,
    auth: Option<toml::Value>,
    admin: Option<toml::Value>,
    telemetry: Option<toml::Value>,
}

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Where variables come from: the environment, or a test's map.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl GatewayConfig {
    /// Reads and checks `path`, with `GATEWAY_*` overrides from `vars` and API keys from it.
    pub fn from_file(path: &Path, vars: Lookup<'_>) -> Result<Self, ConfigFileError> {
        let source = path.display().to_string();
        let unreadable = |why: String| ConfigFileError {
            source: source.clone(),
            error: ConfigError::new("(file)", why),
        };
        // NOTE: bounded, as every read is: a configuration is kilobytes, not a log file.
        let len = std::fs::metadata(path)
            .map_err(|err| unreadable(format!("cannot be read: {err}")))?
            .len();
        if len > MAX_CONFIG_BYTES {
            return Err(unreadable(format!(
                "is {len} bytes; a configuration may be {MAX_CONFIG_BYTES} at most"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| unreadable(format!("cannot be read: {err}")))?;
        GatewayConfig::from_toml(&text, &source, vars)
    }

    /// Parses and checks a configuration; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str, vars: Lookup<'_>) -> Result<Self, ConfigFileError> {
        let at = |error: ConfigError| ConfigFileError {
            source: source.to_owned(),
            error,
        };
        let file: FileConfig = toml::from_str(text).map_err(|err| at(file_error(&err, text)))?;
        let listen = match file.listen {
            Some(listen) => listen.parse().map_err(|err| {
                at(ConfigError::new(
                    "listen",
                    format!("{err} (got {listen:?})"),
                ))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };
        let mut providers = Vec::with_capacity(file.providers.len());
        for (index, table) in file.providers.into_iter().enumerate() {
            providers.push(provider_settings(index, table).map_err(at)?);
        }
        let config = GatewayConfig {
            listen,
            request_timeout: file.request_timeout.unwrap_or(Duration::from_secs(60)),
            max_body_bytes: file.max_body_bytes.unwrap_or(1 << 20),
            providers,
            routes: file.routes,
            embedding_routes: file.embedding_routes,
            server: file.server,
            auth: section("auth", file.auth).map_err(at)?,
            admin: section("admin", file.admin).map_err(at)?,
            telemetry: section("telemetry", file.telemetry).map_err(at)?,
        };
        config.validate().map_err(at)?;
        // The environment's values are checked again: they answer for their own errors.
        let from_env = |error| ConfigFileError {
            source: "environment".to_owned(),
            error,
        };
        let config = config.with_overrides(vars).map_err(from_env)?;
        config.validate().map_err(from_env)?;
        Ok(config)
    }

    /// One provider for each usual API key variable that is set (`OPENAI_API_KEY`,
    /// `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `OPENROUTER_API_KEY`), with the gateway's
    /// defaults; `None` when none is set.
    pub fn from_env_keys(vars: Lookup<'_>) -> Result<Option<Self>, ConfigFileError> {
        let mut text = String::new();
        for (name, var) in [
            ("openai", "OPENAI_API_KEY"),
            ("anthropic", "ANTHROPIC_API_KEY"),
            ("gemini", "GEMINI_API_KEY"),
            ("openrouter", "OPENROUTER_API_KEY"),
        ] {
            if vars(var).is_some_and(|key| !key.trim().is_empty()) {
                text.push_str(&format!("[[providers]]\nname = \"{name}\"\n\n"));
            }
        }
        if text.is_empty() {
            return Ok(None);
        }
        GatewayConfig::from_toml(&text, "API keys in the environment", vars).map(Some)
    }

    /// Applies `GATEWAY_LISTEN`, `GATEWAY_REQUEST_TIMEOUT` and, per provider (its name in
    /// capitals), `GATEWAY_<NAME>_BASE_URL`, `GATEWAY_<NAME>_MODEL`, the retry variables
    /// `GATEWAY_<NAME>_RETRY_MAX_ATTEMPTS`, `…_RETRY_BASE_DELAY`, `…_RETRY_MAX_DELAY`, and the
    /// breaker's `GATEWAY_<NAME>_CIRCUIT_BREAKER_THRESHOLD`, `…_TIMEOUT`.
    pub fn with_overrides(mut self, vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let lookup = |key: &str| -> Result<Option<String>, ConfigError> { Ok(vars(key)) };
        if let Some(listen) = vars("GATEWAY_LISTEN") {
            self.listen = listen.parse().map_err(|err| {
                ConfigError::new("GATEWAY_LISTEN", format!("{err} (got {listen:?})"))
            })?;
        }
        if let Some(timeout) = vars("GATEWAY_REQUEST_TIMEOUT") {
            self.request_timeout = parse_duration("GATEWAY_REQUEST_TIMEOUT", &timeout)?;
        }
        for provider in &mut self.providers {
            let prefix = format!("GATEWAY_{}_", env_name(&provider.name));
            if let Some(url) = vars(&format!("{prefix}BASE_URL")) {
                provider.connection.base_url = Some(url);
            }
            if let Some(model) = vars(&format!("{prefix}MODEL")) {
                provider.model = model;
            }
            provider.retry = provider.retry.clone().merge_vars(&prefix, lookup)?;
            provider.breaker = provider.breaker.clone().merge_vars(&prefix, lookup)?;
        }
        Ok(self)
    }

    /// Checks what serde cannot: names, references between tables, each layer's settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "must name at least one provider ([[providers]] with a name)",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "request_timeout",
                "must be longer than 0s",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        self.server.validate()?;
        self.auth.validate()?;
        self.telemetry.validate()?;
        if self.server.max_in_flight_bytes < self.max_body_bytes {
            return Err(ConfigError::new(
                "server.max_in_flight_bytes",
                format!(
                    "must be at least max_body_bytes ({}): a request of that size could never be admitted",
                    self.max_body_bytes
                ),
            ));
        }
        for (i, provider) in self.providers.iter().enumerate() {
            let section = format!("providers[{i}]");
            if self.providers[..i].iter().any(|p| p.name == provider.name) {
                return Err(ConfigError::new(
                    format!("{section}.name"),
                    format!("repeats the provider name {:?}", provider.name),
                ));
            }
            provider
                .retry
                .validate()
                .map_err(|e| e.in_section(&format!("{section}.retry")))?;
            provider
                .breaker
                .validate()
                .map_err(|e| e.in_section(&format!("{section}.breaker")))?;
            provider
                .rate_limit
                .validate()
                .map_err(|e| e.in_section(&format!("{section}.rate_limit")))?;
        }
        let names = self.provider_names().join(", ");
        for (i, route) in self.routes.iter().enumerate() {
            if route.model.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("routes[{i}].model"),
                    "must not be empty",
                ));
            }
            if self.routes[..i].iter().any(|r| r.model == route.model) {
                return Err(ConfigError::new(
                    format!("routes[{i}].model"),
                    format!("repeats the route {:?}", route.model),
                ));
            }
            if let Some(recovery) = &route.recovery {
                recovery
                    .validate()
                    .map_err(|e| e.in_section(&format!("routes[{i}].recovery")))?;
            }
            if route.targets.is_empty() {
                return Err(ConfigError::new(
                    format!("routes[{i}].targets"),
                    "must name at least one target",
                ));
            }
            for (j, target) in route.targets.iter().enumerate() {
                if !self.providers.iter().any(|p| p.name == target.provider) {
                    return Err(ConfigError::new(
                        format!("routes[{i}].targets[{j}].provider"),
                        format!(
                            "names no configured provider (got {:?}; configured: {names})",
                            target.provider
                        ),
                    ));
                }
            }
        }
        for (i, route) in self.embedding_routes.iter().enumerate() {
            let at = |field: &str| format!("embedding_routes[{i}].{field}");
            if route.model.trim().is_empty() {
                return Err(ConfigError::new(at("model"), "must not be empty"));
            }
            if self.embedding_routes[..i]
                .iter()
                .any(|r| r.model == route.model)
            {
                return Err(ConfigError::new(
                    at("model"),
                    format!("repeats the embedding route {:?}", route.model),
                ));
            }
            if route.dimensions == 0 {
                return Err(ConfigError::new(at("dimensions"), "must be at least 1"));
            }
            if route.targets.is_empty() {
                return Err(ConfigError::new(
                    at("targets"),
                    "must name at least one target",
                ));
            }
            for (j, target) in route.targets.iter().enumerate() {
                let Some(provider) = self.providers.iter().find(|p| p.name == target.provider)
                else {
                    return Err(ConfigError::new(
                        at(&format!("targets[{j}].provider")),
                        format!(
                            "names no configured provider (got {:?}; configured: {names})",
                            target.provider
                        ),
                    ));
                };
                if provider.connection.kind == Some(ProviderKind::Anthropic) {
                    return Err(ConfigError::new(
                        at(&format!("targets[{j}].provider")),
                        format!(
                            "{:?} is an Anthropic provider, and Anthropic has no embeddings API",
                            target.provider
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The upstream models the configuration names for `provider`: its own model and every
    /// route target's explicit model on it.
    pub fn models_of(&self, provider: &str) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .providers
            .iter()
            .filter(|p| p.name == provider)
            .map(|p| p.model.as_str())
            .collect();
        for route in &self.routes {
            for target in route.targets.iter().filter(|t| t.provider == provider) {
                if let Some(model) = &target.model {
                    if !models.contains(&model.as_str()) {
                        models.push(model);
                    }
                }
            }
        }
        models
    }

    /// The providers' names, in order.
    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name.as_str()).collect()
    }

    /// The configured routes, or — with none configured — one per provider: its model first
    /// on that provider, then on each other provider's model in order.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
        for first in &self.providers {
            if routes.iter().any(|r| r.model == first.model) {
                continue;
            }
            let targets = std::iter::once(first)
                .chain(self.providers.iter().filter(|p| p.name != first.name))
                .map(|p| RouteTarget {
                    provider: p.name.clone(),
                    model: Some(p.model.clone()),
                })
                .collect();
            routes.push(RouteConfig {
                model: first.model.clone(),
                targets,
                recovery: None,
            });
        }
        routes
    }
}

/// One `[[providers]]` table: the gateway's keys taken out, the rest a `ProviderConfig`.
fn provider_settings(
    index: usize,
    mut table: toml::Table,
) -> Result<ProviderSettings, ConfigError> {
    let section = format!("providers[{index}]");
    let field = |name: &str| format!("{section}.{name}");
    let name = match table.remove("name") {
        Some(toml::Value::String(name)) if !name.trim().is_empty() => name,
        Some(other) => {
            return Err(ConfigError::new(
                field("name"),
                format!("must be a non-empty string (got a {})", other.type_str()),
            ));
        }
        None => return Err(ConfigError::new(field("name"), "is missing")),
    };
    let model = match table.remove("model") {
        Some(toml::Value::String(model)) if !model.trim().is_empty() => Some(model),
        Some(other) => {
            return Err(ConfigError::new(
                field("model"),
                format!("must be a non-empty string (got a {})", other.type_str()),
            ));
        }
        None => None,
    };
    let retry = overlay(&section, "retry", default_retry(), table.remove("retry"))?;
    // `breaker.shared` and `rate_limit.shared` (a Redis to share the state through) are the
    // gateway's keys, not the layer configs'.
    let mut breaker_table = table.remove("breaker");
    let shared_breaker = take_shared(&mut breaker_table, &field("breaker.shared"))?
        .map(|shared: RedisConfig| shared.validate().map(|()| shared))
        .transpose()
        .map_err(|e| e.in_section(&field("breaker.shared")))?;
    let breaker_scope =
        take_key(&mut breaker_table, "scope", &field("breaker.scope"))?.unwrap_or_default();
    let sets_max_open = matches!(&breaker_table, Some(toml::Value::Table(t)) if t.contains_key("max_open_duration"));
    let mut breaker = overlay(&section, "breaker", default_breaker(), breaker_table)?;
    if !sets_max_open && breaker.max_open_duration < breaker.open_duration {
        // A longer `open_duration` than the default cap, alone, means "stay open that long".
        breaker.max_open_duration = breaker.open_duration;
    }
    let mut rate_limit_table = table.remove("rate_limit");
    let shared_limit = take_shared(&mut rate_limit_table, &field("rate_limit.shared"))?
        .map(|shared: RedisConfig| shared.validate().map(|()| shared))
        .transpose()
        .map_err(|e| e.in_section(&field("rate_limit.shared")))?;
    let rate_limit = overlay(
        &section,
        "rate_limit",
        default_rate_limit(),
        rate_limit_table,
    )?;
    let prefill = match table.remove("prefill") {
        Some(value) => value.try_into::<Prefill>().map_err(|err| {
            ConfigError::new(
                field("prefill"),
                format!("{} (auto, supported, unsupported)", err.message()),
            )
        })?,
        None => Prefill::Auto,
    };
    let (members, pool, shared_pool, sticky_pool) = pool_settings(&mut table, &field)?;
    if !table.contains_key("kind") {
        // A provider named after a kind needs no `kind` line.
        if let Ok(kind) = ProviderKind::from_str(&name) {
            table.insert(
                "kind".to_owned(),
                toml::Value::try_from(kind).expect("a kind serializes"),
            );
        }
    }
    // NOTE: read through serde_path_to_error, so that a bad value deep in the table is named
    // by its path (`providers[0].timeouts.connect`), not by the table.
    let connection: ProviderConfig = read_at(&section, toml::Value::Table(table))?;
    let Some(kind) = connection.kind else {
        return Err(ConfigError::new(
            field("kind"),
            "is missing (openai, azure, openrouter, anthropic, gemini, ollama, openai_compatible)",
        ));
    };
    let Some(model) = model.or_else(|| default_model(kind).map(str::to_owned)) else {
        return Err(ConfigError::new(
            field("model"),
            format!("is required for a provider of kind {kind}"),
        ));
    };
    Ok(ProviderSettings {
        name,
        model,
        connection,
        retry,
        breaker,
        breaker_scope,
        rate_limit,
        shared_limit,
        shared_breaker,
        prefill,
        members,
        pool,
        shared_pool,
        sticky_pool,
    })
}

/// Takes the `shared` table out of a layer's table, read as `T`.
fn take_shared<T: for<'de> Deserialize<'de>>(
    table: &mut Option<toml::Value>,
    field: &str,
) -> Result<Option<T>, ConfigError> {
    take_key(table, "shared", field)
}

/// Takes `key` out of a layer's table, read as `T`.
fn take_key<T: for<'de> Deserialize<'de>>(
    table: &mut Option<toml::Value>,
    key: &str,
    field: &str,
) -> Result<Option<T>, ConfigError> {
    let Some(toml::Value::Table(table)) = table else {
        return Ok(None);
    };
    table
        .remove(key)
        .map(|shared| {
            shared.try_into::<T>().map_err(|err: toml::de::Error| {
                ConfigError::new(field.to_owned(), err.message().to_owned())
            })
        })
        .transpose()
}

/// `defaults` with the fields of `value` (a table) written over them.
fn overlay<T: Serialize + for<'de> Deserialize<'de>>(
    section: &str,
    key: &str,
    defaults: T,
    value: Option<toml::Value>,
) -> Result<T, ConfigError> {
    let field = format!("{section}.{key}");
    let Some(value) = value else {
        return Ok(defaults);
    };
    let toml::Value::Table(over) = value else {
        return Err(ConfigError::new(field, "must be a table"));
    };
    let toml::Value::Table(mut merged) =
        toml::Value::try_from(defaults).expect("the defaults serialize")
    else {
        unreachable!("a settings struct serializes to a table")
    };
    merged.extend(over);
    read_at(&field, toml::Value::Table(merged))
}

/// The table `name` read as `T` (absent: `T`'s default), an error naming the key's whole
/// path (`auth.keys[0].key_env`).
fn section<T: Default + for<'de> Deserialize<'de>>(
    name: &str,
    value: Option<toml::Value>,
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(T::default());
    };
    read_at(name, value)
}

/// A TOML syntax or shape error as a field and a reason: serde's message names the key, and
/// the line and column say where it is.
fn toml_error(err: &toml::de::Error, text: &str) -> ConfigError {
    let start = err.span().map(|span| span.start.min(text.len()));
    let reason = match start {
        Some(start) => format!(
            "{} (line {})",
            err.message(),
            text[..start].matches('\n').count() + 1
        ),
        None => err.message().to_owned(),
    };
    // An unknown or missing key is named between backticks in the message; a bad value is
    // on a `key = value` line, whose key names the field.
    let named = reason
        .split('`')
        .nth(1)
        .filter(|_| reason.contains("field"));
    let on_line = start.and_then(|start| {
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('[')).then_some(key)
    });
    let field = named.or(on_line).unwrap_or("(syntax)").to_owned();
    ConfigError::new(field, reason)
}

/// [`toml_error`], with the key named by its whole path when it sits in an array of
/// tables (`embedding_routes[0].dimensions`, not `dimensions`): the file is read again
/// through serde_path_to_error, which knows the path but not the line.
fn file_error(err: &toml::de::Error, text: &str) -> ConfigError {
    let error = toml_error(err, text);
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return error; // a syntax error: its line is all there is
    };
    let Err(shaped) = serde_path_to_error::deserialize::<_, FileConfig>(toml::Value::Table(table))
    else {
        return error;
    };
    let path = shaped.path().to_string();
    let message = shaped.inner().message();
    let field = match message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        Some(name) if path != "." => format!("{path}.{name}"),
        _ => path,
    };
    if field.contains(['.', '[']) {
        ConfigError::new(field, error.reason().to_owned())
    } else {
        error
    }
}

/// `openai-eu` → `OPENAI_EU`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
