//! One provider and its resilience stack, built once: [`Upstream`]; fallback chains and
//! stream recovery over a list of them: [`UpstreamChain`].
//!
//! An [`Upstream`] is a provider with its retry, circuit breaker and rate limiter. It is
//! built once, under one name, and hands out the complete-answer service, the streaming
//! service and the health handles — all over the same breaker and limiter instances, so a
//! stream and a complete call spend the same rate limit and trip the same breaker.
//!
//! ```text
//! per attempt, outermost first:  Retry ─▶ (your attempt layer) ─▶ Breaker ─▶ RateLimit ─▶ Provider
//! ```
//!
//! An [`UpstreamChain`] takes a list of upstreams and builds from it both the fallback
//! chain for complete answers and the streaming chain with its recovery: the list is
//! written once.
//!
//! ```
//! use llm_tower::prelude::*;
//! use llm_tower::upstream::{Upstream, UpstreamChain};
//! use tower::ServiceExt;
//!
//! # fn main() -> Result<(), ConfigError> {
//! let openai = Upstream::builder("openai", Provider::openai().api_key("sk-…").build()?)
//!     .rate_limit(RateLimitConfig::per_minute(500, 30_000))
//!     .build()?;
//! let anthropic = Upstream::builder("anthropic", Provider::anthropic().api_key("sk-ant-…").build()?)
//!     .build()?;
//!
//! let chain = UpstreamChain::builder()
//!     .upstream(&openai)
//!     .upstream_as(&anthropic, "claude-3-5-haiku-latest")
//!     .build()?;
//! let chat = chain.chat(); // complete answers: a Fallback over both stacks
//! let stream = chain.stream(); // streams, repaired on the next upstream when one breaks
//! let health = openai.health(); // breaker state and limiter capacity, for a health page
//! assert_eq!(health.limiter().capacity().unwrap().requests, Some(500));
//! # let _ = (chat, stream); Ok(()) }
//! ```
//!
//! The services are type-erased ([`ChatService`], [`StreamService`]: `BoxCloneSyncService`,
//! `Clone + Send + Sync` so they serve as axum state), so upstreams over different stores,
//! breaker scopes and providers share one type. The cost: a boxed future per call and one
//! per attempt (two per attempt with [`around_attempts`](UpstreamBuilder::around_attempts)),
//! next to an HTTP call (BENCHMARKS.md, "Issue 23").

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "balance")]
use llm_balance_layer::{Member, Pool, PoolBuilder, PoolConfig, PoolHandle};
use llm_breaker_layer::{
    BreakerConfig, BreakerHandle, BreakerLayer, KeyedBreakerHandle, StateChange,
};
use llm_core::{ConfigError, EstimatedCost, KeyOf, LlmError, LocalRateLimited, ModelRequest};
use llm_fallback_layer::{Fallback, FallbackEvent, Target};
use llm_providers::recovery::{
    Prefill, RecoveringStream, RecoveryEvent, RecoveryPolicy, RecoveryTarget, StreamRecovery,
};
use llm_providers::{
    ChatRequest, ChatResponse, ChatStream, ChatTarget, EmbeddingRequest, EmbeddingResponse,
    Provider, ProviderKind, StreamTarget,
};
use llm_ratelimit_layer::{RateLimitConfig, RateLimitHandle, RateLimitLayer};
use llm_retry_layer::{GiveUp, RetryBudget, RetryConfig, RetryEvent, RetryLayer};
use tower::util::{BoxCloneSyncService, Either};
use tower_layer::Layer;

/// Complete answers from one upstream's stack: `Clone + Send + Sync`, one type for every
/// upstream.
pub type ChatService = BoxCloneSyncService<ChatRequest, ChatResponse, LlmError>;

/// Streams from one upstream's stack: `Clone + Send + Sync`, one type for every upstream.
pub type StreamService = BoxCloneSyncService<ChatRequest, ChatStream, LlmError>;

/// Embeddings from one upstream's stack: `Clone + Send + Sync`, one type for every upstream.
pub type EmbedService = BoxCloneSyncService<EmbeddingRequest, EmbeddingResponse, LlmError>;

/// A per-model breaker's key — the upstream's name, then the request's model — for every
/// request type that names a model (chat and embeddings share the model's breaker).
#[derive(Clone, Debug)]
struct ModelKey(Arc<str>);

impl<Req: ModelRequest> KeyOf<Req> for ModelKey {
    type Key = String;

    fn key_of(&self, request: &Req) -> String {
        format!("{}{}", self.0, request.model())
    }
}

/// What one circuit breaker of an upstream covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerScope {
    /// One breaker per upstream model (the default): one model failing never blocks another
    /// model of the same provider, nor a fallback to it.
    #[default]
    PerModel,
    /// One breaker for every model of the provider.
    Provider,
}

