//! [`Gateway`]: the providers' stacks and the routes' chains, built from the configuration.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use llm_providers::recovery::RecoveryPolicy;
use llm_providers::{ChatRequest, EmbeddingRequest};
use llm_tower::fallback::Fallback;
use llm_tower::upstream::{ChatService, EmbedService, Upstream, UpstreamChain};
use llm_tower::{ConfigError, Deadline, ErrorKind, LlmError};

use super::attempts::{AttemptLog, RecentRequests};
use super::check::{self, ProbeResults};
use super::config::{ConfigFileError, GatewayConfig, Lookup, ServerLimits};
use super::keys::{AdminKey, Keys, exposure};
use super::metrics::Metrics;
use super::openai::{self};
use super::stack::{self, Configured};

/// The gateway: its providers' stacks, routes and metrics, served by
/// [`serve`](Gateway::serve) or mounted in your own axum app through
/// [`router`](Gateway::router). Cloning it is cheap; every clone shares the providers'
/// breakers, limiters and the metrics, and sees a [`reload`](Gateway::reload).
#[derive(Clone)]
pub struct Gateway {
    /// The configuration in force; a reload swaps it, and a request keeps the one it
    /// arrived under until it ends (its stream included).
    live: Arc<ArcSwap<Inner>>,
}

/// The gateway as one request sees it: the configuration in force when it arrived.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) inner: Arc<Inner>,
}

impl<S: Send + Sync> FromRequestParts<S> for Current
where
    Gateway: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Current, Infallible> {
        // NOTE: the front door puts the snapshot it checked the key against in the
        // extensions, so a request sees one configuration from its key to its answer.
        if let Some(current) = parts.extensions.get::<Current>() {
            return Ok(current.clone());
        }
        Ok(Gateway::from_ref(state).current())
    }
}

pub(crate) struct Inner {
    pub(crate) upstreams: Vec<Configured>,
    /// `/api/chat` chains: entry `i` starts at provider `i`, then the others in order.
    pub(crate) chat_chains: Vec<Fallback<ChatService, ChatRequest>>,
    pub(crate) routes: Vec<Route>,
    pub(crate) wildcard: Option<Route>,
    pub(crate) embedding_routes: Vec<EmbeddingRoute>,
    pub(crate) metrics: Metrics,
    /// The last requests and their attempts, for the status page (kept across reloads).
    pub(crate) recent: RecentRequests,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) server: ServerLimits,
    /// Request body bytes in flight, in KiB: the byte budget of `server.max_in_flight_bytes`.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) next_id: AtomicU64,
    /// Who may call.
    pub(crate) keys: Keys,
    /// The admin key's digest: `/health` and `/metrics` need it.
    pub(crate) admin_key: Option<AdminKey>,
    /// Whether `/health` and `/metrics` have a listener of their own.
    pub(crate) admin_apart: bool,
    /// Whether it may serve without keys on an address other than loopback.
    pub(crate) allow_unauthenticated: bool,
    /// The providers' probes since the last start or reload.
    pub(crate) probes: ProbeResults,
}

/// What a reload keeps from the configuration the gateway started with.
struct FrontDoor {
    max_body_bytes: usize,
    server: ServerLimits,
    body_budget: Arc<tokio::sync::Semaphore>,
    next_id: u64,
    admin_apart: bool,
}

/// A `/v1/embeddings` route: its model name, vector size and chain.
pub(crate) struct EmbeddingRoute {
    pub(crate) model: String,
    pub(crate) dimensions: u32,
    /// Its targets' providers, in order.
    pub(crate) targets: Vec<String>,
    pub(crate) chain: Fallback<EmbedService, EmbeddingRequest>,
}

