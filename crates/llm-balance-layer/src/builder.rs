//! [`PoolBuilder`]: a pool's members, strategy, sticky key, classifier and request copier.

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use llm_core::{ConfigError, DefaultClassifier, UseClone};

use crate::config::{PoolConfig, Strategy};
use crate::handle::PoolHandle;
use crate::health::{Clock, MemberHealth};
use crate::member::Member;
use crate::metrics::Meters;
use crate::service::{Pool, StickyKey};
use crate::state::{PoolMember, PoolState};
use crate::strategy::mix;

/// The most members a pool takes: a request's tried members are one machine word.
pub const MAX_MEMBERS: usize = 64;

impl<S, Req> Pool<S, Req> {
    /// A pool named `name` (in errors, metadata and status) of `members`.
    pub fn builder(name: impl Into<Arc<str>>, members: Vec<Member<S>>) -> PoolBuilder<S, Req> {
        PoolBuilder {
            name: name.into(),
            members,
            config: PoolConfig::default(),
            sticky: None,
            #[cfg(feature = "redis")]
            shared: None,
            health_of: None,
            classifier: DefaultClassifier,
            cloner: UseClone,
        }
    }
}

/// Builds a [`Pool`].
pub struct PoolBuilder<S, Req, C = DefaultClassifier, R = UseClone> {
    name: Arc<str>,
    members: Vec<Member<S>>,
    config: PoolConfig,
    sticky: Option<StickyKey<Req>>,
    #[cfg(feature = "redis")]
    shared: Option<llm_core::RedisConfig>,
    health_of: Option<PoolHandle>,
    classifier: C,
    cloner: R,
}

