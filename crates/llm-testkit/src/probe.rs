//! [`ContractProbe`]: catches middleware that breaks tower's `poll_ready`/`call` contract.

use std::task::{Context, Poll};

use tower_service::Service;

/// Wraps a service and panics when it is used against tower's contract:
///
/// - `call` without a preceding `poll_ready` that returned `Ready(Ok(()))`;
/// - a second `call` on the same readiness;
/// - a clone used as if readiness were copied with it (clones start not ready).
///
/// ```
/// use llm_testkit::ContractProbe;
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut svc = ContractProbe::new(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x + 1) }));
/// assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
/// # }
/// ```
///
/// ```should_panic
/// use llm_testkit::ContractProbe;
/// use tower::{Service, service_fn};
///
/// let mut svc = ContractProbe::new(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
/// let _ = svc.call(1); // panics: poll_ready must be called before call
/// ```
#[derive(Debug)]
pub struct ContractProbe<S> {
    inner: S,
    ready: bool,
}

impl<S> ContractProbe<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        ContractProbe {
            inner,
            ready: false,
        }
    }

    llm_core::__private::inner_service_accessors!(S, inner);
}

impl<S: Clone> Clone for ContractProbe<S> {
    fn clone(&self) -> Self {
        // NOTE: readiness belongs to one handle; a clone must poll_ready for itself.
        ContractProbe {
            inner: self.inner.clone(),
            ready: false,
        }
    }
}

impl<S, Req> Service<Req> for ContractProbe<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let poll = self.inner.poll_ready(cx);
        self.ready = matches!(poll, Poll::Ready(Ok(())));
        poll
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            std::mem::replace(&mut self.ready, false),
            "poll_ready must be called before call, and return Ready(Ok(())) once per call"
        );
        self.inner.call(req)
    }
}
