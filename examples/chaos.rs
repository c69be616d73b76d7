//! The chaos report: thousands of requests, in virtual time, against simulated providers with
//! fault profiles — once through a naive stack (tower's plain retry), once through llm-tower's
//! — with a side-by-side table and a chart (`chaos.svg`).
//!
//! ```text
//! cargo run --release --example chaos                  # table on stdout, chaos.svg
//! cargo run --release --example chaos -- --out docs/chaos.svg
//! ```
//!
//! It takes a second or two: tokio's clock is paused, so five simulated minutes pass as fast
//! as the CPU allows, and every run gives the same numbers (seeded randomness, one thread).
//!
//! The traffic: 10 requests per second for 300 s (3,000 requests). The providers:
//!
//! - **primary** — 12 requests per second (burst 12), 200–600 ms to answer; a rate-limit
//!   storm from 60 s to 120 s cuts it to 2 per second (`429` with the exact `Retry-After`);
//!   an outage from 150 s to 210 s answers `503`; 5 % of first tokens take longer than the
//!   5 s first-token timeout; 3 % of streams are cut after their first chunk.
//! - **backup** — 25 requests per second, 300–800 ms, otherwise healthy (also 3 % cut).
//!
//! The stacks:
//!
//! - **naive** — `tower::retry` with a policy that retries every error three times at once,
//!   on the primary only: what a first integration does.
//! - **llm-tower** — `Fallback[primary: Retry → Breaker → RateLimit(12/s), backup: Retry →
//!   Breaker]` with the layers' standard presets and a 30 s deadline per request.
//!
//! A cut stream fails the request in both stacks: its first chunk had reached the caller, so
//! neither may replay it.

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use llm_testkit::{TestRequest, TestResponse};
use llm_tower::breaker::BreakerLayer;
use llm_tower::fallback::{Fallback, Target};
use llm_tower::ratelimit::{Mode, Rate, RateLimitConfig, RateLimitLayer};
use llm_tower::retry::RetryLayer;
use llm_tower::{Deadline, ErrorKind, LlmError};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

/// The simulation's length and traffic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scenario {
    /// Simulated duration.
    pub(crate) duration: Duration,
    /// Requests arriving per second, evenly spaced.
    pub(crate) rate: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            duration: Duration::from_secs(300),
            rate: 10,
        }
    }
}

/// Which stack a run goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stack {
    /// tower's retry, every error three times at once, primary only.
    Naive,
    /// llm-tower's retry, breaker, rate limit and fallback.
    LlmTower,
}

impl Stack {
    /// Its name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stack::Naive => "naive (tower retry)",
            Stack::LlmTower => "llm-tower",
        }
    }
}

/// What one run saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// Requests made.
    pub(crate) requests: u32,
    /// Requests answered completely.
    pub(crate) succeeded: u32,
    /// Attempts that reached a provider.
    pub(crate) upstream_attempts: u32,
    /// `429`s the providers sent.
    pub(crate) rate_limited: u32,
    /// Time to the caller's result, every request, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Per 10 s window (by arrival): requests and successes.
    pub(crate) windows: Vec<(u32, u32)>,
    /// Per second: attempts that reached a provider.
    pub(crate) load: Vec<u32>,
}

impl Report {
    /// Successes per request.
    pub(crate) fn success_rate(&self) -> f64 {
        f64::from(self.succeeded) / f64::from(self.requests.max(1))
    }

    /// Upstream attempts per request.
    pub(crate) fn attempts_per_request(&self) -> f64 {
        f64::from(self.upstream_attempts) / f64::from(self.requests.max(1))
    }

    /// The `q` quantile (0 to 1) of the latencies.
    pub(crate) fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index]
    }
}

const WINDOW: Duration = Duration::from_secs(10);
const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider's behaviour over time.
struct Profile {
    name: &'static str,
    rate: f64,
    burst: f64,
    storm: Option<(Duration, Duration, f64)>,
    outage: Option<(Duration, Duration)>,
    slow_share: f64,
    cut_share: f64,
    latency_ms: (u64, u64),
    seed: u64,
}

