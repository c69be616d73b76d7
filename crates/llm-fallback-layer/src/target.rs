//! [`Target`]: one service in a fallback chain, with its name, trigger, chain and rewrite.

use std::fmt;
use std::sync::Arc;

use llm_core::{ErrorKind, ErrorKinds, ModelRequest, Outcome};
use serde::{Deserialize, Serialize};

/// Which failures lead to a target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// The ordinary chain: any failure the previous target's trigger lets through.
    #[default]
    Regular,
    /// Only a `ContextLengthExceeded` failure leads here: larger-context models. While such
    /// targets remain, an over-long prompt skips the regular ones.
    ContextWindow,
    /// Only a `ContentFiltered` failure leads here (opt-in): models or providers with other
    /// content policies. Without such targets a content refusal is returned as it is.
    ContentPolicy,
}

pub(crate) type Rewrite<Req> = Arc<dyn Fn(&mut Req) + Send + Sync>;
pub(crate) type TriggerFn = Arc<dyn Fn(&Outcome) -> bool + Send + Sync>;

/// One named service in a fallback chain.
///
/// Its trigger decides which of *its* failures move on to the next target (default: the
/// kinds for which [`ErrorKind::triggers_fallback`] holds: everything but invalid requests,
/// content refusals and cancellations). Its rewrite adapts the request before it is sent —
/// another provider's name for the model, a smaller `max_tokens`.
///
/// ```
/// use llm_core::ErrorKind;
/// use llm_fallback_layer::{Chain, Target};
/// use llm_testkit::{ReadyService, TestRequest, TestResponse};
///
/// let backup: Target<_, TestRequest> = Target::new("openrouter", ReadyService::new(TestResponse::EMPTY))
///     .model("openai/gpt-4o")
///     .max_tokens(512)
///     .on(ErrorKind::RateLimited);
/// let bigger: Target<_, TestRequest> = Target::new("gemini-long", ReadyService::new(TestResponse::EMPTY))
///     .model("gemini-1.5-pro")
///     .chain(Chain::ContextWindow);
/// assert_eq!(backup.name(), "openrouter");
/// ```
pub struct Target<S, Req> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) trigger: Trigger,
    pub(crate) chain: Chain,
    pub(crate) rewrite: Option<Rewrite<Req>>,
}

#[derive(Clone)]
pub(crate) enum Trigger {
    Kinds(ErrorKinds),
    With(TriggerFn),
}

impl Trigger {
    pub(crate) fn moves_on(&self, outcome: &Outcome, kind: ErrorKind) -> bool {
        match self {
            Trigger::Kinds(kinds) => kinds.contains(kind),
            Trigger::With(predicate) => predicate(outcome),
        }
    }
}

impl<S: Clone, Req> Clone for Target<S, Req> {
    fn clone(&self) -> Self {
        Target {
            name: self.name.clone(),
            service: self.service.clone(),
            trigger: self.trigger.clone(),
            chain: self.chain,
            rewrite: self.rewrite.clone(),
        }
    }
}

impl<S, Req> fmt::Debug for Target<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trigger: &dyn fmt::Debug = match &self.trigger {
            Trigger::Kinds(kinds) => kinds,
            Trigger::With(_) => &"closure",
        };
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("trigger", trigger)
            .field("chain", &self.chain)
            .field("rewrite", &self.rewrite.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Target<S, Req> {
    /// A target named `name` (used in errors, logs, metadata and hooks) calling `service`.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Target {
            name: name.into(),
            service,
            trigger: Trigger::Kinds(ErrorKinds::FALLBACK),
            chain: Chain::Regular,
            rewrite: None,
        }
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves on past this target exactly on these kinds of failure.
    #[must_use]
    pub fn on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.trigger = Trigger::Kinds(kinds.into());
        self
    }

    /// Moves on past this target when `predicate` says so.
    #[must_use]
    pub fn on_outcome(
        mut self,
        predicate: impl Fn(&Outcome) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.trigger = Trigger::With(Arc::new(predicate));
        self
    }

    /// Puts the target on a special chain.
    #[must_use]
    pub fn chain(mut self, chain: Chain) -> Self {
        self.chain = chain;
        self
    }

    /// Rewrites the request before it is sent to this target (after any earlier rewrite).
    #[must_use]
    pub fn map_request(mut self, rewrite: impl Fn(&mut Req) + Send + Sync + 'static) -> Self
    where
        Req: 'static,
    {
        self.rewrite = Some(match self.rewrite.take() {
            None => Arc::new(rewrite),
            Some(first) => Arc::new(move |req: &mut Req| {
                first(req);
                rewrite(req);
            }),
        });
        self
    }
}

impl<S, Req: ModelRequest + 'static> Target<S, Req> {
    /// Sends `model` instead of the requested one.
    #[must_use]
    pub fn model(self, model: impl Into<String>) -> Self {
        let model = model.into();
        self.map_request(move |req| req.set_model(&model))
    }

    /// Limits the answer to `max_tokens`.
    #[must_use]
    pub fn max_tokens(self, max_tokens: u32) -> Self {
        self.map_request(move |req| req.set_max_tokens(max_tokens))
    }

    /// Samples at `temperature`.
    #[must_use]
    pub fn temperature(self, temperature: f32) -> Self {
        self.map_request(move |req| req.set_temperature(temperature))
    }
}