/// A hook called with what happened.
type Hook<T> = Arc<dyn Fn(&T) + Send + Sync>;
/// A hook called with the upstream's name and what happened.
type NamedHook<T> = Arc<dyn Fn(&str, &T) + Send + Sync>;
type OnRetry = NamedHook<RetryEvent>;
type OnGiveUp = NamedHook<GiveUp>;
type OnWait = Arc<dyn Fn(std::time::Duration) + Send + Sync>;
type MapRetry = Box<dyn Fn(&RetryConfig) -> RetryConfig>;
type MapChat = Arc<dyn Fn(ChatService) -> ChatService + Send + Sync>;
type MapStream = Arc<dyn Fn(StreamService) -> StreamService + Send + Sync>;

/// One provider with its retry, circuit breaker and rate limiter, built once.
///
/// Cloning is cheap, and every clone shares the same breaker and limiter.
#[derive(Clone)]
pub struct Upstream {
    name: Arc<str>,
    kind: ProviderKind,
    prefill: Prefill,
    retry: RetryConfig,
    on_retry: Option<OnRetry>,
    on_give_up: Option<OnGiveUp>,
    /// The retry budget every retry layer of this upstream spends: retries under other
    /// settings (`chat_with_retry`, a chain's `map_retry`) add no budget of their own.
    budget: Option<RetryBudget>,
    /// The stack under the retry layer: what each attempt calls.
    attempt_chat: ChatService,
    attempt_stream: StreamService,
    chat: ChatService,
    stream: StreamService,
    embed: EmbedService,
    health: UpstreamHealth,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("retry", &self.retry)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A builder for `provider` under `name` — the one name its logs, errors, breakers,
    /// health and fallback events use. The defaults are the standard presets: retries
    /// (`RetryConfig::standard`), a breaker per model (`BreakerConfig::standard`), and a
    /// limiter that follows the provider's 429s and `x-ratelimit-*` headers (set limits with
    /// [`rate_limit`](UpstreamBuilder::rate_limit)).
    pub fn builder(name: impl Into<Arc<str>>, provider: Provider) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            provider,
            retry: RetryConfig::standard(),
            breaker: BreakerConfig::standard(),
            breaker_scope: BreakerScope::default(),
            known_models: Vec::new(),
            #[cfg(feature = "redis")]
            shared_breaker: None,
            rate_limit: RateLimitConfig::default(),
            #[cfg(feature = "redis")]
            shared_limit: None,
            prefill: Prefill::Auto,
            on_retry: None,
            on_give_up: None,
            on_breaker_change: None,
            on_rate_limited: None,
            on_rate_limit_wait: None,
            around_chat: None,
            around_stream: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its provider's wire format.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Complete answers through its whole stack.
    pub fn chat(&self) -> ChatService {
        self.chat.clone()
    }

    /// Streams through its whole stack.
    pub fn stream(&self) -> StreamService {
        self.stream.clone()
    }

    /// Embeddings through its whole stack: the same retry settings, and the same breaker
    /// (per model) and limiter as its chat — an embedding call spends the provider's rate
    /// limit too. (Attempt layers from [`around_attempts`](UpstreamBuilder::around_attempts)
    /// wrap chat and streams only.)
    pub fn embed(&self) -> EmbedService {
        self.embed.clone()
    }

    /// Complete answers through the same breaker and limiter, retried under `config`
    /// instead of the upstream's own retry settings (its retry hooks and its retry budget
    /// still apply).
    pub fn chat_with_retry(&self, config: RetryConfig) -> Result<ChatService, ConfigError> {
        let retry = self.retry_layer(config)?;
        Ok(ChatService::new(retry.layer(self.attempt_chat.clone())))
    }

    /// Streams through the same breaker and limiter, retried under `config` instead of the
    /// upstream's own retry settings (its retry hooks and its retry budget still apply).
    pub fn stream_with_retry(&self, config: RetryConfig) -> Result<StreamService, ConfigError> {
        let retry = self.retry_layer(config)?;
        Ok(StreamService::new(retry.layer(self.attempt_stream.clone())))
    }

    /// Its breakers' and limiter's state.
    pub fn health(&self) -> &UpstreamHealth {
        &self.health
    }

    /// Whether it takes an assistant prefill when a broken stream is continued on it.
    pub fn prefill(&self) -> Prefill {
        self.prefill
    }

    /// The retry budget its retries spend, whatever retry settings they run under (`None`:
    /// its retry settings have none).
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    fn retry_layer(&self, config: RetryConfig) -> Result<RetryLayer, ConfigError> {
        retry_layer(
            &self.name,
            config,
            self.budget.clone(),
            self.on_retry.clone(),
            self.on_give_up.clone(),
        )
    }
}

fn retry_layer(
    name: &Arc<str>,
    config: RetryConfig,
    budget: Option<RetryBudget>,
    on_retry: Option<OnRetry>,
    on_give_up: Option<OnGiveUp>,
) -> Result<RetryLayer, ConfigError> {
    let mut builder = RetryLayer::builder().config(config).name(name.clone());
    if let Some(budget) = budget {
        builder = builder.budget(budget);
    }
    if let Some(hook) = on_retry {
        let name = name.clone();
        builder = builder.on_retry(move |event| hook(&name, event));
    }
    if let Some(hook) = on_give_up {
        let name = name.clone();
        builder = builder.on_give_up(move |give_up| hook(&name, give_up));
    }
    builder.build().map_err(|e| e.in_section("retry"))
}