const PRIMARY: Profile = Profile {
    name: "primary",
    rate: 12.0,
    burst: 12.0,
    storm: Some((Duration::from_secs(60), Duration::from_secs(120), 2.0)),
    outage: Some((Duration::from_secs(150), Duration::from_secs(210))),
    slow_share: 0.05,
    cut_share: 0.03,
    latency_ms: (200, 600),
    seed: 7,
};

const BACKUP: Profile = Profile {
    name: "backup",
    rate: 25.0,
    burst: 25.0,
    storm: None,
    outage: None,
    slow_share: 0.0,
    cut_share: 0.03,
    latency_ms: (300, 800),
    seed: 11,
};

/// Counters shared by the simulated providers of one run.
#[derive(Default)]
struct Tally {
    attempts: u32,
    rate_limited: u32,
    load: Vec<u32>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    rng: fastrand::Rng,
}

/// A provider simulated on tokio's clock: a token bucket answering `429` with the exact
/// `Retry-After`, an outage window, slow first tokens cut by the first-token timeout, cut
/// streams (`TestResponse` body `"cut"`).
#[derive(Clone)]
struct SimProvider {
    profile: &'static Profile,
    start: Instant,
    bucket: Arc<Mutex<Bucket>>,
    tally: Arc<Mutex<Tally>>,
}

impl SimProvider {
    fn new(profile: &'static Profile, start: Instant, tally: Arc<Mutex<Tally>>) -> SimProvider {
        SimProvider {
            profile,
            start,
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: profile.burst,
                refilled: start,
                rng: fastrand::Rng::with_seed(profile.seed),
            })),
            tally,
        }
    }

    /// What happens to a request arriving now: after how long, with what result.
    fn decide(&self) -> (Duration, Result<TestResponse, LlmError>) {
        let now = Instant::now();
        let t = now - self.start;
        let p = self.profile;
        {
            let mut tally = self.tally.lock().unwrap();
            tally.attempts += 1;
            let second = t.as_secs() as usize;
            if tally.load.len() <= second {
                tally.load.resize(second + 1, 0);
            }
            tally.load[second] += 1;
        }
        let mut bucket = self.bucket.lock().unwrap();
        let fail = |kind: ErrorKind, status: u16, message: &str| {
            LlmError::new(kind, message.to_owned())
                .with_provider(p.name)
                .with_status(http::StatusCode::from_u16(status).expect("a valid status"))
        };
        if p.outage.is_some_and(|(from, until)| t >= from && t < until) {
            return (
                Duration::from_millis(30),
                Err(fail(ErrorKind::ServerError, 503, "service unavailable")),
            );
        }
        let rate = match p.storm {
            Some((from, until, storm_rate)) if t >= from && t < until => storm_rate,
            _ => p.rate,
        };
        let elapsed = (now - bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(p.burst);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            self.tally.lock().unwrap().rate_limited += 1;
            return (
                Duration::from_millis(20),
                Err(fail(ErrorKind::RateLimited, 429, "rate limit reached").with_retry_after(wait)),
            );
        }
        bucket.tokens -= 1.0;
        if bucket.rng.f64() < p.slow_share {
            return (
                FIRST_TOKEN_TIMEOUT,
                Err(
                    LlmError::new(ErrorKind::Timeout, "no first token within 5s")
                        .with_provider(p.name),
                ),
            );
        }
        let latency = Duration::from_millis(bucket.rng.u64(p.latency_ms.0..=p.latency_ms.1));
        let body = if bucket.rng.f64() < p.cut_share {
            "cut"
        } else {
            "ok"
        };
        (latency, Ok(TestResponse::new(body)))
    }
}

impl Service<TestRequest> for SimProvider {
    type Response = TestResponse;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<TestResponse, LlmError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: TestRequest) -> Self::Future {
        let (after, result) = self.decide();
        Box::pin(async move {
            tokio::time::sleep(after).await;
            result
        })
    }
}

