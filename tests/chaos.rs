//! Drives `examples/chaos.rs` in virtual time: the llm-tower stack against tower's plain
//! retry over the same simulated fault profiles (rate-limit storm, outage, slow first
//! tokens, cut streams).

#[path = "../examples/chaos.rs"]
#[allow(dead_code)] // its `main` and the chart, which the example's run covers
mod chaos;

use chaos::{Scenario, Stack, simulate};

#[tokio::test(start_paused = true)]
async fn llm_tower_keeps_answering_where_a_plain_retry_fails_and_multiplies_load() {
    // The run the README reports: 300 s at 10 requests per second.
    let scenario = Scenario::default();
    let naive = simulate(Stack::Naive, scenario).await;
    let ours = simulate(Stack::LlmTower, scenario).await;
    assert_eq!((naive.requests, ours.requests), (3000, 3000));

    // The naive stack loses the storm and the outage; llm-tower falls back.
    assert!(naive.success_rate() < 0.7, "naive {}", naive.success_rate());
    assert!(
        ours.success_rate() > 0.93,
        "llm-tower {}",
        ours.success_rate()
    );
    // Retrying every error at once multiplies upstream load and the 429s it earns.
    eprintln!(
        "success {:.3} vs {:.3}; attempts/request {:.3} vs {:.3}; 429s {} vs {}",
        naive.success_rate(),
        ours.success_rate(),
        naive.attempts_per_request(),
        ours.attempts_per_request(),
        naive.rate_limited,
        ours.rate_limited
    );
    assert!(
        naive.attempts_per_request() > 1.8,
        "{}",
        naive.attempts_per_request()
    );
    assert!(
        ours.attempts_per_request() < 1.35,
        "{}",
        ours.attempts_per_request()
    );
    assert!(ours.rate_limited * 2 < naive.rate_limited);
    // During the outage (150–210 s) the naive stack answers nothing, llm-tower nearly all.
    let outage = 15..21;
    assert!(naive.windows[outage.clone()].iter().all(|(_, ok)| *ok == 0));
    assert!(
        ours.windows[outage]
            .iter()
            .all(|(n, ok)| f64::from(*ok) >= 0.85 * f64::from(*n))
    );

    // Seeded and single-threaded: the same run gives the same numbers.
    let again = simulate(Stack::LlmTower, scenario).await;
    let fingerprint = |r: &chaos::Report| {
        (
            r.succeeded,
            r.upstream_attempts,
            r.rate_limited,
            r.latencies.iter().sum::<std::time::Duration>(),
        )
    };
    assert_eq!(fingerprint(&again), fingerprint(&ours));
}
