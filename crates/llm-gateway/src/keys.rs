//! Who may call the gateway: its API keys ("virtual keys"), as configured (`[auth]`) and as
//! held at run time — SHA-256 digests only, compared in constant time, each with its allowed
//! endpoints and models and its own rate limit.

use std::fmt;

use llm_tower::ratelimit::{LocalStore, Mode, NoKey, RateLimitConfig, RateLimitLayer, RedisStore};
use llm_tower::{ConfigError, EstimatedCost, RedisConfig};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::util::Either;

/// The endpoints a key may be allowed, by path.
pub const ENDPOINTS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/models",
    "/api/chat",
];

/// `[auth]`: the gateway's API keys and what an unauthenticated gateway may do.
///
/// ```toml
/// [auth]
/// shared = { url = "redis://127.0.0.1:6379" }   # per-key limits shared by every instance
///
/// [[auth.keys]]
/// name = "team-a"                               # in logs and metrics; the key never is
/// key_env = "TEAM_A_KEY"                        # or key_sha256 = "<hex>", or key = "…"
/// models = ["fast", "gpt-4o*"]                  # default: every model
/// endpoints = ["/v1/chat/completions", "/v1/models"]   # default: every endpoint
/// rate_limit = { requests = { limit = 60, per = "1m" }, tokens = { limit = 100000, per = "1m" } }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The keys; none: anyone who reaches the port may call (loopback only, unless
    /// `allow_unauthenticated`).
    pub keys: Vec<KeyConfig>,
    /// Serve without keys on an address other than loopback. Off: such a start is refused.
    pub allow_unauthenticated: bool,
    /// Where per-key limits are shared by every instance (none: each instance limits alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<RedisConfig>,
}

/// One gateway key. Exactly one of `key_env`, `key_sha256` and `key` says what it is.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// What logs, metrics and `/health` call it (the key itself never appears).
    pub name: String,
    /// The environment variable holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// The key's SHA-256 digest in hex (`printf %s "$KEY" | sha256sum`): the file never
    /// holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    /// The key itself, in the file (prefer `key_env` or `key_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The model names it may ask for; `*` at the end matches any rest (`gpt-4o*`). Empty:
    /// every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The endpoints it may call (of [`ENDPOINTS`]). Empty: every endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Its own rate limit, over every route it calls (default: none). Over it, a 429 with
    /// `Retry-After` at once (`mode = "wait"` queues instead).
    #[serde(
        default,
        deserialize_with = "key_rate_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit: Option<RateLimitConfig>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NOTE: a key written in the file is never printed.
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("key_env", &self.key_env)
            .field("key_sha256", &self.key_sha256.as_ref().map(|_| "…"))
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("models", &self.models)
            .field("endpoints", &self.endpoints)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// Reads a key's `rate_limit` table: as the layer's, but a key over its limit gets a 429 at
/// once unless the table says `mode = "wait"`.
fn key_rate_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RateLimitConfig>, D::Error> {
    let table = toml::Table::deserialize(deserializer)?;
    let sets_mode = table.contains_key("mode");
    let mut config: RateLimitConfig = table.try_into().map_err(D::Error::custom)?;
    if !sets_mode {
        config.mode = Mode::Reject;
    }
    Ok(Some(config))
}

