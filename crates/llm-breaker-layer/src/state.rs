//! [`CircuitBreaker`]: the state machine, driven by explicit instants — no tower, no tasks.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use llm_core::backoff::Backoff;
use llm_core::{CircuitOpen, ConfigError, ErrorKinds};
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::window::{FAILED, SLOW, Tally, Window};

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected at once until the open duration ends.
    Open,
    /// A few probe calls pass to test the target; the rest are rejected.
    HalfOpen,
    /// Opened by hand: every call is rejected until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Closed by hand: every call passes and nothing is counted until `reset`.
    Disabled,
}

impl State {
    /// The stable `snake_case` name, for logs, metrics and health endpoints.
    ///
    /// ```
    /// assert_eq!(llm_breaker_layer::State::HalfOpen.as_str(), "half_open");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    const fn from_u8(value: u8) -> State {
        match value {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a call that passed the breaker ended, in the breaker's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallResult {
    /// The target answered.
    Success,
    /// The call failed in a way that counts against the target.
    Failure,
    /// Neither: a failure of the caller (rate limit, bad request), or a cancelled call. A
    /// probe slot it held is freed.
    Ignored,
}

/// A state change, as `on_state_change` hooks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name (its key, for keyed breakers), if it has one.
    pub name: Option<Arc<str>>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// How long it stays open, when `to` is [`State::Open`].
    pub open_for: Option<Duration>,
    /// Whether another instance made this change, through shared state (feature `redis`).
    pub from_peer: bool,
}

pub(crate) type OnStateChange = Arc<dyn Fn(&StateChange) + Send + Sync>;
pub(crate) type OnRejected = Arc<dyn Fn(&CircuitOpen) + Send + Sync>;

/// Where a breaker's trips and recoveries go beyond this process, and where other
/// instances' come from: the state shared through Redis implements it (feature `redis`).
pub(crate) trait Peers: Send + Sync {
    /// Follows `breaker`'s shared record from now on: the peers' decisions reach it through
    /// [`CircuitBreaker::adopt`].
    fn follow(&self, breaker: &Arc<CircuitBreaker>);
    /// Publishes `change` (a trip or a recovery) of the breaker `name`.
    fn publish(&self, name: &Arc<str>, change: &StateChange, trips: u32);
    /// Whether the shared state was unreachable at its last call.
    fn is_down(&self) -> bool;
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
/// A state published by another instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PeerState {
    /// Open for `retry_in` more, after `trips` trips in a row.
    Open {
        retry_in: Duration,
        trips: u32,
    },
    Closed,
}

/// Settings shared by every breaker of a layer (one per key for keyed breakers).
pub(crate) struct Settings {
    pub(crate) config: BreakerConfig,
    pub(crate) backoff: Backoff,
    pub(crate) count_kinds: ErrorKinds,
    pub(crate) on_state_change: Option<OnStateChange>,
    pub(crate) on_rejected: Option<OnRejected>,
    pub(crate) shared: Option<Arc<dyn Peers>>,
}

impl Settings {
    pub(crate) fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Settings {
            backoff: config.open_backoff(),
            count_kinds: config.count_kinds,
            config,
            on_state_change: None,
            on_rejected: None,
            shared: None,
        })
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`]. Hand it back with
/// [`CircuitBreaker::record`] (or [`release`](CircuitBreaker::release) if the call was
/// never made), so that a half-open probe slot is never lost.
#[derive(Debug)]
#[must_use = "a permit must be handed back with record or release"]
pub struct Permit {
    probe: Option<u64>,
    started: Option<Instant>,
}

impl Permit {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// A snapshot of a breaker's state and window.
///
/// ```
/// use llm_breaker_layer::{BreakerConfig, CallResult, CircuitBreaker};
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let breaker = CircuitBreaker::new(BreakerConfig::standard(), t0).unwrap();
/// let permit = breaker.try_acquire(t0).unwrap();
/// breaker.record(permit, CallResult::Failure, t0);
/// let m = breaker.metrics(t0);
/// assert_eq!((m.calls, m.failures, m.consecutive_failures), (1, 1, 1));
/// assert_eq!(m.failure_rate, 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Calls in the window.
    pub calls: u32,
    /// Failures in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow_calls: u32,
    /// Failures per call in the window (0 when empty).
    pub failure_rate: f64,
    /// Slow calls per call in the window (0 when empty).
    pub slow_call_rate: f64,
    /// Failures in a row, up to now.
    pub consecutive_failures: u32,
    /// How long the breaker has been in this state.
    pub time_in_state: Duration,
    /// Time until the next probe may pass, while open.
    pub retry_in: Option<Duration>,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// Times the breaker opened since it was created.
    pub trips: u64,
    /// Probe calls in flight.
    pub probes_in_flight: u32,
}