/// Builds an [`Upstream`]; the build checks every setting and names the one at fault
/// (`retry.max_retries`, `rate_limit.requests`, …).
pub struct UpstreamBuilder {
    name: Arc<str>,
    provider: Provider,
    retry: RetryConfig,
    breaker: BreakerConfig,
    breaker_scope: BreakerScope,
    known_models: Vec<String>,
    #[cfg(feature = "redis")]
    shared_breaker: Option<llm_core::RedisConfig>,
    rate_limit: RateLimitConfig,
    #[cfg(feature = "redis")]
    shared_limit: Option<llm_core::RedisConfig>,
    prefill: Prefill,
    on_retry: Option<OnRetry>,
    on_give_up: Option<OnGiveUp>,
    on_breaker_change: Option<Hook<StateChange>>,
    on_rate_limited: Option<Hook<LocalRateLimited>>,
    on_rate_limit_wait: Option<OnWait>,
    around_chat: Option<MapChat>,
    around_stream: Option<MapStream>,
}

impl fmt::Debug for UpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("breaker_scope", &self.breaker_scope)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl UpstreamBuilder {
    /// Its retry settings (default: `RetryConfig::standard()`).
    #[must_use]
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.retry = config;
        self
    }

    /// Its circuit breaker settings (default: `BreakerConfig::standard()`).
    #[must_use]
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// What one breaker covers (default: one per model).
    #[must_use]
    pub fn breaker_scope(mut self, scope: BreakerScope) -> Self {
        self.breaker_scope = scope;
        self
    }

    /// Models whose breakers exist from the start, so a health page lists them before their
    /// first call (with one breaker per model; others appear when first called).
    #[must_use]
    pub fn known_models<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.known_models.extend(models.into_iter().map(Into::into));
        self
    }

    /// Shares the breakers' trips and recoveries with every instance through Redis
    /// (feature `redis`).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared_breaker(mut self, redis: llm_core::RedisConfig) -> Self {
        self.shared_breaker = Some(redis);
        self
    }

    /// Its rate limit (default: no limit of its own; it still follows the provider's 429s
    /// and `x-ratelimit-*` headers). Tokens are estimated from the prompt and `max_tokens`
    /// before each call and corrected from the reported usage after.
    #[must_use]
    pub fn rate_limit(mut self, config: RateLimitConfig) -> Self {
        self.rate_limit = config;
        self
    }

    /// Shares the rate limit with every instance through Redis (feature `redis`).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared_rate_limit(mut self, redis: llm_core::RedisConfig) -> Self {
        self.shared_limit = Some(redis);
        self
    }

    /// Whether it takes an assistant prefill when a broken stream is continued on it
    /// (default: as its provider and model allow).
    #[must_use]
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// Called before every retry, with the upstream's name.
    #[must_use]
    pub fn on_retry(mut self, hook: impl Fn(&str, &RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Called when retrying stops, with the upstream's name.
    #[must_use]
    pub fn on_give_up(mut self, hook: impl Fn(&str, &GiveUp) + Send + Sync + 'static) -> Self {
        self.on_give_up = Some(Arc::new(hook));
        self
    }

    /// Called on every change of a breaker's state (the change names the breaker).
    #[must_use]
    pub fn on_breaker_change(
        mut self,
        hook: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.on_breaker_change = Some(Arc::new(hook));
        self
    }

    /// Called for every request the rate limiter turns away.
    #[must_use]
    pub fn on_rate_limited(
        mut self,
        hook: impl Fn(&LocalRateLimited) + Send + Sync + 'static,
    ) -> Self {
        self.on_rate_limited = Some(Arc::new(hook));
        self
    }

    /// Called for every request that waits for rate-limit capacity, with the wait.
    #[must_use]
    pub fn on_rate_limit_wait(
        mut self,
        hook: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_rate_limit_wait = Some(Arc::new(hook));
        self
    }

    /// Wraps every attempt — under the retry layer, over the breaker — in `layer`: it sees
    /// each attempt once, a call refused by the breaker or limiter included (to record
    /// attempts, say). It applies to both the complete and the streaming stack.
    #[must_use]
    pub fn around_attempts<L>(mut self, layer: L) -> Self
    where
        L: Layer<ChatService> + Layer<StreamService> + Send + Sync + 'static,
        <L as Layer<ChatService>>::Service: ChatTarget,
        <L as Layer<StreamService>>::Service: StreamTarget,
    {
        let layer = Arc::new(layer);
        let for_stream = layer.clone();
        self.around_chat = Some(Arc::new(move |inner| ChatService::new(layer.layer(inner))));
        self.around_stream = Some(Arc::new(move |inner| {
            StreamService::new(for_stream.layer(inner))
        }));
        self
    }

    /// Checks every setting and builds the stacks.
    pub fn build(self) -> Result<Upstream, ConfigError> {
        let name = self.name;
        let provider = self.provider.renamed(&name);
        let kind = provider.kind();

        // NOTE: tower's `Either` chooses between the store kinds and breaker scopes, so a
        // stack is boxed once under the retry layer, not at every choice.
        let mut builder = RateLimitLayer::builder()
            .name(name.clone())
            .config(self.rate_limit)
            .token_cost(EstimatedCost::approximate());
        if let Some(hook) = self.on_rate_limited {
            builder = builder.on_rejected(move |rejected| hook(rejected));
        }
        if let Some(hook) = self.on_rate_limit_wait {
            builder = builder.on_wait(move |wait| hook(wait));
        }
        #[cfg(feature = "redis")]
        let limit = match &self.shared_limit {
            Some(redis) => Either::Right(
                builder
                    .redis(redis)
                    .build()
                    .map_err(|e| e.in_section("rate_limit"))?,
            ),
            None => Either::Left(builder.build().map_err(|e| e.in_section("rate_limit"))?),
        };
        #[cfg(feature = "redis")]
        let limiter = match &limit {
            Either::Left(local) => local.handle(),
            Either::Right(shared) => shared.handle(),
        };
        #[cfg(not(feature = "redis"))]
        let limit = builder.build().map_err(|e| e.in_section("rate_limit"))?;
        #[cfg(not(feature = "redis"))]
        let limiter = limit.handle();

        let mut breaker = BreakerLayer::builder()
            .config(self.breaker)
            .name(name.clone());
        if let Some(hook) = self.on_breaker_change {
            breaker = breaker.on_state_change(move |change| hook(change));
        }
        #[cfg(feature = "redis")]
        let shared_breaker = self.shared_breaker.is_some();
        #[cfg(not(feature = "redis"))]
        let shared_breaker = false;
        #[cfg(feature = "redis")]
        if let Some(redis) = self.shared_breaker {
            breaker = breaker.shared(redis);
        }
        let (breakers, breaker) = match self.breaker_scope {
            BreakerScope::Provider => {
                let layer = breaker.build().map_err(|e| e.in_section("breaker"))?;
                (Breakers::Provider(layer.handle()), Either::Left(layer))
            }
            BreakerScope::PerModel => {
                // NOTE: the key names the upstream too: a keyed breaker is named by its key,
                // and one shared through Redis is stored under that name.
                let prefix: Arc<str> = Arc::from(format!("{name}/"));
                let layer = breaker
                    .keyed_by::<ChatRequest, _, _>(ModelKey(prefix.clone()))
                    .build()
                    .map_err(|e| e.in_section("breaker"))?;
                let handle = layer.handle();
                for model in &self.known_models {
                    handle.get_or_create(&format!("{prefix}{model}"));
                }
                (Breakers::PerModel { prefix, handle }, Either::Right(layer))
            }
        };
        let streaming = provider.streaming();
        let embed = EmbedService::new(breaker.layer(limit.layer(provider.clone())));
        let chat = ChatService::new(breaker.layer(limit.layer(provider)));
        let stream = StreamService::new(breaker.layer(limit.layer(streaming)));
        let attempt_chat = match &self.around_chat {
            Some(around) => around(chat),
            None => chat,
        };
        let attempt_stream = match &self.around_stream {
            Some(around) => around(stream),
            None => stream,
        };

        let retry = retry_layer(
            &name,
            self.retry.clone(),
            None,
            self.on_retry.clone(),
            self.on_give_up.clone(),
        )?;
        let budget = retry.budget().cloned();
        Ok(Upstream {
            chat: ChatService::new(retry.layer(attempt_chat.clone())),
            stream: StreamService::new(retry.layer(attempt_stream.clone())),
            embed: EmbedService::new(retry.layer(embed)),
            attempt_chat,
            attempt_stream,
            health: UpstreamHealth {
                name: name.clone(),
                breakers,
                breakers_shared: shared_breaker,
                limiter,
                #[cfg(feature = "balance")]
                pool: None,
            },
            name,
            kind,
            prefill: self.prefill,
            retry: self.retry,
            on_retry: self.on_retry,
            on_give_up: self.on_give_up,
            budget,
        })
    }
}

#[derive(Clone, Debug)]
enum Breakers {
    Provider(BreakerHandle),
    PerModel {
        prefix: Arc<str>,
        handle: KeyedBreakerHandle<String>,
    },
    /// A pool's: each member's own.
    #[cfg(feature = "balance")]
    Pool(Vec<UpstreamHealth>),
}

#[cfg(feature = "balance")]
impl Upstream {
    /// Several upstreams serving the same model — API keys of one provider, deployments or
    /// regions of one model, replicas of a server — as one upstream: each request goes to
    /// one member, picked by the pool's strategy (default: the most headroom, read from the
    /// provider's rate-limit headers and each member's own limiter), and moves to another
    /// member when its member fails (`llm_tower::balance`). Each member keeps its own retry,
    /// breaker and limiter; the pool is a chain target like any other upstream.
    ///
    /// ```
    /// use llm_tower::balance::{Member, PoolConfig};
    /// use llm_tower::providers::{Provider, ProviderKind};
    /// use llm_tower::upstream::Upstream;
    ///
    /// let key = |name: &str, key: &str| {
    ///     let provider = Provider::builder(ProviderKind::OpenAi).api_key(key).build().unwrap();
    ///     Upstream::builder(format!("openai/{name}"), provider).build().unwrap()
    /// };
    /// let pool = Upstream::pool(
    ///     "openai",
    ///     vec![
    ///         Member::new("key-1", key("key-1", "sk-1")),
    ///         Member::new("key-2", key("key-2", "sk-2")).weight(2),
    ///     ],
    /// )
    /// .config(&PoolConfig::default())
    /// .build()
    /// .unwrap();
    /// let (members, _) = pool.health().pool_members().unwrap();
    /// assert_eq!(members.members().len(), 2);
    /// ```
    pub fn pool(name: impl Into<Arc<str>>, members: Vec<Member<Upstream>>) -> UpstreamPoolBuilder {
        UpstreamPoolBuilder {
            name: name.into(),
            members,
            config: PoolConfig::default(),
            sticky: None,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }
}

/// Builds a pool of upstreams ([`Upstream::pool`]).
#[cfg(feature = "balance")]
pub struct UpstreamPoolBuilder {
    name: Arc<str>,
    members: Vec<Member<Upstream>>,
    config: PoolConfig,
    sticky: Option<SessionKey>,
    #[cfg(feature = "redis")]
    shared: Option<llm_core::RedisConfig>,
}

/// A chat request's session key, for sticky picks.
#[cfg(feature = "balance")]
type SessionKey = Arc<dyn for<'a> Fn(&'a ChatRequest) -> Option<&'a str> + Send + Sync>;

/// The session a chat request names, for sticky picks: OpenAI's `prompt_cache_key` (an
/// extra field), else its end user (`user`, Anthropic's `metadata.user_id`), else its
/// `safety_identifier` (an extra field).
///
/// ```
/// use llm_tower::prelude::*;
/// use llm_tower::upstream::session_of;
///
/// let req = ChatRequest::new("gpt-4o").user("Hi").end_user("alice");
/// assert_eq!(session_of(&req), Some("alice"));
/// let req = req.extra("prompt_cache_key", "thread-7");
/// assert_eq!(session_of(&req), Some("thread-7"));
/// assert_eq!(session_of(&ChatRequest::new("gpt-4o")), None);
/// ```
#[cfg(feature = "balance")]
pub fn session_of(request: &ChatRequest) -> Option<&str> {
    let extra = |field: &str| request.extras()?.get(field)?.as_str();
    extra("prompt_cache_key")
        .or_else(|| request.end_user_value())
        .or_else(|| extra("safety_identifier"))
        .filter(|key| !key.is_empty())
}

#[cfg(feature = "balance")]
impl fmt::Debug for UpstreamPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPoolBuilder")
            .field("name", &self.name)
            .field("members", &self.members)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "balance")]
