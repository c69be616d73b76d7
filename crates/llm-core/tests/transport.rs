//! Real transport errors, produced over loopback, classified through the public API.
#![cfg(feature = "reqwest")]

use llm_core::{BoxError, ErrorKind, ErrorOutcome, LlmError, ResponseOutcome};

/// A loopback server that reads one request and answers with `reply` (or hangs up without a
/// status line when there is none).
async fn serve_once(reply: Option<&'static [u8]>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await;
        if let Some(reply) = reply {
            let _ = socket.write_all(reply).await;
        }
    });
    addr
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn refused_connection_is_a_network_error() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let err = reqwest::Client::new().get(url).send().await.unwrap_err();
    assert_eq!(err.error_outcome().kind(), Some(ErrorKind::Network));
    let boxed: BoxError = Box::new(err);
    assert_eq!(boxed.error_outcome().kind(), Some(ErrorKind::Network));
    assert_eq!(LlmError::from(boxed).kind(), ErrorKind::Network);
}

#[tokio::test]
async fn connection_closed_before_headers_is_a_network_error() {
    let addr = serve_once(None).await;
    let err = reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.error_outcome().kind(),
        Some(ErrorKind::Network),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_errors_classify_as_their_status() {
    let addr = serve_once(Some(
        b"HTTP/1.1 429 Too Many Requests
retry-after: 3
content-length: 0

",
    ))
    .await;
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    let outcome = res.response_outcome();
    assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
    assert_eq!(
        outcome.retry_after(),
        Some(std::time::Duration::from_secs(3))
    );
    let err = res.error_for_status().unwrap_err();
    assert_eq!(err.error_outcome().kind(), Some(ErrorKind::RateLimited));
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn hyper_errors_inside_the_chain_are_classified() {
    use std::error::Error as _;
    let addr = serve_once(None).await;
    let err = reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    // Find hyper's own error (an incomplete message) in reqwest's chain and classify it alone.
    let mut source = err.source();
    let mut found = None;
    while let Some(inner) = source {
        if let Some(hyper_err) = inner.downcast_ref::<hyper::Error>() {
            found = Some(hyper_err);
            break;
        }
        source = inner.source();
    }
    let hyper_err = found.expect("reqwest reports the hyper error in its source chain");
    assert!(hyper_err.is_incomplete_message(), "{hyper_err:?}");
    assert_eq!(hyper_err.error_outcome().kind(), Some(ErrorKind::Network));
}
