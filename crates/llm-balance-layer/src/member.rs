//! [`Member`]: one service of a pool, with its weight, tier and headroom.

use std::fmt;
use std::sync::Arc;

/// Reads a member's headroom: requests it can take now (its own rate limiter's level).
pub(crate) type Headroom = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// One member of a [`Pool`](crate::Pool): an API key, a deployment, a region or a replica of
/// the same logical model, each a service with its own stack (retry, breaker, limiter).
///
/// ```
/// use llm_balance_layer::Member;
///
/// let member = Member::new("key-2", ()).weight(3).tier(1);
/// assert_eq!(member.name(), "key-2");
/// ```
pub struct Member<S> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) weight: u32,
    pub(crate) tier: u32,
    pub(crate) headroom: Option<Headroom>,
}

impl<S> Member<S> {
    /// A member of weight 1 in tier 0 (the first).
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Member {
            name: name.into(),
            service,
            weight: 1,
            tier: 0,
            headroom: None,
        }
    }

    /// Its share relative to the others of its tier (default 1; 0 is refused at build).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Its priority tier: lower tiers are used first; a tier takes traffic only when no
    /// member of the tiers before it is available (default 0).
    pub fn tier(mut self, tier: u32) -> Self {
        self.tier = tier;
        self
    }

    /// Where the quota-aware strategy reads the member's headroom besides the provider's
    /// `x-ratelimit-remaining-*` headers: typically its own rate limiter's level.
    pub fn headroom_from(mut self, read: impl Fn() -> Option<u64> + Send + Sync + 'static) -> Self {
        self.headroom = Some(Arc::new(read));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The same member (name, weight, tier, headroom) over another service: one member
    /// description serves the chat, streaming and embeddings pools of one key.
    pub fn map<T>(self, make: impl FnOnce(S) -> T) -> Member<T> {
        Member {
            name: self.name,
            service: make(self.service),
            weight: self.weight,
            tier: self.tier,
            headroom: self.headroom,
        }
    }
}

impl<S: Clone> Clone for Member<S> {
    fn clone(&self) -> Self {
        Member {
            name: self.name.clone(),
            service: self.service.clone(),
            weight: self.weight,
            tier: self.tier,
            headroom: self.headroom.clone(),
        }
    }
}

impl<S> fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}