impl UpstreamPoolBuilder {
    /// The pool's strategy and how long failed members stay out.
    pub fn config(mut self, config: &PoolConfig) -> Self {
        self.config = config.clone();
        self
    }

    /// Sends chat requests with the same key (a session, a user: [`session_of`]) to the same
    /// member while it is available — the provider's prompt cache stays warm — and by the
    /// strategy otherwise.
    pub fn sticky_by(
        mut self,
        key: impl for<'a> Fn(&'a ChatRequest) -> Option<&'a str> + Send + Sync + 'static,
    ) -> Self {
        self.sticky = Some(Arc::new(key));
        self
    }

    /// Shares members going out (a refused key, a rate limit, an exhausted quota) with
    /// every instance through Redis. Build inside a Tokio runtime.
    #[cfg(feature = "redis")]
    pub fn shared(mut self, redis: llm_core::RedisConfig) -> Self {
        self.shared = Some(redis);
        self
    }

    /// The pool, as an upstream; errors name the field at fault (`pool.members`, …).
    pub fn build(self) -> Result<Upstream, ConfigError> {
        let UpstreamPoolBuilder {
            name,
            members,
            config,
            sticky,
            #[cfg(feature = "redis")]
            shared,
        } = self;
        let Some(first) = members.first().map(|m| m.service().clone()) else {
            return Err(ConfigError::new(
                "pool.members",
                "a pool needs at least one member",
            ));
        };
        if let Some(other) = members.iter().find(|m| m.service().kind != first.kind) {
            return Err(ConfigError::new(
                "pool.members",
                format!(
                    "a pool's members speak one wire format: {} is {}, {} is {}",
                    members[0].name(),
                    first.kind,
                    other.name(),
                    other.service().kind
                ),
            ));
        }
        let settings = PoolSettings {
            name: &name,
            members: &members,
            config: &config,
            #[cfg(feature = "redis")]
            shared: shared.as_ref(),
        };
        // NOTE: one pool per service, all keeping their members' health in the chat pool's
        // state: a key refused on a stream is retired for chat too.
        let chat = settings.pool_of(None, |u| u.chat.clone(), with_session_key(sticky.clone()))?;
        let handle = chat.handle();
        let same = Some(&handle);
        Ok(Upstream {
            chat: ChatService::new(chat),
            stream: StreamService::new(settings.pool_of(
                same,
                |u| u.stream.clone(),
                with_session_key(sticky.clone()),
            )?),
            embed: EmbedService::new(settings.pool_of(same, |u| u.embed.clone(), |p| p)?),
            attempt_chat: ChatService::new(settings.pool_of(
                same,
                |u| u.attempt_chat.clone(),
                with_session_key(sticky.clone()),
            )?),
            attempt_stream: StreamService::new(settings.pool_of(
                same,
                |u| u.attempt_stream.clone(),
                with_session_key(sticky.clone()),
            )?),
            health: UpstreamHealth {
                name: name.clone(),
                breakers: Breakers::Pool(
                    members.iter().map(|m| m.service().health.clone()).collect(),
                ),
                breakers_shared: first.health.breakers_shared,
                limiter: first.health.limiter.clone(),
                pool: Some(handle),
            },
            name,
            kind: first.kind,
            prefill: first.prefill,
            retry: first.retry.clone(),
            on_retry: first.on_retry.clone(),
            on_give_up: first.on_give_up.clone(),
            budget: None,
        })
    }
}