impl<S, Req, C, R> fmt::Debug for PoolBuilder<S, Req, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("members", &self.members)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl<S, Req, C, R> PoolBuilder<S, Req, C, R> {
    /// How members are picked (default [`Strategy::QuotaAware`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.config.strategy = strategy;
        self
    }

    /// Every setting at once, as read from a configuration file.
    pub fn config(mut self, config: &PoolConfig) -> Self {
        self.config = config.clone();
        self
    }

    /// Sends requests with the same key (a user, a session) to the same member while it is
    /// available — the provider's prompt cache stays warm — and by the strategy otherwise.
    /// Requests without a key (`None`) go by the strategy.
    ///
    /// ```
    /// use llm_balance_layer::{Member, Pool};
    /// use llm_core::RequestExtensions;
    /// use llm_testkit::{ReadyService, TestRequest};
    ///
    /// #[derive(Clone)]
    /// struct Session(String);
    ///
    /// let pool = Pool::<_, TestRequest>::builder("openai", vec![
    ///     Member::new("key-1", ReadyService::new(())),
    ///     Member::new("key-2", ReadyService::new(())),
    /// ])
    /// .sticky_by(|req: &TestRequest| {
    ///     let session = req.request_extensions()?.get::<Session>()?;
    ///     Some(session.0.clone())
    /// })
    /// .build()
    /// .unwrap();
    /// # let _ = pool;
    /// ```
    pub fn sticky_by<K: Hash>(
        mut self,
        key: impl Fn(&Req) -> Option<K> + Send + Sync + 'static,
    ) -> Self {
        self.sticky = Some(Arc::new(move |request| {
            key(request).map(|k| mix(hash_of(k)))
        }));
        self
    }

    /// Shares members going out (a refused key, a rate limit, an exhausted quota) with
    /// every instance of the pool through Redis: pools of the same name and key prefix
    /// take each other's findings on within `resync_every`. Build inside a Tokio runtime.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn shared(mut self, redis: llm_core::RedisConfig) -> Self {
        self.shared = Some(redis);
        self
    }

    /// Keeps the members' health in `pool`'s state instead of its own: the chat and
    /// streaming pools of the same keys retire a refused key once, for both. The members
    /// must be `pool`'s (same names, weights and tiers); its settings apply.
    pub fn same_health_as(mut self, pool: &PoolHandle) -> Self {
        self.health_of = Some(pool.clone());
        self
    }

    /// Classifies results (default: each result classifies itself).
    pub fn classifier<C2>(self, classifier: C2) -> PoolBuilder<S, Req, C2, R> {
        PoolBuilder {
            name: self.name,
            members: self.members,
            config: self.config,
            sticky: self.sticky,
            #[cfg(feature = "redis")]
            shared: self.shared,
            health_of: self.health_of,
            classifier,
            cloner: self.cloner,
        }
    }

    /// Copies a request for another member (default: `Clone`).
    pub fn clone_requests_with<R2>(self, cloner: R2) -> PoolBuilder<S, Req, C, R2> {
        PoolBuilder {
            name: self.name,
            members: self.members,
            config: self.config,
            sticky: self.sticky,
            #[cfg(feature = "redis")]
            shared: self.shared,
            health_of: self.health_of,
            classifier: self.classifier,
            cloner,
        }
    }

    /// The pool; errors name what is wrong (`members`, `members[1].weight`, a config key).
    pub fn build(self) -> Result<Pool<S, Req, C, R>, ConfigError> {
        self.config.validate()?;
        if self.members.is_empty() {
            return Err(ConfigError::new(
                "members",
                "a pool needs at least one member",
            ));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(ConfigError::new(
                "members",
                format!(
                    "a pool takes {MAX_MEMBERS} members at most (got {})",
                    self.members.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, member) in self.members.iter().enumerate() {
            if member.weight == 0 {
                return Err(ConfigError::new(
                    format!("members[{i}].weight"),
                    "must be at least 1",
                ));
            }
            if !names.insert(member.name.clone()) {
                return Err(ConfigError::new(
                    format!("members[{i}].name"),
                    format!("{:?} names two members", &*member.name),
                ));
            }
        }
        let mut members = self.members;
        members.sort_by_key(|m| m.tier);
        if let Some(other) = &self.health_of {
            let same = other.state.members.len() == members.len()
                && other
                    .state
                    .members
                    .iter()
                    .zip(&members)
                    .all(|(theirs, ours)| {
                        theirs.name == ours.name
                            && theirs.weight == ours.weight
                            && theirs.tier == ours.tier
                    });
            if !same {
                return Err(ConfigError::new(
                    "members",
                    format!("must be those of pool {} to share its health", other.name()),
                ));
            }
            return Ok(Pool {
                services: members.into_iter().map(|m| m.service).collect(),
                state: other.state.clone(),
                sticky: self.sticky,
                classifier: self.classifier,
                cloner: self.cloner,
            });
        }
        let mut tiers: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, member) in members.iter().enumerate() {
            match tiers.last_mut() {
                Some(range) if members[range.start].tier == member.tier => range.end = i + 1,
                _ => tiers.push(i..i + 1),
            }
        }
        let initial_latency = self.config.initial_latency;
        let (states, services): (Vec<_>, Vec<_>) = members
            .into_iter()
            .map(|m| {
                let state = PoolMember {
                    meters: Meters::new(&self.name, &m.name),
                    hash: mix(hash_of(&*m.name)),
                    name: m.name,
                    weight: m.weight,
                    tier: m.tier,
                    headroom: m.headroom,
                    health: MemberHealth::new(initial_latency),
                };
                (state, m.service)
            })
            .unzip();
        #[cfg(feature = "redis")]
        let (shared, task) = match &self.shared {
            Some(redis) => {
                let (link, task) = crate::shared::SharedLink::new(redis, &self.name)?;
                (Some(link), Some(task))
            }
            None => (None, None),
        };
        let state = Arc::new(PoolState {
            name: self.name,
            members: states,
            tiers,
            config: self.config,
            clock: Clock::new(),
            turn: AtomicUsize::new(0),
            #[cfg(feature = "redis")]
            shared,
        });
        #[cfg(feature = "redis")]
        if let Some(task) = task {
            task.start(Arc::downgrade(&state));
        }
        Ok(Pool {
            services: services.into(),
            state,
            sticky: self.sticky,
            classifier: self.classifier,
            cloner: self.cloner,
        })
    }
}
