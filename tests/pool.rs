//! `Upstream::pool` through the public API, against the test kit's mock provider over real
//! sockets, which keeps a budget per API key as providers do and reports it in their
//! `x-ratelimit-*` headers: keys of one provider as one upstream, with the defaults.

use llm_testkit::server::MockProvider;
use llm_tower::balance::{Member, MemberState, PoolConfig};
use llm_tower::prelude::*;
use llm_tower::upstream::Upstream;
use tower::ServiceExt;

/// One key at `mock`, as its own upstream with the default stack.
fn key(mock: &MockProvider, name: &str, key: &str) -> Member<Upstream> {
    let provider = Provider::openai()
        .api_key(key)
        .base_url(format!("{}/v1", mock.base_url()))
        .build()
        .unwrap();
    Member::new(
        name,
        Upstream::builder(format!("openai/{name}"), provider)
            .build()
            .unwrap(),
    )
}

/// A pool named `openai` of `keys` (name, key) at `mock`, with the defaults.
fn pool(mock: &MockProvider, keys: &[(&str, &str)]) -> Upstream {
    let members = keys.iter().map(|(name, k)| key(mock, name, k)).collect();
    Upstream::pool("openai", members)
        .config(&PoolConfig::default())
        .build()
        .unwrap()
}

fn ask() -> ChatRequest {
    ChatRequest::new("gpt-4o").user("Hello").max_tokens(50)
}

#[tokio::test]
async fn three_keys_of_20_a_minute_answer_60_at_once_with_at_most_two_upstream_429s() {
    let mock = MockProvider::builder()
        .rate_limit(20, 10_000_000)
        .start()
        .await
        .unwrap();
    let pool = pool(
        &mock,
        &[
            ("key-1", "sk-one"),
            ("key-2", "sk-two"),
            ("key-3", "sk-three"),
        ],
    );
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..75 {
        match pool.chat().oneshot(ask()).await {
            Ok(answer) => {
                answered += 1;
                assert!(answer.metadata().unwrap().member.is_some());
            }
            Err(err) => {
                // Every key spent: the pool says so without asking the provider.
                assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
                assert!(err.retry_after().is_some());
                refused += 1;
            }
        }
    }
    let upstream_429s = mock.answered_with(429);
    eprintln!("{answered} answered, {refused} refused by the pool, {upstream_429s} upstream 429s");
    // Each key's burst of 20 (and what refilled while the test ran), no more.
    assert!((58..=63).contains(&answered), "{answered} answered");
    assert!(upstream_429s <= 2, "{upstream_429s} upstream 429s");
    let (handle, members) = pool.health().pool_members().unwrap();
    assert_eq!(members.len(), 3);
    for member in handle.members() {
        assert!(member.served >= 19, "{member:?}");
    }
}

#[tokio::test]
async fn a_revoked_key_leaves_rotation_after_one_request_and_no_caller_sees_its_401() {
    let mock = MockProvider::builder()
        .api_key("sk-good")
        .start()
        .await
        .unwrap();
    let pool = pool(
        &mock,
        &[
            ("key-1", "sk-good"),
            ("revoked", "sk-revoked"),
            ("key-2", "sk-good"),
        ],
    );
    for _ in 0..20 {
        let answer = pool
            .chat()
            .oneshot(ask())
            .await
            .expect("no caller sees the 401");
        assert_ne!(
            answer.metadata().unwrap().member.as_deref(),
            Some("revoked")
        );
    }
    let unauthorized = mock.answered_with(401);
    assert_eq!(unauthorized, 1);
    let (handle, _) = pool.health().pool_members().unwrap();
    let revoked = handle
        .members()
        .into_iter()
        .find(|m| &*m.name == "revoked")
        .unwrap();
    assert!(
        matches!(revoked.state, MemberState::Retired { .. }),
        "{revoked:?}"
    );
    // Each key's own breakers, named by the key (and the model, one breaker per model).
    let labels: Vec<String> = pool
        .health()
        .breakers()
        .into_iter()
        .map(|(label, _)| label.unwrap())
        .collect();
    assert!(labels.contains(&"key-1/gpt-4o".to_owned()), "{labels:?}");
    assert!(
        labels.iter().all(|l| ["key-1/", "revoked/", "key-2/"]
            .iter()
            .any(|m| l.starts_with(m))),
        "{labels:?}"
    );
    // Streams go through the same pool of keys.
    let stream = pool.stream().oneshot(ask()).await.unwrap();
    assert_ne!(
        stream.metadata().unwrap().member.as_deref(),
        Some("revoked")
    );
}

#[tokio::test]
async fn a_session_sticks_to_one_key_while_it_is_healthy() {
    let mock = MockProvider::builder().start().await.unwrap();
    let pool = Upstream::pool(
        "openai",
        vec![
            key(&mock, "key-1", "sk-one"),
            key(&mock, "key-2", "sk-two"),
            key(&mock, "key-3", "sk-three"),
        ],
    )
    .sticky_by(llm_tower::upstream::session_of)
    .build()
    .unwrap();
    let mut homes = std::collections::HashMap::new();
    for round in 0..3 {
        for session in ["ana", "ben", "cho", "dev", "eli", "fay", "gus", "hal"] {
            let request = ask().extra("prompt_cache_key", session);
            let answer = pool.chat().oneshot(request).await.unwrap();
            let member = answer.metadata().unwrap().member.clone().unwrap();
            let home = homes.entry(session).or_insert_with(|| member.clone());
            assert_eq!(*home, member, "{session} moved in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = homes.values().collect();
    assert!(used.len() >= 2, "eight sessions on {} key(s)", used.len());
    // Streams of a session go to the same key.
    let stream = pool
        .stream()
        .oneshot(ask().extra("prompt_cache_key", "ana"))
        .await
        .unwrap();
    assert_eq!(
        stream.metadata().unwrap().member.as_ref(),
        Some(&homes["ana"])
    );
}
