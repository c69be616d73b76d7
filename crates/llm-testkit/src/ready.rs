//! [`ReadyService`]: always ready, answers at once — the inner service of allocation tests
//! and benchmarks, where a scripted service's boxed future would be counted too.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use llm_core::{ConfigError, LlmError};
use tower_service::Service;

/// A service that is always ready and answers every call at once with a clone of its
/// response; its future is `std::future::Ready`, so a call allocates nothing of its own.
///
/// ```
/// use llm_testkit::{ReadyService, TestResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ReadyService::new(TestResponse::default());
/// assert_eq!(svc.oneshot(7u32).await.unwrap().body(), "");
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadyService<Res> {
    response: Res,
}

impl<Res> ReadyService<Res> {
    /// A service answering with clones of `response`.
    pub const fn new(response: Res) -> Self {
        ReadyService { response }
    }
}

impl<Req, Res: Clone> Service<Req> for ReadyService<Res> {
    type Response = Res;
    type Error = LlmError;
    type Future = Ready<Result<Res, LlmError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        ready(Ok(self.response.clone()))
    }
}

/// A variable lookup over fixed pairs, for configuration loaders that take one
/// (`merge_vars`): tests read "environment variables" without touching the process's.
///
/// ```
/// let lookup = llm_testkit::vars(&[("RETRY_MAX_ATTEMPTS", "4")]);
/// assert_eq!(lookup("RETRY_MAX_ATTEMPTS").unwrap().as_deref(), Some("4"));
/// assert_eq!(lookup("RETRY_BASE_DELAY").unwrap(), None);
/// ```
pub fn vars(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Result<Option<String>, ConfigError> {
    move |key| {
        Ok(pairs
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| (*value).to_owned()))
    }
}

/// Heap blocks allocated by `calls` calls through `svc` (readiness, call, the future run to
/// completion), after 100 warm-up calls, on a current-thread runtime: the check behind
/// "no allocation per successful call".
///
/// dhat counts the whole process, and the test harness's own threads allocate now and then
/// (seen under heavy load: 4 blocks in a window); so the calls are measured in three rounds
/// and the fewest blocks any round saw is returned. An allocation per call shows in every
/// round as at least `calls` blocks.
///
/// The test binary must make dhat its global allocator; this function runs the dhat
/// profiler in testing mode itself, so call it once per test binary.
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: dhat::Alloc = dhat::Alloc;
///
/// let svc = llm_testkit::ReadyService::new(());
/// assert_eq!(llm_testkit::count_allocations(svc, 10_000), 0);
/// ```
pub fn count_allocations<S>(mut svc: S, calls: u32) -> u64
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for i in 0..100 {
            call(&mut svc, i).await;
        }
        let mut fewest = u64::MAX;
        for _round in 0..3 {
            let before = dhat::HeapStats::get().total_blocks;
            for i in 0..calls {
                call(&mut svc, i).await;
            }
            fewest = fewest.min(dhat::HeapStats::get().total_blocks - before);
        }
        fewest
    })
}

async fn call<S>(svc: &mut S, request: u32)
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .expect("the service is ready");
    svc.call(request).await.expect("the call succeeds");
}