struct Control {
    // Bumped on every transition, so that a probe answering after its episode ended is
    // recognised as stale and changes nothing.
    generation: u64,
    // Trips since the breaker last closed after a recovery: grows the open duration.
    consecutive_trips: u32,
    probes_in_flight: u32,
    probe_successes: u32,
    entered: Instant,
}

/// A circuit breaker's state machine, safe to share between threads.
///
/// Every method takes the current time explicitly, so the machine runs the same under a
/// test's fixed instants as under the tower layer's clock. While closed, admitting a call
/// and recording its result are lock-free (see the count window); transitions take a short
/// lock.
///
/// ```
/// use std::time::Duration;
/// use llm_breaker_layer::{BreakerConfig, CallResult, CircuitBreaker, State};
/// use tokio::time::Instant;
///
/// let config = BreakerConfig { consecutive_failures: Some(2), open_jitter: 0.0, ..BreakerConfig::standard() };
/// let t0 = Instant::now();
/// let breaker = CircuitBreaker::new(config, t0).unwrap();
///
/// for _ in 0..2 {
///     let permit = breaker.try_acquire(t0).unwrap();
///     breaker.record(permit, CallResult::Failure, t0);
/// }
/// assert_eq!(breaker.state(t0), State::Open);
/// let rejected = breaker.try_acquire(t0 + Duration::from_secs(10)).unwrap_err();
/// assert_eq!(rejected.retry_in(), Duration::from_secs(20));
///
/// // After the open duration (30 s) one probe passes; its success closes the breaker.
/// let probe = breaker.try_acquire(t0 + Duration::from_secs(30)).unwrap();
/// assert!(probe.is_probe());
/// breaker.record(probe, CallResult::Success, t0 + Duration::from_secs(31));
/// assert_eq!(breaker.state(t0 + Duration::from_secs(31)), State::Closed);
/// ```
pub struct CircuitBreaker {
    settings: Arc<Settings>,
    name: Option<Arc<str>>,
    state: AtomicU8,
    window: Window,
    consecutive: AtomicU32,
    // Nanoseconds after `origin` at which an open breaker lets a probe through.
    open_until: AtomicU64,
    origin: Instant,
    rejected: AtomicU64,
    trips: AtomicU64,
    control: Mutex<Control>,
    meters: crate::metrics::Meters,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.current())
            .field(
                "consecutive_failures",
                &self.consecutive.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker with `config`, created at `now`.
    pub fn new(config: BreakerConfig, now: Instant) -> Result<Self, ConfigError> {
        Ok(CircuitBreaker::with_settings(
            Arc::new(Settings::new(config)?),
            None,
            now,
        ))
    }

    /// A closed breaker with `config`, created at `now`, calling `on_state_change` after every
    /// transition.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use llm_breaker_layer::{BreakerConfig, CallResult, CircuitBreaker, State};
    /// use tokio::time::Instant;
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let t0 = Instant::now();
    /// let config = BreakerConfig { consecutive_failures: Some(1), ..BreakerConfig::standard() };
    /// let breaker = CircuitBreaker::observed(config, t0, move |c| log.lock().unwrap().push((c.from, c.to))).unwrap();
    /// let permit = breaker.try_acquire(t0).unwrap();
    /// breaker.record(permit, CallResult::Failure, t0);
    /// assert_eq!(*seen.lock().unwrap(), [(State::Closed, State::Open)]);
    /// ```
    pub fn observed(
        config: BreakerConfig,
        now: Instant,
        on_state_change: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(config)?;
        settings.on_state_change = Some(Arc::new(on_state_change));
        Ok(CircuitBreaker::with_settings(Arc::new(settings), None, now))
    }

    pub(crate) fn with_settings(
        settings: Arc<Settings>,
        name: Option<Arc<str>>,
        now: Instant,
    ) -> Self {
        CircuitBreaker {
            window: Window::new(settings.config.window, now),
            meters: crate::metrics::Meters::new(name.as_deref().unwrap_or("")),
            settings,
            name,
            state: AtomicU8::new(State::Closed as u8),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            origin: now,
            rejected: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            control: Mutex::new(Control {
                generation: 0,
                consecutive_trips: 0,
                probes_in_flight: 0,
                probe_successes: 0,
                entered: now,
            }),
        }
    }

    /// The breaker's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn current(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether admitting and recording a call while closed needs the time: with a time
    /// window or slow-call tracking. The tower layer reads the clock only then.
    pub(crate) fn needs_clock(&self) -> bool {
        self.window.needs_clock() || self.settings.config.slow_call_duration.is_some()
    }

    /// Asks to make a call at `now`: a [`Permit`], or [`CircuitOpen`] with the time until a
    /// probe may pass.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, CircuitOpen> {
        self.try_acquire_with(|| now)
    }

    /// As `try_acquire`, reading the time only if the decision needs it.
    pub(crate) fn try_acquire_with(
        &self,
        now: impl FnOnce() -> Instant,
    ) -> Result<Permit, CircuitOpen> {
        match self.current() {
            State::Closed => {
                let started = self.needs_clock().then(now);
                Ok(Permit {
                    probe: None,
                    started,
                })
            }
            State::Disabled => Ok(Permit {
                probe: None,
                started: None,
            }),
            State::ForcedOpen => Err(self.reject(self.settings.config.open_duration)),
            State::Open => {
                let now = now();
                let retry_in = self.open_remaining(now);
                if !retry_in.is_zero() {
                    return Err(self.reject(retry_in));
                }
                self.try_probe(now)
            }
            State::HalfOpen => self.try_probe(now()),
        }
    }

    fn open_remaining(&self, now: Instant) -> Duration {
        let until = Duration::from_nanos(self.open_until.load(Ordering::Acquire));
        until.saturating_sub(now.saturating_duration_since(self.origin))
    }

    fn reject(&self, retry_in: Duration) -> CircuitOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.meters.rejected();
        let mut err = CircuitOpen::new(retry_in);
        if let Some(name) = &self.name {
            err = err.with_name(name.clone());
        }
        if let Some(hook) = &self.settings.on_rejected {
            hook(&err);
        }
        err
    }

    fn try_probe(&self, now: Instant) -> Result<Permit, CircuitOpen> {
        let mut control = self.control();
        let mut change = None;
        match self.current() {
            State::Open if self.open_remaining(now).is_zero() => {
                change = Some(self.enter(&mut control, State::HalfOpen, now, None));
            }
            State::HalfOpen => {}
            // Another thread moved the breaker on while we took the lock: decide again.
            _ => {
                drop(control);
                return self.try_acquire(now);
            }
        }
        let result = if control.probes_in_flight < self.settings.config.half_open_probes {
            control.probes_in_flight += 1;
            Ok(Permit {
                probe: Some(control.generation),
                started: Some(now),
            })
        } else {
            Err(())
        };
        drop(control);
        if let Some(change) = change {
            self.notify(&change);
        }
        // NOTE: every probe slot is taken; the probes decide shortly, so "retry now" is the
        // honest hint.
        result.map_err(|()| self.reject(Duration::ZERO))
    }

    /// Records how the call of `permit` ended at `now`.
    pub fn record(&self, permit: Permit, result: CallResult, now: Instant) {
        self.record_with(permit, result, || now);
    }

    /// Hands back a permit whose call was never made (or was cancelled).
    pub fn release(&self, permit: Permit) {
        self.record_with(permit, CallResult::Ignored, Instant::now);
    }

    pub(crate) fn record_with(
        &self,
        permit: Permit,
        result: CallResult,
        now: impl FnOnce() -> Instant,
    ) {
        let mut now = Lazy::new(now);
        let slow = match (permit.started, self.settings.config.slow_call_duration) {
            (Some(started), Some(threshold)) if result != CallResult::Ignored => {
                now.get().saturating_duration_since(started) >= threshold
            }
            _ => false,
        };
        if let Some(generation) = permit.probe {
            self.record_probe(generation, result, slow, now.get());
            return;
        }
        if result == CallResult::Ignored || self.current() != State::Closed {
            // Calls admitted before a trip and ending after it, and calls while disabled,
            // say nothing about the episode at hand.
            return;
        }
        let failed = result == CallResult::Failure;
        let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        self.window.record(flags, || now.get());
        let consecutive = if failed {
            self.consecutive.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Release);
            }
            0
        };
        if flags != 0 && self.should_trip(consecutive, self.window.tally(|| now.get())) {
            self.trip_from(State::Closed, now.get());
        }
    }

    fn should_trip(&self, consecutive: u32, tally: Tally) -> bool {
        let config = &self.settings.config;
        if config
            .consecutive_failures
            .is_some_and(|limit| consecutive >= limit)
        {
            return true;
        }
        if tally.calls < config.minimum_calls.max(1) {
            return false;
        }
        config
            .failure_rate
            .is_some_and(|limit| tally.failure_rate() >= limit)
            || (config.slow_call_duration.is_some() && tally.slow_rate() >= config.slow_call_rate)
    }

    fn record_probe(&self, generation: u64, result: CallResult, slow: bool, now: Instant) {
        let mut control = self.control();
        if control.generation != generation || self.current() != State::HalfOpen {
            return;
        }
        control.probes_in_flight = control.probes_in_flight.saturating_sub(1);
        // A probe that answered, but slowly, says the target is not well yet.
        let result = if slow && result == CallResult::Success {
            CallResult::Failure
        } else {
            result
        };
        let change = match result {
            CallResult::Ignored => None,
            CallResult::Failure => Some(self.open(&mut control, now)),
            CallResult::Success => {
                control.probe_successes += 1;
                (control.probe_successes >= self.settings.config.success_threshold).then(|| {
                    control.consecutive_trips = 0;
                    self.enter(&mut control, State::Closed, now, None)
                })
            }
        };
        let trips = control.consecutive_trips;
        drop(control);
        if let Some(change) = change {
            self.notify(&change);
            self.share(&change, trips);
        }
    }

    /// Publishes a trip or a recovery this breaker decided; changes made by hand and
    /// changes adopted from peers stay where they are.
    fn share(&self, change: &StateChange, trips: u32) {
        if let (Some(shared), Some(name)) = (&self.settings.shared, &self.name) {
            shared.publish(name, change, trips);
        }
    }

    /// Takes on a state another instance published: open for `retry_in` after `trips`
    /// trips in a row, or closed. A breaker forced open or closed by hand stays so.
    #[cfg(feature = "redis")]
    pub(crate) fn adopt(&self, peer: PeerState, now: Instant) {
        let mut control = self.control();
        let change = match (self.current(), peer) {
            (State::ForcedOpen | State::Disabled, _) | (State::Closed, PeerState::Closed) => None,
            (from, PeerState::Open { retry_in, trips }) => {
                control.consecutive_trips = trips;
                self.set_open_until(now, retry_in);
                // Already open: only the time to the next probe changes.
                (from != State::Open).then(|| {
                    self.trips.fetch_add(1, Ordering::Relaxed);
                    self.enter(&mut control, State::Open, now, Some(retry_in))
                })
            }
            (_, PeerState::Closed) => {
                control.consecutive_trips = 0;
                Some(self.enter(&mut control, State::Closed, now, None))
            }
        };
        drop(control);
        if let Some(mut change) = change {
            change.from_peer = true;
            self.notify(&change);
        }
    }

    /// Starts following the shared state, if there is one (a no-op otherwise).
    pub(crate) fn follow_shared(self: &Arc<Self>) {
        if let Some(shared) = &self.settings.shared {
            shared.follow(self);
        }
    }

    /// Whether the state is shared through Redis.
    pub(crate) fn is_shared(&self) -> bool {
        self.settings.shared.is_some()
    }

    /// Whether the shared state's Redis was unreachable at its last call.
    pub(crate) fn redis_unreachable(&self) -> bool {
        self.settings.shared.as_ref().is_some_and(|s| s.is_down())
    }

    /// Time until an open breaker lets a probe through (`None` unless open).
    pub(crate) fn open_for_now(&self, now: Instant) -> Option<Duration> {
        (self.current() == State::Open).then(|| self.open_remaining(now))
    }

    fn set_open_until(&self, now: Instant, open_for: Duration) {
        let until = now
            .saturating_duration_since(self.origin)
            .saturating_add(open_for);
        self.open_until.store(
            u64::try_from(until.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    fn trip_from(&self, from: State, now: Instant) {
        let mut control = self.control();
        if self.current() != from {
            return;
        }
        let change = self.open(&mut control, now);
        let trips = control.consecutive_trips;
        drop(control);
        self.notify(&change);
        self.share(&change, trips);
    }

    fn open(&self, control: &mut Control, now: Instant) -> StateChange {
        control.consecutive_trips = control.consecutive_trips.saturating_add(1);
        let base = self.settings.backoff.base_delay(control.consecutive_trips);
        let jitter = self.settings.config.open_jitter;
        let open_for = if jitter > 0.0 {
            base.mul_f64(1.0 - jitter * fastrand::f64())
        } else {
            base
        };
        self.set_open_until(now, open_for);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.enter(control, State::Open, now, Some(open_for))
    }

    /// Moves to `to` under the control lock; the caller notifies after releasing it, so
    /// that hooks may call back into the breaker.
    fn enter(
        &self,
        control: &mut Control,
        to: State,
        now: Instant,
        open_for: Option<Duration>,
    ) -> StateChange {
        let from = self.current();
        control.generation += 1;
        control.probes_in_flight = 0;
        control.probe_successes = 0;
        control.entered = now;
        if matches!(to, State::Closed | State::Open) {
            self.window.clear(|| now);
            self.consecutive.store(0, Ordering::Release);
        }
        self.state.store(to as u8, Ordering::Release);
        StateChange {
            name: self.name.clone(),
            from,
            to,
            open_for,
            from_peer: false,
        }
    }

    fn notify(&self, change: &StateChange) {
        let name = change.name.as_deref().unwrap_or("");
        self.meters
            .changed(name, change.from.as_str(), change.to.as_str());
        match change.to {
            State::Open | State::ForcedOpen => tracing::warn!(
                breaker = name,
                from = change.from.as_str(),
                to = change.to.as_str(),
                open_for_ms = change.open_for.map(|d| d.as_millis() as u64),
                from_peer = change.from_peer,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                breaker = name,
                from = change.from.as_str(),
                to = change.to.as_str(),
                from_peer = change.from_peer,
                "circuit breaker state changed"
            ),
        }
        if let Some(hook) = &self.settings.on_state_change {
            hook(change);
        }
    }

    /// The state at `now`. An open breaker whose open duration has ended reports
    /// [`State::HalfOpen`]: the next call will be a probe.
    pub fn state(&self, now: Instant) -> State {
        match self.current() {
            State::Open if self.open_remaining(now).is_zero() => State::HalfOpen,
            state => state,
        }
    }

    /// A snapshot of the state and the window at `now`.
    pub fn metrics(&self, now: Instant) -> Metrics {
        let control = self.control();
        let tally = self.window.tally(|| now);
        let state = self.state(now);
        Metrics {
            state,
            calls: tally.calls,
            failures: tally.failures,
            slow_calls: tally.slow,
            failure_rate: tally.failure_rate(),
            slow_call_rate: tally.slow_rate(),
            consecutive_failures: self.consecutive.load(Ordering::Acquire),
            time_in_state: now.saturating_duration_since(control.entered),
            retry_in: (self.current() == State::Open).then(|| self.open_remaining(now)),
            rejected: self.rejected.load(Ordering::Relaxed),
            trips: self.trips.load(Ordering::Relaxed),
            probes_in_flight: control.probes_in_flight,
        }
    }

    /// Opens the breaker by hand: every call is rejected until [`reset`](Self::reset).
    pub fn force_open(&self, now: Instant) {
        self.force(State::ForcedOpen, now);
    }

    /// Closes the breaker by hand and stops counting: every call passes until
    /// [`reset`](Self::reset).
    pub fn force_closed(&self, now: Instant) {
        self.force(State::Disabled, now);
    }

    /// Back to closed, with an empty window and the open duration back at its start.
    pub fn reset(&self, now: Instant) {
        let mut control = self.control();
        control.consecutive_trips = 0;
        let change = self.enter(&mut control, State::Closed, now, None);
        drop(control);
        self.notify(&change);
    }

    fn force(&self, to: State, now: Instant) {
        let mut control = self.control();
        if self.current() == to {
            return;
        }
        let change = self.enter(&mut control, to, now, None);
        drop(control);
        self.notify(&change);
    }

    /// The kinds of failure that count against the target.
    pub fn count_kinds(&self) -> ErrorKinds {
        self.settings.count_kinds
    }
}

/// A time read at most once, and only if asked for.
struct Lazy<F> {
    make: Option<F>,
    value: Option<Instant>,
}

impl<F: FnOnce() -> Instant> Lazy<F> {
    fn new(make: F) -> Self {
        Lazy {
            make: Some(make),
            value: None,
        }
    }

    fn get(&mut self) -> Instant {
        if let Some(make) = self.make.take() {
            self.value = Some(make());
        }
        self.value.expect("the time was read")
    }
}
