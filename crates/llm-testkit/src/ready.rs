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