/// Makes a chat pool sticky to `key`, if there is one.
#[cfg(feature = "balance")]
fn with_session_key<S>(
    key: Option<SessionKey>,
) -> impl FnOnce(PoolBuilder<S, ChatRequest>) -> PoolBuilder<S, ChatRequest> {
    move |pool| match key {
        // NOTE: the key is hashed where it lies: a sticky pick allocates nothing.
        Some(key) => pool.sticky_by(move |request: &ChatRequest| {
            key(request).map(|session| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(session, &mut hasher);
                std::hash::Hasher::finish(&hasher)
            })
        }),
        None => pool,
    }
}

/// What every service's pool of one [`UpstreamPoolBuilder`] is built from.
#[cfg(feature = "balance")]
struct PoolSettings<'a> {
    name: &'a Arc<str>,
    members: &'a [Member<Upstream>],
    config: &'a PoolConfig,
    #[cfg(feature = "redis")]
    shared: Option<&'a llm_core::RedisConfig>,
}

#[cfg(feature = "balance")]
impl PoolSettings<'_> {
    /// One pool over one of each member's services; each member's headroom is read from
    /// its own limiter too.
    fn pool_of<S, Req>(
        &self,
        health_of: Option<&PoolHandle>,
        service: impl Fn(&Upstream) -> S,
        customize: impl FnOnce(PoolBuilder<S, Req>) -> PoolBuilder<S, Req>,
    ) -> Result<Pool<S, Req>, ConfigError> {
        let members = self
            .members
            .iter()
            .map(|member| {
                let limiter = member.service().health.limiter.clone();
                member
                    .clone()
                    .map(|upstream| service(&upstream))
                    .headroom_from(move || limiter.capacity().and_then(|c| c.requests))
            })
            .collect();
        let builder = customize(Pool::builder(self.name.clone(), members).config(self.config));
        let builder = match health_of {
            Some(handle) => builder.same_health_as(handle),
            None => builder,
        };
        #[cfg(feature = "redis")]
        let builder = match (self.shared, health_of) {
            (Some(redis), None) => builder.shared(redis.clone()),
            _ => builder,
        };
        builder.build().map_err(|e| e.in_section("pool"))
    }
}

