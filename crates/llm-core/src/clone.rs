//! [`CloneRequest`]: how the retry and fallback layers keep a copy of a request for the next
//! attempt or the next target.

use http::Request;

/// Makes the copy of a request that the next attempt (or the next fallback target) sends.
/// `None` means the request cannot be copied: the call gets exactly one attempt.
///
/// The default, [`UseClone`], needs `Req: Clone`. `http::Request` is not `Clone`;
/// [`CloneHttpRequest`] copies one whose body is (`String`, `Bytes`, `Full<Bytes>`, …).
/// For a streaming body, buffer it first or accept a single attempt. Any
/// `Fn(&Req) -> Option<Req>` works too — for example `reqwest::Request::try_clone`:
///
/// ```
/// use llm_core::CloneRequest;
///
/// let try_clone = |req: &reqwest::Request| req.try_clone();
/// let req = reqwest::Request::new(reqwest::Method::GET, "http://localhost/".parse().unwrap());
/// assert!(try_clone.clone_request(&req).is_some());
/// ```
pub trait CloneRequest<Req> {
    /// A copy of `request` for another attempt, or `None` if it cannot be copied.
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

impl<F, Req> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// Copies requests with `Clone`.
///
/// ```
/// use llm_core::{CloneRequest, UseClone};
/// assert_eq!(UseClone.clone_request(&String::from("hi")), Some(String::from("hi")));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UseClone;

impl<Req: Clone> CloneRequest<Req> for UseClone {
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Copies an `http::Request` whose body is `Clone`: method, URI, version, headers,
/// extensions and body.
///
/// ```
/// use llm_core::{CloneHttpRequest, CloneRequest};
///
/// let req = http::Request::post("http://api.local/v1").header("x-id", "7").body(String::from("{}")).unwrap();
/// let copy = CloneHttpRequest.clone_request(&req).unwrap();
/// assert_eq!(copy.uri(), req.uri());
/// assert_eq!(copy.headers()["x-id"], "7");
/// assert_eq!(copy.body(), "{}");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneHttpRequest;

impl<B: Clone> CloneRequest<Request<B>> for CloneHttpRequest {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// Never copies: every call gets exactly one attempt. For requests that must not be sent
/// twice (non-idempotent side effects).
///
/// ```
/// use llm_core::{CloneRequest, NoClone};
/// assert_eq!(CloneRequest::<u8>::clone_request(&NoClone, &1), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoClone;

impl<Req> CloneRequest<Req> for NoClone {
    fn clone_request(&self, _request: &Req) -> Option<Req> {
        None
    }
}