/// A `/v1/chat/completions` route's chains.
pub(crate) struct Route {
    pub(crate) model: String,
    pub(crate) owner: String,
    /// Its targets, complete and streaming (under the route's recovery policy).
    pub(crate) chain: UpstreamChain,
    /// That policy.
    pub(crate) recovery: RecoveryPolicy,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // NOTE: the providers' keys live in their services and are never printed.
        let current = self.current();
        f.debug_struct("Gateway")
            .field("providers", &self.provider_names())
            .field(
                "routes",
                &current
                    .inner
                    .routes
                    .iter()
                    .map(|r| &r.model)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds every provider and stack of `config`, reading API keys through `vars`.
    pub fn new(config: &GatewayConfig, vars: Lookup<'_>) -> Result<Gateway, ConfigError> {
        let inner = Inner::build(config, vars, None)?;
        Ok(Gateway {
            live: Arc::new(ArcSwap::from_pointee(inner)),
        })
    }

    /// Replaces the configuration: requests that arrive from now on use `config`, those in
    /// flight (streams included) finish under the one they started with. On an error the
    /// configuration in force stays.
    ///
    /// The front door's settings (`listen`, `max_body_bytes`, `[server]`, `[admin]`) are
    /// the ones the gateway started with; a change to them is logged and takes effect at the
    /// next start. The metrics carry on; a provider whose settings did not change keeps its
    /// stack (its breakers' and limiters' state), a changed one starts afresh.
    ///
    /// A configuration without keys is refused while the gateway listens on an address other
    /// than loopback (see [`check_exposure`](Self::check_exposure)); `listening` is that
    /// address, if the gateway serves one.
    pub fn reload(
        &self,
        config: &GatewayConfig,
        vars: Lookup<'_>,
        listening: Option<std::net::SocketAddr>,
    ) -> Result<(), ConfigError> {
        let old = self.live.load_full();
        let inner = Inner::build(config, vars, Some(&old))?;
        if let Some(addr) = listening {
            exposure(addr, !inner.keys.is_empty(), inner.allow_unauthenticated)?;
        }
        self.live.store(Arc::new(inner));
        Ok(())
    }

    /// The configuration in force now.
    pub(crate) fn current(&self) -> Current {
        Current {
            inner: self.live.load_full(),
        }
    }
}

impl Inner {
    /// The stacks of `config`; after `previous`, its front-door settings, byte budget and
    /// metrics carry over.
    fn build(
        config: &GatewayConfig,
        vars: Lookup<'_>,
        previous: Option<&Inner>,
    ) -> Result<Inner, ConfigError> {
        let metrics = match previous {
            Some(previous) => previous.metrics.clone(),
            None => Metrics::new(&config.telemetry)?,
        };
        // Built with the gateway's recorder current: the series a layer sets as it is built
        // (each breaker's state) land in its metrics.
        metrics
            .clone()
            .scoped(|| Inner::build_into(config, vars, previous, metrics))
    }

