//! [`RecordInto`]: makes a gateway's metrics recorder current while its requests, and the
//! bodies of their responses (a stream's end is recorded while its body is polled), run.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::metrics::Metrics;

/// Wraps a service in [`Recording`] into `metrics`.
#[derive(Clone)]
pub(crate) struct RecordInto(pub(crate) Metrics);

impl<S> Layer<S> for RecordInto {
    type Service = Recording<S>;

    fn layer(&self, inner: S) -> Recording<S> {
        Recording {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Polls its service, the futures it returns and their bodies with the gateway's recorder
/// current.
#[derive(Clone)]
pub(crate) struct Recording<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> Service<Request<B>> for Recording<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = RecordingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let inner = &mut self.inner;
        self.metrics.scoped(|| inner.poll_ready(cx))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = &mut self.inner;
        RecordingFuture {
            future: self.metrics.scoped(|| inner.call(request)),
            metrics: Some(self.metrics.clone()),
        }
    }
}

pin_project! {
    /// The future of a [`Recording`] call.
    pub(crate) struct RecordingFuture<F> {
        #[pin]
        future: F,
        metrics: Option<Metrics>,
    }
}

impl<F, E> Future for RecordingFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let metrics = this.metrics.as_ref().expect("polled after completion");
        let future = this.future;
        let response = ready!(metrics.scoped(|| future.poll(cx)))?;
        let metrics = this.metrics.take().expect("polled after completion");
        Poll::Ready(Ok(
            response.map(|body| Body::new(RecordingBody { body, metrics }))
        ))
    }
}

pin_project! {
    /// A response body polled with the gateway's recorder current.
    struct RecordingBody {
        #[pin]
        body: Body,
        metrics: Metrics,
    }
}

impl http_body::Body for RecordingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let body = this.body;
        this.metrics.scoped(|| body.poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
