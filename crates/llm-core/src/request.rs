//! What a request carries for the layers: a [`Deadline`], an [`AttemptBudget`], and how many
//! fallback targets remain ([`RemainingTargets`]), all in its `http::Extensions`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

use crate::kind::ErrorKinds;

/// Access to a request's `http::Extensions`, where callers and layers leave a [`Deadline`],
/// an [`AttemptBudget`] and [`RemainingTargets`] for the layers further in.
///
/// `http::Request` implements it; so does the providers' `ChatRequest`. A request type with
/// no extensions implements it with the defaults, and the layers then see no deadline and no
/// budget:
///
/// ```
/// use llm_core::RequestExtensions;
///
/// #[derive(Clone)]
/// struct Ping;
/// impl RequestExtensions for Ping {}
///
/// assert!(Ping.request_extensions().is_none());
/// ```
#[diagnostic::on_unimplemented(
    message = "the layers cannot read `{Self}`'s deadline and budgets",
    note = "implement `RequestExtensions` for it (every method has a default)",
    note = "for `reqwest::Request`, enable the `reqwest` feature of llm-tower (or of llm-core)"
)]
pub trait RequestExtensions {
    /// The request's extensions, when it has any.
    fn request_extensions(&self) -> Option<&Extensions> {
        None
    }

    /// The request's extensions, mutably, when it has any.
    fn request_extensions_mut(&mut self) -> Option<&mut Extensions> {
        None
    }

    /// The request's [`Deadline`], if a caller set one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_core::{Deadline, RequestExtensions};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut req = http::Request::new(());
    /// assert!(req.deadline().is_none());
    /// req.extensions_mut().insert(Deadline::after(Duration::from_secs(30)));
    /// assert!(req.deadline().is_some());
    /// # }
    /// ```
    fn deadline(&self) -> Option<Deadline> {
        self.request_extensions()?.get::<Deadline>().copied()
    }

    /// The request's [`AttemptBudget`], if a caller set one.
    fn attempt_budget(&self) -> Option<&AttemptBudget> {
        self.request_extensions()?.get::<AttemptBudget>()
    }

    /// How many fallback targets remain after the current one (zero when no fallback layer
    /// said so).
    fn remaining_targets(&self) -> u32 {
        self.request_extensions()
            .and_then(|ext| ext.get::<RemainingTargets>())
            .map_or(0, |remaining| remaining.0)
    }

    /// The kinds of the failed attempts made for this request on the same target before this
    /// one (none on a first attempt). The retry layer sets it on each retry; the breaker
    /// reads it so that one request's retries count against a target at most once.
    ///
    /// ```
    /// use llm_core::{EarlierFailures, ErrorKind, ErrorKinds, RequestExtensions};
    ///
    /// let mut req = http::Request::new(());
    /// assert!(req.earlier_failures().is_empty());
    /// req.extensions_mut().insert(EarlierFailures(ErrorKinds::of(&[ErrorKind::ServerError])));
    /// assert!(req.earlier_failures().contains(ErrorKind::ServerError));
    /// ```
    fn earlier_failures(&self) -> ErrorKinds {
        self.request_extensions()
            .and_then(|ext| ext.get::<EarlierFailures>())
            .map_or(ErrorKinds::NONE, |earlier| earlier.0)
    }

    /// Records how many fallback targets remain, for the layers further in. The default
    /// keeps [`RemainingTargets`] in the extensions (which allocates their map on first
    /// use); a request type with a field of its own overrides both methods.
    ///
    /// ```
    /// use llm_core::RequestExtensions;
    ///
    /// let mut req = http::Request::new(());
    /// req.set_remaining_targets(3);
    /// assert_eq!(req.remaining_targets(), 3);
    /// ```
    fn set_remaining_targets(&mut self, remaining: u32) {
        if let Some(extensions) = self.request_extensions_mut() {
            // Nothing to say is the same as zero: do not allocate the map for it.
            if remaining > 0 || extensions.get::<RemainingTargets>().is_some() {
                extensions.insert(RemainingTargets(remaining));
            }
        }
    }
}

/// A request that names a model and generation limits, so that layers can rewrite them:
/// a fallback to another provider's name for the same model (`gpt-4o` →
/// `openai/gpt-4o`), to a larger-context model, or with a smaller `max_tokens`. The
/// providers' `ChatRequest` implements it.
///
/// ```
/// use llm_core::ModelRequest;
///
/// struct Prompt { model: String, max_tokens: Option<u32>, temperature: Option<f32> }
/// impl ModelRequest for Prompt {
///     fn model(&self) -> &str { &self.model }
///     fn set_model(&mut self, model: &str) { self.model = model.to_owned() }
///     fn set_max_tokens(&mut self, max_tokens: u32) { self.max_tokens = Some(max_tokens) }
///     fn set_temperature(&mut self, temperature: f32) { self.temperature = Some(temperature) }
/// }
/// let mut p = Prompt { model: "gpt-4o".into(), max_tokens: None, temperature: None };
/// p.set_model("openai/gpt-4o");
/// assert_eq!(p.model(), "openai/gpt-4o");
/// ```
pub trait ModelRequest {
    /// The model the request asks for.
    fn model(&self) -> &str;
    /// Asks for `model` instead.
    fn set_model(&mut self, model: &str);
    /// Limits the answer to `max_tokens`.
    fn set_max_tokens(&mut self, max_tokens: u32);
    /// Samples at `temperature`.
    fn set_temperature(&mut self, temperature: f32);
}

impl<B> RequestExtensions for http::Request<B> {
    fn request_extensions(&self) -> Option<&Extensions> {
        Some(self.extensions())
    }