/// tower's retry with the policy a first integration writes: any error, three more times,
/// at once.
#[derive(Clone)]
struct RetryEveryError {
    left: u32,
}

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for RetryEveryError {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.left > 0 => {
                self.left -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

type Client = BoxCloneSyncService<TestRequest, TestResponse, LlmError>;

fn build(stack: Stack, start: Instant, tally: &Arc<Mutex<Tally>>) -> Client {
    let primary = SimProvider::new(&PRIMARY, start, tally.clone());
    let backup = SimProvider::new(&BACKUP, start, tally.clone());
    match stack {
        Stack::Naive => {
            Client::new(tower::retry::RetryLayer::new(RetryEveryError { left: 3 }).layer(primary))
        }
        Stack::LlmTower => {
            let limit = RateLimitLayer::new(RateLimitConfig {
                requests: Some(Rate {
                    limit: 12,
                    per: Duration::from_secs(1),
                    burst: Some(12),
                }),
                mode: Mode::Wait,
                max_wait: Duration::from_secs(1),
                ..RateLimitConfig::default()
            })
            .expect("valid limits");
            let primary =
                RetryLayer::standard().layer(BreakerLayer::standard().layer(limit.layer(primary)));
            let backup = RetryLayer::standard().layer(BreakerLayer::standard().layer(backup));
            let primary = Client::new(primary);
            let backup = Client::new(backup);
            Client::new(
                Fallback::builder(vec![
                    Target::new("primary", primary),
                    Target::new("backup", backup),
                ])
                .build()
                .expect("a valid chain"),
            )
        }
    }
}

/// Runs `scenario` through `stack`. Call it on a current-thread runtime with a paused clock.
pub(crate) async fn simulate(stack: Stack, scenario: Scenario) -> Report {
    // The layers draw their jitter from fastrand's generator of this thread (the runtime has
    // one): seeding it makes every run the same.
    fastrand::seed(42);
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let client = build(stack, start, &tally);
    let total =
        u32::try_from(scenario.duration.as_secs()).expect("a short scenario") * scenario.rate;
    let spacing = Duration::from_secs(1) / scenario.rate;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let client = client.clone();
        let arrival = start + spacing * i;
        tasks.spawn(async move {
            tokio::time::sleep_until(arrival).await;
            let mut request = TestRequest::new("chat").with_prompt("Hello");
            if stack == Stack::LlmTower {
                request = request.with(Deadline::after(Duration::from_secs(30)));
            }
            let result = client.oneshot(request).await;
            let ok = matches!(&result, Ok(response) if response.body() == "ok");
            (arrival - start, arrival.elapsed(), ok)
        });
    }
    let windows = (scenario.duration.as_secs() / WINDOW.as_secs()) as usize;
    let mut report = Report {
        requests: total,
        windows: vec![(0, 0); windows],
        ..Report::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (arrived, latency, ok) = done.expect("no simulated request panics");
        let window = ((arrived.as_secs() / WINDOW.as_secs()) as usize).min(windows - 1);
        report.windows[window].0 += 1;
        if ok {
            report.succeeded += 1;
            report.windows[window].1 += 1;
        }
        report.latencies.push(latency);
    }
    report.latencies.sort_unstable();
    let tally = tally.lock().unwrap();
    report.upstream_attempts = tally.attempts;
    report.rate_limited = tally.rate_limited;
    report.load = tally.load.clone();
    report.load.resize(scenario.duration.as_secs() as usize, 0);
    report
}

/// The side-by-side table.
pub(crate) fn table(naive: &Report, ours: &Report) -> String {
    let row = |name: &str, f: &dyn Fn(&Report) -> String| {
        format!("| {name:<28} | {:>20} | {:>12} |\n", f(naive), f(ours))
    };
    let mut out = format!(
        "| {:<28} | {:>20} | {:>12} |\n",
        "",
        Stack::Naive.name(),
        Stack::LlmTower.name()
    );
    out.push_str(&format!("|{:-<30}|{:->22}|{:->14}|\n", "", "", ""));
    out.push_str(&row("requests", &|r| r.requests.to_string()));
    out.push_str(&row("success rate", &|r| {
        format!("{:.1} %", 100.0 * r.success_rate())
    }));
    out.push_str(&row("upstream attempts / request", &|r| {
        format!("{:.2}", r.attempts_per_request())
    }));
    out.push_str(&row("429s received", &|r| r.rate_limited.to_string()));
    out.push_str(&row("latency p50", &|r| {
        format!("{:.2} s", r.latency(0.5).as_secs_f64())
    }));
    out.push_str(&row("latency p99", &|r| {
        format!("{:.2} s", r.latency(0.99).as_secs_f64())
    }));
    out
}

/// Success rate per 10 s window and upstream attempts per second, both stacks, with the
/// fault windows shaded.
pub(crate) fn chart(
    naive: &Report,
    ours: &Report,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let seconds = naive.load.len() as f64;
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(320);
    let faults = [(60.0, 120.0, "rate-limit storm"), (150.0, 210.0, "outage")];
    let shade = RGBColor(235, 235, 235);

    let mut success = ChartBuilder::on(&top)
        .caption(
            "Success rate per 10 s (shaded: primary's rate-limit storm, then outage)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..seconds, 0.0..100.0)?;
    success
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("success %")
        .draw()?;
    for (from, until, _) in faults {
        success.draw_series(std::iter::once(Rectangle::new(
            [(from, 0.0), (until, 100.0)],
            shade.filled(),
        )))?;
    }
    let windows = |r: &Report| -> Vec<(f64, f64)> {
        r.windows
            .iter()
            .enumerate()
            .map(|(i, (n, ok))| {
                (
                    (i as f64 + 0.5) * WINDOW.as_secs_f64(),
                    100.0 * f64::from(*ok) / f64::from((*n).max(1)),
                )
            })
            .collect()
    };
    success
        .draw_series(LineSeries::new(windows(naive), RED.stroke_width(2)))?
        .label(Stack::Naive.name())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    success
        .draw_series(LineSeries::new(windows(ours), BLUE.stroke_width(2)))?
        .label(Stack::LlmTower.name())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    success
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    let peak = naive
        .load
        .iter()
        .chain(&ours.load)
        .copied()
        .max()
        .unwrap_or(1);
    let mut load = ChartBuilder::on(&bottom)
        .caption(
            "Upstream attempts per second (requests arrive at 10/s)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..seconds, 0.0..f64::from(peak) * 1.1)?;
    load.configure_mesh()
        .x_desc("time (s)")
        .y_desc("attempts/s")
        .draw()?;
    for (from, until, _) in faults {
        load.draw_series(std::iter::once(Rectangle::new(
            [(from, 0.0), (until, f64::from(peak) * 1.1)],
            shade.filled(),
        )))?;
    }
    let per_second = |r: &Report| -> Vec<(f64, f64)> {
        r.load
            .iter()
            .enumerate()
            .map(|(s, n)| (s as f64, f64::from(*n)))
            .collect()
    };
    load.draw_series(LineSeries::new(per_second(naive), RED))?;
    load.draw_series(LineSeries::new(per_second(ours), BLUE))?;
    root.present()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut out = std::path::PathBuf::from("chaos.svg");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().ok_or("--out needs a path")?.into(),
            other => {
                return Err(
                    format!("unknown argument {other:?} (usage: chaos [--out FILE])").into(),
                );
            }
        }
    }
    let scenario = Scenario::default();
    let naive = simulate(Stack::Naive, scenario).await;
    let ours = simulate(Stack::LlmTower, scenario).await;
    println!(
        "{} s of traffic at {} requests/s, virtual time\n",
        scenario.duration.as_secs(),
        scenario.rate
    );
    print!("{}", table(&naive, &ours));
    chart(&naive, &ours, &out)?;
    println!("\nchart: {}", out.display());
    Ok(())
}