    fn build_into(
        config: &GatewayConfig,
        vars: Lookup<'_>,
        previous: Option<&Inner>,
        metrics: Metrics,
    ) -> Result<Inner, ConfigError> {
        let mut upstreams = Vec::with_capacity(config.providers.len());
        let mut providers = Vec::with_capacity(config.providers.len());
        for (i, settings) in config.providers.iter().enumerate() {
            // A provider whose settings a reload leaves as they are keeps its stack: its
            // breakers stay open or closed, its limiters keep their count.
            let kept = previous.and_then(|p| p.upstreams.iter().find(|u| u.settings == *settings));
            if let Some(kept) = kept {
                providers.extend(
                    kept.providers
                        .iter()
                        .map(|(label, p)| (settings.name.clone(), label.clone(), p.clone())),
                );
                upstreams.push(kept.clone());
                continue;
            }
            let section = format!("providers[{i}]");
            let models = config.models_of(&settings.name);
            let own = stack::providers_of(settings, vars).map_err(|e| e.in_section(&section))?;
            let upstream = match &own[..] {
                [(_, provider)] if settings.members.is_empty() => {
                    stack::upstream(settings, provider.clone(), &models)
                }
                _ => stack::pool(settings, &own, &models),
            }
            .map_err(|e| e.in_section(&section))?;
            providers.extend(
                own.iter()
                    .map(|(label, p)| (settings.name.clone(), label.clone(), p.clone())),
            );
            upstreams.push(Configured {
                upstream,
                model: settings.model.clone(),
                settings: settings.clone(),
                providers: own,
            });
        }

        // `/api/chat` keeps its documented behaviour: a rate limit moves to the next provider.
        let chat_chains = (0..upstreams.len())
            .map(|first| {
                let order =
                    std::iter::once(first).chain((0..upstreams.len()).filter(|&i| i != first));
                order
                    .fold(stack::chain(), |chain, i| {
                        chain.upstream_as(&upstreams[i].upstream, upstreams[i].model.clone())
                    })
                    .map_retry(|retry| {
                        let mut retry = retry.clone();
                        retry.failover_on = retry.failover_on.with(ErrorKind::RateLimited);
                        retry
                    })
                    .build()
                    .map(|chain| chain.chat())
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut routes = Vec::new();
        let mut wildcard = None;
        for (i, route) in config.effective_routes().into_iter().enumerate() {
            let section = format!("routes[{i}]");
            let chain = route
                .targets
                .iter()
                .fold(stack::chain(), |chain, target| {
                    let up = &upstreams
                        .iter()
                        .find(|u| u.upstream.name() == target.provider)
                        .expect("validated: every target names a provider")
                        .upstream;
                    match &target.model {
                        Some(model) => chain.upstream_as(up, model.clone()),
                        None => chain.upstream(up),
                    }
                })
                .recovery(route.recovery_policy())
                .build()
                .map_err(|e| e.in_section(&section))?;
            let built = Route {
                owner: route.targets[0].provider.clone(),
                model: route.model.clone(),
                recovery: route.recovery_policy(),
                chain,
            };
            if route.is_wildcard() {
                wildcard = Some(built);
            } else {
                routes.push(built);
            }
        }

        let mut embedding_routes = Vec::with_capacity(config.embedding_routes.len());
        for (i, route) in config.embedding_routes.iter().enumerate() {
            let ups: Vec<&Upstream> = route
                .targets
                .iter()
                .map(|target| {
                    &upstreams
                        .iter()
                        .find(|u| u.upstream.name() == target.provider)
                        .expect("validated: every target names a provider")
                        .upstream
                })
                .collect();
            embedding_routes.push(EmbeddingRoute {
                model: route.model.clone(),
                dimensions: route.dimensions,
                targets: route.targets.iter().map(|t| t.provider.clone()).collect(),
                chain: stack::embedding_chain(route, &ups)
                    .map_err(|e| e.in_section(&format!("embedding_routes[{i}]")))?,
            });
        }

        let keys = Keys::new(&config.auth, vars, previous.map(|p| &p.keys))?;
        let admin_key = match &config.admin.key_env {
            Some(var) => Some(AdminKey::from_env(var, vars)?),
            None => None,
        };
        let probes = ProbeResults::start(check::pairs(config, &providers));
        // The front door's settings are the ones the gateway started with.
        let front = match previous {
            None => FrontDoor {
                max_body_bytes: config.max_body_bytes,
                server: config.server.clone(),
                body_budget: Arc::new(tokio::sync::Semaphore::new(
                    config.server.max_in_flight_bytes.div_ceil(1024),
                )),
                next_id: 1,
                admin_apart: config.admin.listen.is_some(),
            },
            Some(previous) => {
                if config.max_body_bytes != previous.max_body_bytes
                    || config.server != previous.server
                    || config.admin.listen.is_some() != previous.admin_apart
                {
                    tracing::warn!(
                        "max_body_bytes, [server] and admin.listen changed: they take effect at \
                         the next start"
                    );
                }
                FrontDoor {
                    max_body_bytes: previous.max_body_bytes,
                    server: previous.server.clone(),
                    body_budget: previous.body_budget.clone(),
                    next_id: previous.next_id.load(Ordering::Relaxed),
                    admin_apart: previous.admin_apart,
                }
            }
        };
        let inner = Inner {
            probes,
            upstreams,
            chat_chains,
            routes,
            wildcard,
            embedding_routes,
            metrics,
            recent: previous.map_or_else(RecentRequests::default, |p| p.recent.clone()),
            request_timeout: config.request_timeout,
            max_body_bytes: front.max_body_bytes,
            server: front.server,
            body_budget: front.body_budget,
            next_id: AtomicU64::new(front.next_id),
            keys,
            admin_key,
            admin_apart: front.admin_apart,
            allow_unauthenticated: config.auth.allow_unauthenticated,
        };
        Ok(inner)
    }
}

impl Gateway {
    /// As [`new`](Self::new), with errors naming where the configuration came from.
    pub fn from_config(
        config: &GatewayConfig,
        source: &str,
        vars: Lookup<'_>,
    ) -> Result<Gateway, ConfigFileError> {
        Gateway::new(config, vars).map_err(|error| ConfigFileError {
            source: source.to_owned(),
            error,
        })
    }

    /// Whether callers must show a gateway key (`[[auth.keys]]` or `GATEWAY_API_KEYS`).
    pub fn requires_key(&self) -> bool {
        !self.live.load().keys.is_empty()
    }

    /// Whether it may listen on `addr`: without keys only on loopback, unless
    /// `auth.allow_unauthenticated` — anyone reaching the port could spend the providers'
    /// keys.
    pub fn check_exposure(&self, addr: std::net::SocketAddr) -> Result<(), ConfigError> {
        let current = self.live.load();
        exposure(
            addr,
            !current.keys.is_empty(),
            current.allow_unauthenticated,
        )
    }

    /// Makes this gateway's metrics recorder the process's global `metrics` recorder, so
    /// that what the layers record outside any request — a breaker change another instance
    /// published through Redis — reaches `/metrics` too (inside a request, the gateway's
    /// recorder is current whatever the global one is). `false` if the process has a global
    /// recorder already. The binary does this; an app embedding the gateway need not.
    pub fn install_global_recorder(&self) -> bool {
        self.current().inner.metrics.install_global()
    }

    /// The providers' names, in order.
    pub fn provider_names(&self) -> Vec<String> {
        self.live
            .load()
            .upstreams
            .iter()
            .map(|u| u.upstream.name().to_owned())
            .collect()
    }
}

impl Current {
    /// The providers' names, in order.
    pub(crate) fn provider_names(&self) -> Vec<&str> {
        self.inner
            .upstreams
            .iter()
            .map(|u| u.upstream.name())
            .collect()
    }

    pub(crate) fn route(&self, model: &str) -> Option<&Route> {
        self.inner
            .routes
            .iter()
            .find(|r| r.model == model)
            .or(self.inner.wildcard.as_ref())
    }

    pub(crate) fn request_id(&self) -> String {
        self.next_id("chatcmpl-gw")
    }

    /// A fresh answer id: `prefix`, the time, and a counter.
    pub(crate) fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{:x}{:06x}",
            openai::unix_now(),
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `request` with a fresh attempt log and the gateway's deadline.
    pub(crate) fn prepare(&self, mut request: ChatRequest) -> (ChatRequest, AttemptLog) {
        let log = AttemptLog::new(request.model(), &self.inner.recent);
        request.extensions_mut().insert(log.clone());
        request
            .extensions_mut()
            .insert(Deadline::after(self.inner.request_timeout));
        (request, log)
    }

    /// Runs `call`, capped by the request timeout (the deadline stops retries and fallbacks
    /// from starting late; this also stops an attempt in flight).
    pub(crate) async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, LlmError>>,
    ) -> Result<T, LlmError> {
        tokio::time::timeout(self.inner.request_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(LlmError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no answer within the gateway's request timeout ({:?})",
                        self.inner.request_timeout
                    ),
                ))
            })
    }
}
