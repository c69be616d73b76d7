//! Classification of HTTP client errors: `reqwest` and `hyper`, each behind its feature.

#[cfg(any(feature = "reqwest", feature = "hyper"))]
use crate::{kind::ErrorKind, outcome::Outcome};

/// Classifies a `reqwest::Error`: timeouts, connection failures, truncated or undecodable
/// bodies. `None` lets the caller look further down the source chain.
#[cfg(feature = "reqwest")]
pub(crate) fn classify_reqwest(err: &reqwest::Error) -> Option<Outcome> {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if let Some(status) = err.status() {
        // `error_for_status()` turns a status into an error; classify it as the status.
        crate::kind::status_kind(status).unwrap_or(ErrorKind::Other)
    } else if err.is_connect() || err.is_body() || err.is_request() {
        ErrorKind::Network
    } else if err.is_builder() {
        ErrorKind::InvalidRequest
    } else {
        return None;
    };
    Some(Outcome::failure(kind))
}

/// Classifies a `hyper::Error`. `None` lets the caller look further down the source chain.
#[cfg(feature = "hyper")]
pub(crate) fn classify_hyper(err: &hyper::Error) -> Option<Outcome> {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_incomplete_message()
        || err.is_closed()
        || err.is_canceled()
        || err.is_body_write_aborted()
        || err.is_parse()
    {
        ErrorKind::Network
    } else {
        return None;
    };
    Some(Outcome::failure(kind))
}
