//! Hostile upstreams over real loopback TCP: endless bodies, lying lengths, endless error
//! bodies, and error text echoing the key. Every read stops at its cap, the call ends with a
//! classified error, and no key or key fragment reaches the error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llm_core::ErrorKind;
use llm_providers::{ChatRequest, Provider, ProviderKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

const KEY: &str = "sk-proj-Zq8xVt3LmN5pR7sK2wY9";
const MIB: usize = 1 << 20;

/// A server answering every connection with `head` (status line and headers, without the
/// blank line), then `body` written again and again until the client goes away. Returns its
/// base URL and the body bytes it managed to write.
async fn endless(head: &'static str, body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let _ = tcp.read(&mut buf).await;
                if tcp
                    .write_all(format!("{head}\r\n\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                while tcp.write_all(body).await.is_ok() {
                    counter.fetch_add(body.len(), Ordering::Relaxed);
                }
            });
        }
    });
    (url, written)
}

fn openai(url: &str) -> Provider {
    Provider::builder(ProviderKind::OpenAi)
        .base_url(url)
        .api_key(KEY)
        .max_response_bytes(MIB)
        .build()
        .unwrap()
}

fn ask() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini").user("hi")
}

static ZEROS: [u8; 16 << 10] = [b'0'; 16 << 10];

#[tokio::test]
async fn an_endless_answer_stops_at_the_cap_with_a_classified_error() {
    let (url, written) = endless(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close",
        &ZEROS,
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(10), openai(&url).oneshot(ask()))
        .await
        .expect("the read stops at the cap, not at a timeout")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    assert_eq!(err.code(), Some("response_too_large"));
    // The client stopped reading at 1 MiB; what the server wrote past it sits in the
    // sockets' buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = written.load(Ordering::Relaxed);
    eprintln!(
        "endless answer: the server wrote {} KiB before the client stopped",
        written / 1024
    );
    assert!(written < 32 * MIB, "{written} bytes were written");
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_reading() {
    let (url, _) = endless(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10000000000",
        &ZEROS,
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(5), openai(&url).oneshot(ask()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some("response_too_large"));
}

#[tokio::test]
async fn an_endless_error_body_is_read_to_its_cap_and_classified() {
    static HTML: &[u8] = b"<html><body>Internal error, please wait</body></html>\n";
    for stream in [false, true] {
        let (url, written) = endless(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\nconnection: close",
            HTML,
        )
        .await;
        let provider = openai(&url);
        let call = async {
            if stream {
                provider.streaming().oneshot(ask()).await.map(|_| ())
            } else {
                provider.oneshot(ask()).await.map(|_| ())
            }
        };
        let err = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the error body is read to its cap, not forever")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError, "stream: {stream}");
        assert_eq!(err.message(), "HTTP 500 Internal Server Error");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(written.load(Ordering::Relaxed) < 32 * MIB);
    }
}

#[tokio::test]
async fn error_text_echoing_a_key_fragment_or_the_key_reversed_is_masked() {
    let reversed: String = KEY.chars().rev().collect();
    let fragment = &KEY[4..20];
    let body: &'static str = Box::leak(
        format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {fragment}... and {reversed}. You can find your key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
        )
        .into_boxed_str(),
    );
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close",
            body.len()
        )
        .into_boxed_str(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 << 10];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(format!("{head}\r\n\r\n{body}").as_bytes())
                .await;
        }
    });
    let err = openai(&url).oneshot(ask()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(fragment), "{shown}");
    assert!(!shown.contains(&reversed[..12]), "{shown}");
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
}