/// An upstream's breakers and limiter, as a health page reads them. Its type names neither
/// the limiter's store nor the breakers' keys.
#[derive(Clone, Debug)]
pub struct UpstreamHealth {
    name: Arc<str>,
    breakers: Breakers,
    breakers_shared: bool,
    limiter: RateLimitHandle,
    #[cfg(feature = "balance")]
    pool: Option<PoolHandle>,
}

impl UpstreamHealth {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each breaker with the model it covers (`None`: the whole provider), models in order;
    /// a pool's: each member's, as `member` or `member/model`.
    pub fn breakers(&self) -> Vec<(Option<String>, BreakerHandle)> {
        match &self.breakers {
            Breakers::Provider(handle) => vec![(None, handle.clone())],
            Breakers::PerModel { prefix, handle } => {
                let mut keys = handle.keys();
                keys.sort();
                keys.into_iter()
                    .filter_map(|key| {
                        let breaker = handle.get(&key)?;
                        let model = key.strip_prefix(&**prefix).unwrap_or(&key).to_owned();
                        Some((Some(model), breaker))
                    })
                    .collect()
            }
            // NOTE: each member's breakers, named `member` or `member/model` (the member's
            // upstream is `pool/member`).
            #[cfg(feature = "balance")]
            Breakers::Pool(members) => members
                .iter()
                .flat_map(|member| {
                    let name = member
                        .name
                        .rsplit_once('/')
                        .map_or(&*member.name, |(_, n)| n);
                    member.breakers().into_iter().map(move |(model, breaker)| {
                        let label = match model {
                            Some(model) => format!("{name}/{model}"),
                            None => name.to_owned(),
                        };
                        (Some(label), breaker)
                    })
                })
                .collect(),
        }
    }