impl AuthConfig {
    /// Checks every key; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            if key.name.trim().is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if self.keys[..i].iter().any(|k| k.name == key.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("{:?} names two keys", key.name),
                ));
            }
            let given = [&key.key_env, &key.key_sha256, &key.key]
                .iter()
                .filter(|k| k.is_some())
                .count();
            if given != 1 {
                return Err(ConfigError::new(
                    at("key_env"),
                    "exactly one of key_env, key_sha256 and key must be set",
                ));
            }
            if let Some(hex) = &key.key_sha256 {
                parse_digest(hex).ok_or_else(|| {
                    ConfigError::new(at("key_sha256"), "must be 64 hexadecimal digits")
                })?;
            }
            if key.key.as_deref().is_some_and(|k| k.len() < MIN_KEY_LEN) {
                return Err(ConfigError::new(
                    at("key"),
                    format!("must be at least {MIN_KEY_LEN} characters"),
                ));
            }
            for (j, endpoint) in key.endpoints.iter().enumerate() {
                if !ENDPOINTS.contains(&endpoint.as_str()) {
                    return Err(ConfigError::new(
                        at(&format!("endpoints[{j}]")),
                        format!(
                            "names no endpoint (got {endpoint:?}; endpoints: {})",
                            ENDPOINTS.join(", ")
                        ),
                    ));
                }
            }
            for (j, model) in key.models.iter().enumerate() {
                if model.is_empty() || model.strip_suffix('*').unwrap_or(model).contains('*') {
                    return Err(ConfigError::new(
                        at(&format!("models[{j}]")),
                        "must be a model name, `*` allowed only at its end",
                    ));
                }
            }
            if let Some(limit) = &key.rate_limit {
                limit
                    .validate()
                    .map_err(|e| e.in_section(&at("rate_limit")))?;
            }
        }
        if let Some(shared) = &self.shared {
            shared.validate().map_err(|e| e.in_section("auth.shared"))?;
        }
        Ok(())
    }
}

/// Refuses to serve without keys on an address other than loopback, unless allowed.
pub(crate) fn exposure(
    addr: std::net::SocketAddr,
    has_keys: bool,
    allow_unauthenticated: bool,
) -> Result<(), ConfigError> {
    if has_keys || addr.ip().is_loopback() || allow_unauthenticated {
        return Ok(());
    }
    Err(ConfigError::new(
        "auth.keys",
        format!(
            "is empty, so anyone reaching {addr} could spend the providers' keys: configure \
             [[auth.keys]] (or GATEWAY_API_KEYS), listen on loopback, or set \
             auth.allow_unauthenticated = true"
        ),
    ))
}

/// The shortest key accepted in the file or the environment: a guessable key protects
/// nothing.
const MIN_KEY_LEN: usize = 16;

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// A key's own limiter, in this process or shared through Redis.
pub(crate) type KeyLimit = Either<
    RateLimitLayer<LocalStore, NoKey, EstimatedCost>,
    RateLimitLayer<RedisStore<()>, NoKey, EstimatedCost>,
>;

/// A key the gateway accepts, as held at run time.
pub(crate) struct Caller {
    pub(crate) name: String,
    digest: [u8; 32],
    models: Vec<String>,
    endpoints: Vec<String>,
    pub(crate) limit: Option<KeyLimit>,
    /// The table it was built from (none: `GATEWAY_API_KEYS`), so that a reload leaving it
    /// as it is keeps its limiter's count.
    config: Option<KeyConfig>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Whether it may call `path`.
    pub(crate) fn may_call(&self, path: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|e| e == path)
    }

    /// Whether it may ask for `model`.
    pub(crate) fn may_use(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => allowed == model,
                })
    }
}

/// The keys the gateway accepts.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    callers: Vec<std::sync::Arc<Caller>>,
    /// Where their limits are shared.
    shared: Option<RedisConfig>,
}

