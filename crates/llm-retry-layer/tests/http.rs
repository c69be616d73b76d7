//! The retry layer over HTTP: `http::Response` statuses, `http::Request` copies, and a real
//! `reqwest::Client` against a loopback server.

mod support;

use std::time::Duration;

use llm_core::{BoxError, ResponseMetadata};
use llm_retry_layer::{CloneHttpRequest, RetryLayer};
use llm_testkit::{ScriptedService, Step};
use support::{MS, exact};
use tower::{Layer, ServiceExt};

type HttpScript = ScriptedService<http::Request<String>, http::Response<String>, BoxError>;

fn request() -> http::Request<String> {
    http::Request::post("http://api.local/v1/chat")
        .header("x-trace", "abc")
        .body("{}".to_owned())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn status_503_is_retried_though_it_is_an_ok() {
    let (svc, calls) = HttpScript::new([Step::status(503), Step::status(502), Step::status(200)]);
    let svc = exact()
        .clone_requests_with(CloneHttpRequest)
        .build()
        .unwrap()
        .layer(svc);
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.call_count(), 3);
    assert_eq!(
        res.metadata().unwrap().attempts,
        3,
        "attempts recorded in the response extensions"
    );
    // Every attempt carried the same request.
    for call in calls.calls() {
        assert_eq!(call.request.headers()["x-trace"], "abc");
        assert_eq!(call.request.body(), "{}");
    }
}

#[tokio::test(start_paused = true)]
async fn status_429_waits_for_retry_after_seconds() {
    let (svc, calls) =
        HttpScript::new([Step::http(429, &[("retry-after", "3")]), Step::status(200)]);
    let svc = exact()
        .clone_requests_with(CloneHttpRequest)
        .build()
        .unwrap()
        .layer(svc);
    svc.oneshot(request()).await.unwrap();
    assert_eq!(calls.gaps(), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn status_429_waits_for_retry_after_ms() {
    let (svc, calls) = HttpScript::new([
        Step::http(429, &[("retry-after-ms", "2750"), ("retry-after", "3")]),
        Step::status(200),
    ]);
    let svc = exact()
        .clone_requests_with(CloneHttpRequest)
        .build()
        .unwrap()
        .layer(svc);
    svc.oneshot(request()).await.unwrap();
    assert_eq!(calls.gaps(), [MS(2750)]);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_returned_at_once() {
    for status in [400, 401, 402, 403, 404, 422] {
        let (svc, calls) = HttpScript::new([Step::status(status)]);
        let svc = exact()
            .clone_requests_with(CloneHttpRequest)
            .build()
            .unwrap()
            .layer(svc);
        let res = svc.oneshot(request()).await.unwrap();
        assert_eq!(res.status(), status, "the response comes back unchanged");
        assert_eq!(calls.call_count(), 1, "{status} must not be retried");
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_failing_response_is_returned_when_retries_run_out() {
    let (svc, calls) = HttpScript::always(Step::http(503, &[("x-attempt", "any")]));
    let svc = exact()
        .max_retries(2)
        .clone_requests_with(CloneHttpRequest)
        .build()
        .unwrap()
        .layer(svc);
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.metadata().unwrap().attempts, 3);
    assert_eq!(calls.call_count(), 3);
}

/// A tiny HTTP/1.1 server on its own thread and runtime, answering each connection's request
/// with the next canned response. Real sockets, but no waiting on the test's clock.
fn serve(responses: Vec<&'static str>) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut served = 0;
        for response in responses {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // Read the request head; these requests have no body.
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let mut stream = stream;
            stream.write_all(response.as_bytes()).unwrap();
            served += 1;
        }
        served
    });
    (addr, handle)
}

#[tokio::test(start_paused = true)]
async fn a_plain_reqwest_client_is_retried_on_503_and_429() {
    let (addr, server) = serve(vec![
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    ]);
    let retry = RetryLayer::builder()
        .max_retries(3)
        .jitter(llm_retry_layer::Jitter::None)
        .clone_requests_with(|req: &reqwest::Request| req.try_clone())
        .build()
        .unwrap();
    let client = retry.layer(reqwest::Client::new());
    let request = reqwest::Request::new(
        reqwest::Method::GET,
        format!("http://{addr}/quote").parse().unwrap(),
    );
    let start = tokio::time::Instant::now();
    let res = client.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.metadata().unwrap().attempts, 3);
    assert_eq!(res.text().await.unwrap(), "ok");
    assert_eq!(server.join().unwrap(), 3);
    // 500 ms of backoff after the 503, then the server's 2 s (longer than the 1 s backoff).
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}