    /// A pool's handle and its members' health, in the pool's order (`None`: not a pool).
    #[cfg(feature = "balance")]
    pub fn pool_members(&self) -> Option<(&PoolHandle, &[UpstreamHealth])> {
        match (&self.pool, &self.breakers) {
            (Some(handle), Breakers::Pool(members)) => Some((handle, members)),
            _ => None,
        }
    }

    /// The breaker a request for `model` passes (`None`: one per model, and `model` has not
    /// been called yet).
    pub fn breaker_for(&self, model: &str) -> Option<BreakerHandle> {
        match &self.breakers {
            Breakers::Provider(handle) => Some(handle.clone()),
            Breakers::PerModel { prefix, handle } => handle.get(&format!("{prefix}{model}")),
            #[cfg(feature = "balance")]
            Breakers::Pool(members) => members.first()?.breaker_for(model),
        }
    }

    /// What one breaker covers.
    pub fn breaker_scope(&self) -> BreakerScope {
        match &self.breakers {
            Breakers::Provider(_) => BreakerScope::Provider,
            Breakers::PerModel { .. } => BreakerScope::PerModel,
            #[cfg(feature = "balance")]
            Breakers::Pool(members) => members
                .first()
                .map_or(BreakerScope::Provider, |m| m.breaker_scope()),
        }
    }

    /// Whether the breakers share their state through Redis.
    pub fn breakers_shared(&self) -> bool {
        self.breakers_shared
    }

    /// The rate limiter (a pool's: its first member's; each member's own is in
    /// [`pool_members`](Self::pool_members)).
    pub fn limiter(&self) -> &RateLimitHandle {
        &self.limiter
    }
}

/// A fallback chain and its streaming twin with recovery, built from one list of
/// [`Upstream`]s.
#[derive(Clone)]
pub struct UpstreamChain {
    chat: Fallback<ChatService, ChatRequest>,
    embed: Fallback<EmbedService, EmbeddingRequest>,
    stream: StreamRecovery<Fallback<StreamService, ChatRequest>>,
    targets: Arc<[(Arc<str>, ProviderKind)]>,
}

impl fmt::Debug for UpstreamChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamChain")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl UpstreamChain {
    /// A builder: add upstreams in the order they are tried.
    pub fn builder() -> UpstreamChainBuilder {
        UpstreamChainBuilder {
            entries: Vec::new(),
            recovery: RecoveryPolicy::default(),
            on_fallback: None,
            on_recovery: None,
            map_retry: None,
        }
    }

    /// Complete answers: each upstream's stack in order, moving on as its targets' triggers
    /// say (by default: the failures a fallback is for).
    pub fn chat(&self) -> Fallback<ChatService, ChatRequest> {
        self.chat.clone()
    }

    /// Embeddings: each upstream's stack in order, as [`chat`](Self::chat) moves on. Put
    /// only models whose vectors share one space in a chain: a vector from another model
    /// cannot be compared with the ones stored.
    pub fn embed(&self) -> Fallback<EmbedService, EmbeddingRequest> {
        self.embed.clone()
    }

    /// Streams: the same order, and a stream broken after its first chunk repaired on the
    /// chain's upstreams as the recovery policy says.
    pub fn stream(&self) -> StreamRecovery<Fallback<StreamService, ChatRequest>> {
        self.stream.clone()
    }

    /// The upstreams' names and wire formats, in order.
    pub fn targets(&self) -> &[(Arc<str>, ProviderKind)] {
        &self.targets
    }
}

struct Entry {
    upstream: Upstream,
    model: Option<String>,
}

/// Builds an [`UpstreamChain`].
pub struct UpstreamChainBuilder {
    entries: Vec<Entry>,
    recovery: RecoveryPolicy,
    on_fallback: Option<Hook<FallbackEvent>>,
    on_recovery: Option<Hook<RecoveryEvent>>,
    map_retry: Option<MapRetry>,
}