    fn request_extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(self.extensions_mut())
    }
}

// Plain request types carry no extensions: the layers see no deadline and no budget.
macro_rules! no_extensions {
    ($($ty:ty),* $(,)?) => { $(impl RequestExtensions for $ty {})* };
}
no_extensions!(
    (),
    String,
    &str,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    bool,
    char
);

impl<T> RequestExtensions for Vec<T> {}
impl<A, B> RequestExtensions for (A, B) {}
impl<A, B, C> RequestExtensions for (A, B, C) {}

impl<T: RequestExtensions + ?Sized> RequestExtensions for Box<T> {
    fn request_extensions(&self) -> Option<&Extensions> {
        (**self).request_extensions()
    }

    fn request_extensions_mut(&mut self) -> Option<&mut Extensions> {
        (**self).request_extensions_mut()
    }
}

impl<T: RequestExtensions + ?Sized> RequestExtensions for Arc<T> {
    fn request_extensions(&self) -> Option<&Extensions> {
        (**self).request_extensions()
    }

    // A shared request cannot be changed in place; layers that need to write clone it first.
}

/// When a request must be finished, on tokio's clock (so paused test time applies).
///
/// Retry never sleeps past it, the rate limiter never waits past it, and a fallback target is
/// not started after it.
///
/// ```
/// use std::time::Duration;
/// use llm_core::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let deadline = Deadline::after(Duration::from_secs(10));
/// tokio::time::advance(Duration::from_secs(4)).await;
/// assert_eq!(deadline.remaining(), Duration::from_secs(6));
/// assert!(!deadline.is_expired());
/// tokio::time::advance(Duration::from_secs(6)).await;
/// assert!(deadline.is_expired());
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `timeout` from now. A timeout too large to represent means "no deadline
    /// in practice": it is clamped to about thirty years.
    pub fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Deadline(
            now.checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
        )
    }

    /// The instant of the deadline.
    pub const fn instant(&self) -> Instant {
        self.0
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of two deadlines.
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        Ord::min(self, other)
    }
}

/// The most upstream attempts one request may make, across every retry and fallback layer
/// it passes. Clones share the count, so a budget put in a request's extensions is spent by
/// every attempt made for it, whichever layer makes it.
///
/// ```
/// use llm_core::AttemptBudget;
///
/// let budget = AttemptBudget::new(2);
/// let shared = budget.clone();
/// assert!(budget.try_acquire());
/// assert!(shared.try_acquire());
/// assert!(!budget.try_acquire());
/// assert_eq!(shared.used(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct AttemptBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max: u32,
    used: AtomicU32,
}

impl AttemptBudget {
    /// A budget of `max_attempts` upstream attempts.
    pub fn new(max_attempts: u32) -> Self {
        AttemptBudget {
            inner: Arc::new(BudgetInner {
                max: max_attempts,
                used: AtomicU32::new(0),
            }),
        }
    }

    /// Takes one attempt from the budget; `false` when none is left.
    pub fn try_acquire(&self) -> bool {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.inner.max).then_some(used + 1)
            })
            .is_ok()
    }

    /// Attempts taken so far.
    pub fn used(&self) -> u32 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Attempts left.
    pub fn remaining(&self) -> u32 {
        self.inner.max.saturating_sub(self.used())
    }

    /// The budget's size.
    pub fn max(&self) -> u32 {
        self.inner.max
    }
}

/// How many fallback targets remain after the one a request is being sent to. The fallback
/// layer sets it; the retry layer reads it to hand over at once, instead of retrying, when
/// the current target is silent or gone and another is waiting.
///
/// ```
/// use llm_core::{RemainingTargets, RequestExtensions};
///
/// let mut req = http::Request::new(());
/// assert_eq!(req.remaining_targets(), 0);
/// req.extensions_mut().insert(RemainingTargets(2));
/// assert_eq!(req.remaining_targets(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemainingTargets(pub u32);

/// The kinds of failure a request met on earlier attempts at the same target. The retry
/// layer puts it in each retry's extensions; the circuit breaker counts a failure only when
/// no earlier attempt of the same request already counted, so that one request's own
/// retries never open a breaker by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EarlierFailures(pub ErrorKinds);

// reqwest's request keeps no public extensions: the layers see no deadline on it.
#[cfg(feature = "reqwest")]
impl RequestExtensions for reqwest::Request {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_counts_down_on_tokio_time() {
        let deadline = Deadline::after(Duration::from_millis(500));
        assert_eq!(deadline.remaining(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(800)).await;
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert!(deadline.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn huge_deadlines_do_not_overflow() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(!deadline.is_expired());
        assert!(deadline.remaining() > Duration::from_secs(86_400 * 365));
        let near = Deadline::after(Duration::from_secs(1));
        assert_eq!(deadline.min(near), near);
    }

    #[test]
    fn budget_is_shared_and_never_overspent() {
        let budget = AttemptBudget::new(3);
        let clones: Vec<_> = (0..4).map(|_| budget.clone()).collect();
        let granted = clones.iter().filter(|b| b.try_acquire()).count();
        assert_eq!(granted, 3);
        assert!(!budget.try_acquire());
        assert_eq!(budget.remaining(), 0);
        assert_eq!(budget.max(), 3);
        assert!(!AttemptBudget::new(0).try_acquire());
    }

    #[test]
    fn budget_holds_under_contention() {
        let budget = AttemptBudget::new(1000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..500).filter(|_| budget.try_acquire()).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 1000);
        assert_eq!(budget.used(), 1000);
    }
}
