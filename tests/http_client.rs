//! Drives `examples/http_client.rs`: the layers around a plain `reqwest::Client` against a
//! local JSON API, over real loopback HTTP.

#[path = "../examples/http_client.rs"]
#[allow(dead_code)] // its `main`
mod http_client;

use std::time::Duration;

#[tokio::test]
async fn the_layers_serve_a_plain_http_client() {
    let summary = http_client::run(|_| {}).await.unwrap();
    // 503 and 429 retried; the second wait is the server's Retry-After.
    assert_eq!(summary.flaky, (200, 3));
    assert_eq!(
        summary.retry_delays[..2],
        [Duration::from_millis(100), Duration::from_secs(1)]
    );
    // Three failures in a row open the breaker: later calls never reach the server.
    assert_eq!(summary.outage.0, 3);
    assert_eq!(summary.outage.1, 3);
    // Ten calls at 10 per second with a burst of 2: the last waits for the eighth refill.
    assert!(
        summary.paced >= Duration::from_millis(790),
        "{:?}",
        summary.paced
    );
}
