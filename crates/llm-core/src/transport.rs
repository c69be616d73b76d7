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
        crate::classify::status_kind(status).unwrap_or(ErrorKind::Other)
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

#[cfg(feature = "reqwest")]
impl crate::classify::ResponseOutcome for reqwest::Response {
    fn response_outcome(&self) -> Outcome {
        crate::classify::classify_status(self.status(), self.headers())
    }
}

#[cfg(feature = "reqwest")]
impl crate::classify::ErrorOutcome for reqwest::Error {
    fn error_outcome(&self) -> Outcome {
        crate::classify::classify_error_chain(self)
    }
}

#[cfg(feature = "hyper")]
impl crate::classify::ErrorOutcome for hyper::Error {
    fn error_outcome(&self) -> Outcome {
        crate::classify::classify_error_chain(self)
    }
}

// reqwest's request keeps no public extensions: the layers see no deadline on it.
#[cfg(feature = "reqwest")]
impl crate::request::RequestExtensions for reqwest::Request {}

#[cfg(feature = "reqwest")]
impl crate::response::ResponseMetadata for reqwest::Response {
    fn metadata(&self) -> Option<&crate::response::ResponseMeta> {
        self.extensions().get()
    }

    fn metadata_mut(&mut self) -> Option<&mut crate::response::ResponseMeta> {
        Some(self.extensions_mut().get_or_insert_default())
    }
}

#[cfg(feature = "reqwest")]
impl crate::response::ObserveEnd for reqwest::Response {}

#[cfg(feature = "reqwest")]
impl crate::cost::ReportsUsage for reqwest::Response {
    fn usage(&self) -> Option<crate::cost::Usage> {
        self.extensions().get::<crate::cost::Usage>().copied()
    }
}