impl fmt::Debug for UpstreamChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.upstream.name()).collect();
        f.debug_struct("UpstreamChainBuilder")
            .field("upstreams", &names)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl UpstreamChainBuilder {
    /// Adds `upstream`, asked for the model the request names.
    #[must_use]
    pub fn upstream(mut self, upstream: &Upstream) -> Self {
        self.entries.push(Entry {
            upstream: upstream.clone(),
            model: None,
        });
        self
    }

    /// Adds `upstream`, asked for `model` instead of the request's.
    #[must_use]
    pub fn upstream_as(mut self, upstream: &Upstream, model: impl Into<String>) -> Self {
        self.entries.push(Entry {
            upstream: upstream.clone(),
            model: Some(model.into()),
        });
        self
    }

    /// How streams broken after their first chunk are repaired (default:
    /// `RecoveryPolicy::default()`, which fails such a stream clean rather than splice it;
    /// `RecoveryPolicy::continuing()` continues it on the next upstream).
    #[must_use]
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    /// Called on every move to the next upstream.
    #[must_use]
    pub fn on_fallback(mut self, hook: impl Fn(&FallbackEvent) + Send + Sync + 'static) -> Self {
        self.on_fallback = Some(Arc::new(hook));
        self
    }

    /// Called on every stream repair made or given up.
    #[must_use]
    pub fn on_recovery(mut self, hook: impl Fn(&RecoveryEvent) + Send + Sync + 'static) -> Self {
        self.on_recovery = Some(Arc::new(hook));
        self
    }

    /// Retries complete answers in this chain under each upstream's retry settings as
    /// `map` changes them (same breakers and limiters): a chain that should hand over on a
    /// rate limit at once, say. Streams keep the upstreams' own settings.
    #[must_use]
    pub fn map_retry(mut self, map: impl Fn(&RetryConfig) -> RetryConfig + 'static) -> Self {
        self.map_retry = Some(Box::new(map));
        self
    }

    /// Builds both chains.
    pub fn build(self) -> Result<UpstreamChain, ConfigError> {
        if self.entries.is_empty() {
            return Err(ConfigError::new(
                "upstreams",
                "must name at least one upstream",
            ));
        }
        let mut chat_targets = Vec::with_capacity(self.entries.len());
        let mut stream_targets = Vec::with_capacity(self.entries.len());
        let mut recovery_targets = Vec::with_capacity(self.entries.len());
        let mut embed_targets = Vec::with_capacity(self.entries.len());
        let mut names = Vec::with_capacity(self.entries.len());
        for (i, entry) in self.entries.iter().enumerate() {
            let up = &entry.upstream;
            let chat = match &self.map_retry {
                Some(map) => up
                    .chat_with_retry(map(&up.retry))
                    .map_err(|e| e.in_section(&format!("upstreams[{i}]")))?,
                None => up.chat(),
            };
            let mut chat = Target::new(up.name.clone(), chat);
            let mut stream = Target::new(up.name.clone(), up.stream());
            let mut embed = Target::new(up.name.clone(), up.embed());
            let mut repair =
                RecoveryTarget::new(up.name.clone(), up.kind, up.stream()).prefill(up.prefill);
            if let Some(model) = &entry.model {
                chat = chat.model(model.clone());
                stream = stream.model(model.clone());
                embed = embed.model(model.clone());
                repair = repair.model(model.clone());
            }
            chat_targets.push(chat);
            stream_targets.push(stream);
            embed_targets.push(embed);
            recovery_targets.push(repair);
            names.push((up.name.clone(), up.kind));
        }
        let mut chat = Fallback::builder(chat_targets)
            .make_span_with(|request: &ChatRequest| request_span("chat", request.model()));
        let mut stream = Fallback::builder(stream_targets)
            .make_span_with(|request: &ChatRequest| request_span("chat", request.model()));
        let mut embed =
            Fallback::builder(embed_targets).make_span_with(|request: &EmbeddingRequest| {
                request_span("embeddings", request.model())
            });
        if let Some(hook) = &self.on_fallback {
            let (a, b, c) = (hook.clone(), hook.clone(), hook.clone());
            chat = chat.on_fallback(move |event| a(event));
            stream = stream.on_fallback(move |event| b(event));
            embed = embed.on_fallback(move |event| c(event));
        }
        let mut recovering = StreamRecovery::builder(stream.build()?).policy(self.recovery);
        for target in recovery_targets {
            recovering = recovering.target(target);
        }
        if let Some(hook) = self.on_recovery {
            recovering = recovering.on_recovery(move |event| hook(event));
        }
        Ok(UpstreamChain {
            chat: chat.build()?,
            embed: embed.build()?,
            stream: recovering.build()?,
            targets: names.into(),
        })
    }
}

/// The span of one logical request through a chain, named as OpenTelemetry's GenAI
/// conventions name an operation (`chat gpt-4o`): its attempts' spans (each provider call)
/// are its children, its retries and moves to the next upstream its events; when it ends it
/// records the upstream that answered, the fallbacks and the attempts, or `error.type`. No
/// message content is recorded.
fn request_span(operation: &'static str, model: &str) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "gen_ai.request",
        otel.name = Empty,
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        llm.upstream = Empty,
        llm.fallbacks = Empty,
        llm.attempts = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("{operation} {model}"));
    }
    span
}

/// The service a recovering stream chain is, boxed: for holding chains of different
/// policies in one collection.
pub type RecoveringService = BoxCloneSyncService<ChatRequest, RecoveringStream, LlmError>;