impl Keys {
    /// The keys of `config`, read through `vars` (`key_env`, and `GATEWAY_API_KEYS`: keys
    /// separated by commas, named `env-1`, `env-2`, … with no limits). After `previous` (a
    /// reload), a key whose table did not change keeps its limiter and what it counted.
    pub(crate) fn new(
        config: &AuthConfig,
        vars: &dyn Fn(&str) -> Option<String>,
        previous: Option<&Keys>,
    ) -> Result<Keys, ConfigError> {
        let mut callers = Vec::new();
        for (i, key) in config.keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            let digest = match (&key.key_env, &key.key_sha256, &key.key) {
                (Some(var), _, _) => {
                    let value = vars(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                        ConfigError::new(at("key_env"), format!("names {var}, which is not set"))
                    })?;
                    if value.trim().len() < MIN_KEY_LEN {
                        return Err(ConfigError::new(
                            at("key_env"),
                            format!(
                                "names {var}, whose key is shorter than {MIN_KEY_LEN} characters"
                            ),
                        ));
                    }
                    digest(value.trim().as_bytes())
                }
                (None, Some(hex), _) => parse_digest(hex).ok_or_else(|| {
                    ConfigError::new(at("key_sha256"), "must be 64 hexadecimal digits")
                })?,
                (None, None, Some(plain)) => digest(plain.as_bytes()),
                (None, None, None) => {
                    return Err(ConfigError::new(
                        at("key_env"),
                        "exactly one of key_env, key_sha256 and key must be set",
                    ));
                }
            };
            let kept = previous
                .filter(|p| p.shared == config.shared)
                .and_then(|p| p.callers.iter().find(|c| c.config.as_ref() == Some(key)));
            let limit = match (kept, &key.rate_limit) {
                (Some(kept), _) => kept.limit.clone(),
                (None, Some(limit)) => Some(
                    build_limit(&key.name, limit, config.shared.as_ref())
                        .map_err(|e| e.in_section(&at("rate_limit")))?,
                ),
                (None, None) => None,
            };
            callers.push(std::sync::Arc::new(Caller {
                name: key.name.clone(),
                digest,
                models: key.models.clone(),
                endpoints: key.endpoints.clone(),
                limit,
                config: Some(key.clone()),
            }));
        }
        if let Some(list) = vars("GATEWAY_API_KEYS") {
            for (i, key) in list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .enumerate()
            {
                if key.len() < MIN_KEY_LEN {
                    return Err(ConfigError::new(
                        "GATEWAY_API_KEYS",
                        format!("key {} is shorter than {MIN_KEY_LEN} characters", i + 1),
                    ));
                }
                callers.push(std::sync::Arc::new(Caller {
                    name: format!("env-{}", i + 1),
                    digest: digest(key.as_bytes()),
                    models: Vec::new(),
                    endpoints: Vec::new(),
                    limit: None,
                    config: None,
                }));
            }
        }
        Ok(Keys {
            callers,
            shared: config.shared.clone(),
        })
    }

    /// Whether any key is configured (no key: every caller is let in).
    pub(crate) fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }

    /// The caller `presented` belongs to. Every stored digest is compared, each in constant
    /// time, so the time taken says nothing about which key matched or how closely.
    pub(crate) fn find(&self, presented: &str) -> Option<std::sync::Arc<Caller>> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for caller in &self.callers {
            if bool::from(caller.digest.ct_eq(&presented)) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

fn build_limit(
    name: &str,
    config: &RateLimitConfig,
    shared: Option<&RedisConfig>,
) -> Result<KeyLimit, ConfigError> {
    let builder = RateLimitLayer::builder()
        .config(config.clone())
        .token_cost(EstimatedCost::approximate());
    Ok(match shared {
        Some(redis) => {
            let prefix = format!("{}key:{name}:", redis.prefix_or("llm-gateway:"));
            Either::Right(
                builder
                    .redis(&redis.clone().with_key_prefix(prefix))
                    .build()?,
            )
        }
        None => Either::Left(builder.build()?),
    })
}

/// The admin key, as a digest.
#[derive(Debug)]
pub(crate) struct AdminKey([u8; 32]);

impl AdminKey {
    /// The key in the variable `var` (`admin.key_env`).
    pub(crate) fn from_env(
        var: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdminKey, ConfigError> {
        let value = vars(var)
            .filter(|v| v.trim().len() >= MIN_KEY_LEN)
            .ok_or_else(|| {
                ConfigError::new(
                    "admin.key_env",
                    format!(
                        "names {var}, which must hold a key of {MIN_KEY_LEN} characters or more"
                    ),
                )
            })?;
        Ok(AdminKey(digest(value.trim().as_bytes())))
    }

    /// Whether `presented` is the admin key (in constant time).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.ct_eq(&digest(presented.as_bytes())))
    }
}
