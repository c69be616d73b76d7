//! Classifying a type-erased error by its source chain: our own errors, I/O errors,
//! timeouts, and (behind features) `reqwest` and `hyper` errors.

use std::error::Error as StdError;
use std::io;

use crate::error::{BoxError, CircuitOpen, FallbackExhausted, LlmError, LocalRateLimited};
use crate::kind::ErrorKind;
use crate::outcome::{ErrorOutcome, Outcome};

impl ErrorOutcome for BoxError {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(&**self)
    }
}

impl ErrorOutcome for io::Error {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(self)
    }
}

impl ErrorOutcome for tokio::time::error::Elapsed {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(ErrorKind::Timeout)
    }
}

impl ErrorOutcome for std::convert::Infallible {
    fn error_outcome(&self) -> Outcome {
        match *self {}
    }
}

/// The kind of an `std::io::Error`: timeouts, and the connection failures a retry may cure.
fn io_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as Io;
    match err.kind() {
        Io::TimedOut | Io::WouldBlock => ErrorKind::Timeout,
        Io::ConnectionRefused
        | Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::NotConnected
        | Io::AddrNotAvailable
        | Io::BrokenPipe
        | Io::UnexpectedEof
        | Io::Interrupted
        | Io::HostUnreachable
        | Io::NetworkUnreachable
        | Io::NetworkDown => ErrorKind::Network,
        _ => ErrorKind::Other,
    }
}

/// Classifies any error by walking its `source()` chain, outermost first, and taking the
/// first link it recognises: our own errors ([`LlmError`], [`CircuitOpen`],
/// [`LocalRateLimited`], [`FallbackExhausted`]), `std::io::Error`, tokio's `Elapsed`, and
/// with the `reqwest` / `hyper` features their errors. An unrecognised chain is
/// [`ErrorKind::Other`].
///
/// ```
/// use llm_core::{BoxError, ErrorKind, classify::classify_error_chain};
///
/// let refused: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
/// assert_eq!(classify_error_chain(&*refused).kind(), Some(ErrorKind::Network));
/// ```
pub fn classify_error_chain(err: &(dyn StdError + 'static)) -> Outcome {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(outcome) = classify_known(err) {
            return outcome;
        }
        current = err.source();
    }
    Outcome::failure(ErrorKind::Other)
}

fn classify_known(err: &(dyn StdError + 'static)) -> Option<Outcome> {
    if let Some(err) = err.downcast_ref::<LlmError>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<CircuitOpen>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<LocalRateLimited>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<FallbackExhausted>() {
        return Some(err.error_outcome());
    }
    if err.is::<tokio::time::error::Elapsed>() {
        return Some(Outcome::failure(ErrorKind::Timeout));
    }
    if let Some(err) = err.downcast_ref::<io::Error>() {
        let kind = io_kind(err);
        // An io::Error often wraps the real cause (hyper and reqwest do this): look inside
        // before settling for `Other`.
        if kind == ErrorKind::Other {
            return err.get_ref().and_then(|inner| classify_known(inner));
        }
        return Some(Outcome::failure(kind));
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = err.downcast_ref::<reqwest::Error>() {
        return crate::transport::classify_reqwest(err);
    }
    #[cfg(feature = "hyper")]
    if let Some(err) = err.downcast_ref::<hyper::Error>() {
        return crate::transport::classify_hyper(err);
    }
    None
}

impl From<BoxError> for LlmError {
    /// Recovers an `LlmError` that was boxed, or classifies a foreign error by its chain.
    fn from(err: BoxError) -> Self {
        match err.downcast::<LlmError>() {
            Ok(err) => *err,
            Err(err) => match err.downcast::<CircuitOpen>() {
                Ok(err) => LlmError::from(*err),
                Err(err) => match err.downcast::<LocalRateLimited>() {
                    Ok(err) => LlmError::from(*err),
                    Err(err) => match err.downcast::<FallbackExhausted>() {
                        Ok(err) => LlmError::from(*err),
                        Err(err) => {
                            let outcome = classify_error_chain(&*err);
                            let kind = outcome.kind().unwrap_or(ErrorKind::Other);
                            LlmError::new(kind, err.to_string())
                                .with_retry_after(outcome.retry_after())
                                .with_source(err)
                        }
                    },
                },
            },
        }
    }
}

#[cfg(feature = "reqwest")]
impl ErrorOutcome for reqwest::Error {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(self)
    }
}

#[cfg(feature = "hyper")]
impl ErrorOutcome for hyper::Error {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(self)
    }
}
