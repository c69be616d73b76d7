//! Mid-stream recovery over real loopback HTTP against mock providers: continuation by
//! prefill and by instruction, a refused prefill, hold-back restarts, failing clean, the
//! budget, and cancellation during a repair.
//!
//! The mock answers every request with the same canonical text, and continues an assistant
//! prefill that is a prefix of it — so a repaired answer can be checked to the character.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use llm_core::{ErrorKind, LlmError, ReportsUsage};
use llm_providers::recovery::{
    AfterOutput, Prefill, RecoveringStream, RecoveryEvent, RecoveryMode, RecoveryPolicy,
    RecoveryTarget, StreamRecovery,
};
use llm_providers::{ChatRequest, ChatStream, Provider, ProviderKind, StreamingProvider};
use llm_testkit::server::{Fault, MockProvider, Rule, canonical_answer};
use tower::{Service, ServiceExt};

const KEY: &str = "sk-test-recovery";

async fn mock(rules: impl IntoIterator<Item = Rule>) -> MockProvider {
    let mut builder = MockProvider::builder().api_key(KEY);
    for rule in rules {
        builder = builder.rule(rule);
    }
    builder.start().await.unwrap()
}

fn openai(mock: &MockProvider, name: &str) -> StreamingProvider {
    Provider::openai()
        .name(name)
        .base_url(format!("{}/v1", mock.base_url()))
        .api_key(KEY)
        .build()
        .unwrap()
        .streaming()
}

fn anthropic(mock: &MockProvider, name: &str) -> StreamingProvider {
    Provider::anthropic()
        .name(name)
        .base_url(mock.base_url())
        .api_key(KEY)
        .build()
        .unwrap()
        .streaming()
}

fn cut_after(chunks: usize) -> Rule {
    Rule::any().streaming(true).fault(Fault::CutAfter {
        chunks,
        abort: false,
    })
}

fn ask() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini").user("Spell the alphabet")
}

/// Every chunk's text, the recovery the last chunk carried, and the error that ended it.
async fn drain(
    mut stream: RecoveringStream,
) -> (
    String,
    Option<RecoveryMode>,
    Option<LlmError>,
    RecoveringStream,
) {
    let mut text = String::new();
    let mut mode = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                text.push_str(&chunk.delta);
                if let Some(recovery) = &chunk.recovery {
                    mode = Some(recovery.mode);
                }
            }
            Err(err) => return (text, mode, Some(err), stream),
        }
    }
    (text, mode, None, stream)
}

type Events = Arc<std::sync::Mutex<Vec<RecoveryEvent>>>;

fn recovering<S>(
    chain: S,
    targets: Vec<RecoveryTarget<StreamingProvider>>,
    policy: RecoveryPolicy,
) -> (StreamRecovery<S>, Events) {
    let events = Events::default();
    let log = events.clone();
    let mut builder = StreamRecovery::builder(chain).policy(policy);
    for target in targets {
        builder = builder.target(target);
    }
    let service = builder
        .on_recovery(move |event| log.lock().unwrap().push(event.clone()))
        .build()
        .unwrap();
    (service, events)
}

#[tokio::test]
async fn a_stream_cut_after_40_of_60_tokens_is_finished_by_a_prefill_capable_fallback() {
    let primary = mock([cut_after(40)]).await;
    let backup = mock([]).await;
    let first = openai(&primary, "primary");
    let (svc, events) = recovering(
        first.clone(),
        vec![
            RecoveryTarget::new("primary", ProviderKind::OpenAi, first),
            RecoveryTarget::new(
                "backup",
                ProviderKind::Anthropic,
                anthropic(&backup, "backup"),
            )
            .model("claude-3-5-haiku-latest"),
        ],
        RecoveryPolicy::continuing(),
    );
    let stream = svc.oneshot(ask()).await.unwrap();
    let (text, mode, err, stream) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, canonical_answer(60), "no text missing or repeated");
    assert_eq!(mode, Some(RecoveryMode::Prefill));
    let recovery = stream.recovery().unwrap();
    assert_eq!(
        (&*recovery.from, &*recovery.to, recovery.after_tokens),
        ("primary", "backup", 40)
    );
    assert_eq!(recovery.cause, ErrorKind::StreamInterrupted);
    assert_eq!(stream.provider(), "backup");
    // The usage of both parts: the continuation reported its own; the cut part is estimated.
    let usage = stream.usage().unwrap();
    assert!(usage.output_tokens >= 60, "{usage:?}");
    assert_eq!(backup.attempts().len(), 1);
    assert!(
        matches!(&events.lock().unwrap()[..], [RecoveryEvent::Recovered(r)] if r.after_tokens == 40)
    );
}

#[tokio::test]
async fn a_target_refusing_the_prefill_gets_the_instruction_and_the_400_stays_hidden() {
    let primary = mock([cut_after(40)]).await;
    let backup = mock([Rule::any().fault(Fault::RejectPrefill)]).await;
    let first = openai(&primary, "primary");
    let (svc, _) = recovering(
        first,
        vec![
            // Claude 3.5 takes a prefill by default; this one is told to and refuses.
            RecoveryTarget::new(
                "backup",
                ProviderKind::Anthropic,
                anthropic(&backup, "backup"),
            )
            .model("claude-3-5-haiku-latest"),
        ],
        RecoveryPolicy::continuing(),
    );
    let (text, mode, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    // The mock restarts the answer for an instruction; the repeated part is cut off.
    assert_eq!(text, canonical_answer(60));
    assert_eq!(mode, Some(RecoveryMode::Instruction));
    let statuses: Vec<_> = backup.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(400), Some(200)]);

    // Known not to take a prefill: the instruction straight away.
    let primary = mock([cut_after(40)]).await;
    let backup = mock([Rule::any().fault(Fault::RejectPrefill)]).await;
    let (svc, _) = recovering(
        openai(&primary, "primary"),
        vec![
            RecoveryTarget::new(
                "backup",
                ProviderKind::Anthropic,
                anthropic(&backup, "backup"),
            )
            .model("claude-opus-4-6"),
        ],
        RecoveryPolicy::continuing(),
    );
    let (text, mode, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(
        (text, mode),
        (canonical_answer(60), Some(RecoveryMode::Instruction))
    );
    assert_eq!(backup.attempts().len(), 1);
}

#[tokio::test]
async fn when_no_repair_works_the_caller_gets_the_original_failure() {
    let primary = mock([cut_after(40)]).await;
    let backup = mock([Rule::any().sequence([Fault::RejectPrefill, Fault::status(500)])]).await;
    let (svc, events) = recovering(
        openai(&primary, "primary"),
        vec![
            RecoveryTarget::new(
                "backup",
                ProviderKind::Anthropic,
                anthropic(&backup, "backup"),
            )
            .prefill(Prefill::Supported),
        ],
        RecoveryPolicy::continuing(),
    );
    let (text, _, err, stream) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert_eq!(
        text,
        canonical_answer(40),
        "what was delivered stays delivered"
    );
    let err = err.expect("never a clean end");
    assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
    assert_eq!(
        err.provider(),
        Some("primary"),
        "the original failure, not the repair's 400 or 500"
    );
    assert!(stream.recovery().is_none());
    assert_eq!(backup.attempts().len(), 2);
    assert!(matches!(
        &events.lock().unwrap()[..],
        [RecoveryEvent::Failed {
            reason: "no target answered",
            after_tokens: 40,
            ..
        }]
    ));
}

/// A recovering service, its primary mock and its backup mock.
type Setup = (
    StreamRecovery<StreamingProvider>,
    MockProvider,
    MockProvider,
);

/// A primary cut after `cut` chunks and one healthy OpenAI-format backup (taking a prefill
/// as `prefill` says), under `policy`.
async fn cut_primary_and_backup(cut: usize, policy: RecoveryPolicy, prefill: Prefill) -> Setup {
    with_backup(mock([cut_after(cut)]).await, policy, prefill).await
}

/// `primary` and one healthy OpenAI-format backup under `policy`.
async fn with_backup(primary: MockProvider, policy: RecoveryPolicy, prefill: Prefill) -> Setup {
    let backup = mock([]).await;
    let target = RecoveryTarget::new("backup", ProviderKind::OpenAi, openai(&backup, "backup"))
        .prefill(prefill);
    let (svc, _) = recovering(openai(&primary, "primary"), vec![target], policy);
    (svc, primary, backup)
}

#[tokio::test]
async fn hold_back_restarts_unseen_before_its_end_and_falls_to_the_policy_after() {
    let hold = || RecoveryPolicy::holding_back(10, Duration::from_secs(5));

    // Broken inside the hold (5 < 10 chunks): restarted on the backup, the caller sees one
    // clean answer.
    let (svc, _primary, _backup) = cut_primary_and_backup(5, hold(), Prefill::Auto).await;
    let (text, mode, err, stream) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(text, canonical_answer(60));
    assert_eq!(mode, Some(RecoveryMode::Restarted));
    assert_eq!(stream.recovery().unwrap().after_tokens, 0);

    // Broken after the hold (20 > 10): fail clean, as the policy's after_output says…
    let (svc, _primary, backup) = cut_primary_and_backup(20, hold(), Prefill::Auto).await;
    let (text, _, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert_eq!(text, canonical_answer(20));
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert!(backup.attempts().is_empty());

    // …or continue, when it says so.
    let policy = RecoveryPolicy {
        after_output: AfterOutput::Continue,
        ..hold()
    };
    let (svc, _primary, _backup) = cut_primary_and_backup(20, policy, Prefill::Supported).await;
    let (text, mode, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(
        (text, mode),
        (canonical_answer(60), Some(RecoveryMode::Prefill))
    );
}

#[tokio::test]
async fn a_request_carrying_its_own_policy_overrides_the_chains() {
    // The chain continues broken answers; this request (say, JSON output) asks to fail clean.
    let (svc, _primary, backup) =
        cut_primary_and_backup(20, RecoveryPolicy::continuing(), Prefill::Supported).await;
    let mut request = ask();
    request.extensions_mut().insert(RecoveryPolicy::default());
    let (text, mode, err, _) = drain(svc.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(text, canonical_answer(20));
    assert_eq!(mode, None);
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert!(backup.attempts().is_empty(), "no repair was tried");
    // Without it, the chain's policy continues.
    let (text, _, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(text, canonical_answer(60));
}

#[tokio::test]
async fn the_budget_bounds_repairs() {
    // The continuation breaks too: with one repair allowed, the second break ends it.
    let primary = mock([cut_after(20)]).await;
    let backup = mock([cut_after(10)]).await;
    let backup_stream = anthropic(&backup, "backup");
    let (svc, events) = recovering(
        openai(&primary, "primary"),
        vec![
            RecoveryTarget::new("primary", ProviderKind::OpenAi, openai(&primary, "primary")),
            RecoveryTarget::new("backup", ProviderKind::Anthropic, backup_stream)
                .model("claude-3-5-haiku-latest"),
        ],
        RecoveryPolicy::continuing(),
    );
    let (text, _, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert_eq!(
        text,
        canonical_answer(30),
        "20 from the primary, 10 from the backup"
    );
    let err = err.unwrap();
    assert_eq!(
        (err.kind(), err.provider()),
        (ErrorKind::StreamInterrupted, Some("backup"))
    );
    assert_eq!(
        (primary.attempts().len(), backup.attempts().len()),
        (1, 1),
        "no loop"
    );
    let events = events.lock().unwrap();
    assert!(matches!(
        &events[..],
        [
            RecoveryEvent::Recovered(_),
            RecoveryEvent::Failed {
                reason: "budget",
                ..
            }
        ]
    ));
}

/// Counts calls in flight: a future dropped before it finished is a cancelled call.
#[derive(Clone)]
struct Tracked {
    inner: StreamingProvider,
    live: Arc<AtomicUsize>,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<ChatRequest> for Tracked {
    type Response = ChatStream;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<ChatStream, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        self.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(self.live.clone());
        let call = self.inner.call(request);
        Box::pin(async move {
            let _live = live;
            call.await
        })
    }
}

#[tokio::test]
async fn dropping_the_stream_during_a_repair_cancels_the_repair_call() {
    let primary = mock([cut_after(10)]).await;
    let backup = mock([Rule::any().fault(Fault::SlowFirstToken {
        delay: Duration::from_secs(30),
    })])
    .await;
    let live = Arc::new(AtomicUsize::new(0));
    let tracked = Tracked {
        inner: anthropic(&backup, "backup"),
        live: live.clone(),
    };
    let service = StreamRecovery::builder(openai(&primary, "primary"))
        .target(
            RecoveryTarget::new("backup", ProviderKind::Anthropic, tracked)
                .model("claude-3-5-haiku-latest"),
        )
        .policy(RecoveryPolicy::continuing())
        .build()
        .unwrap();
    let mut stream = service.oneshot(ask()).await.unwrap();
    let mut delivered = 0;
    while delivered < 10 {
        if !stream.next().await.unwrap().unwrap().delta.is_empty() {
            delivered += 1;
        }
    }
    // The cut follows; the repair waits on the slow backup.
    let waited = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(waited.is_err(), "the repair is still running");
    assert_eq!(live.load(Ordering::SeqCst), 1);
    assert_eq!(backup.attempts().len(), 1, "the repair reached the backup");
    drop(stream);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "the repair call was dropped with the stream"
    );
}

#[test]
fn policies_and_targets_are_checked_at_build() {
    let provider = Provider::openai().api_key(KEY).build().unwrap().streaming();
    let err = StreamRecovery::builder::<StreamingProvider>(provider.clone())
        .policy(RecoveryPolicy::continuing())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "targets");
    let bad = RecoveryPolicy {
        hold_back_for: Some(Duration::ZERO),
        ..RecoveryPolicy::continuing()
    };
    let err = StreamRecovery::builder(provider.clone())
        .target(RecoveryTarget::new("a", ProviderKind::OpenAi, provider))
        .policy(bad)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "hold_back_for");
}

#[tokio::test]
async fn a_hold_by_time_restarts_inside_it_and_releases_after_it() {
    let slow_cut = |chunks| async move {
        MockProvider::builder()
            .api_key(KEY)
            .chunk_interval(Duration::from_millis(40))
            .rule(cut_after(chunks))
            .start()
            .await
            .unwrap()
    };
    let policy = || RecoveryPolicy {
        hold_back_for: Some(Duration::from_millis(300)),
        ..RecoveryPolicy::default()
    };
    // Cut 2 chunks in (~80 ms), inside the 300 ms hold: restarted, unseen.
    let (svc, _primary, _backup) = with_backup(slow_cut(2).await, policy(), Prefill::Auto).await;
    let (text, mode, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(
        (text, mode),
        (canonical_answer(60), Some(RecoveryMode::Restarted))
    );

    // Cut 20 chunks in (~800 ms), after the hold released what it held: fail clean.
    let (svc, _primary, backup) = with_backup(slow_cut(20).await, policy(), Prefill::Auto).await;
    let (text, _, err, _) = drain(svc.oneshot(ask()).await.unwrap()).await;
    assert_eq!(text, canonical_answer(20));
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert!(backup.attempts().is_empty());
}

/// Recovery over two OpenAI-format mocks, the primary with `rule`; the mocks too (primary,
/// backup), which serve as long as they are held.
async fn openai_pair(
    rule: Rule,
    policy: RecoveryPolicy,
) -> (StreamRecovery<StreamingProvider>, Events, [MockProvider; 2]) {
    let primary = mock([rule]).await;
    let backup = mock([]).await;
    let first = openai(&primary, "primary");
    let (svc, events) = recovering(
        first.clone(),
        vec![
            RecoveryTarget::new("primary", ProviderKind::OpenAi, first),
            RecoveryTarget::new("backup", ProviderKind::OpenAi, openai(&backup, "backup")),
        ],
        policy,
    );
    (svc, events, [primary, backup])
}

fn tool_ask() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini")
        .user("What is the weather?")
        .tools([llm_providers::Tool::new("get_weather")])
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_call_fails_clean_rather_than_splice_it() {
    // The cut falls after the call's first piece reached the caller.
    let (svc, events, [_primary, backup]) =
        openai_pair(cut_after(1), RecoveryPolicy::continuing()).await;
    let mut stream = svc.oneshot(tool_ask()).await.unwrap();
    let mut pieces = 0;
    let mut err = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => pieces += chunk.tool_calls.len(),
            Err(e) => err = Some(e),
        }
    }
    assert_eq!(pieces, 1, "the call's first piece, nothing after it");
    assert_eq!(err.unwrap().kind(), ErrorKind::StreamInterrupted);
    assert!(
        backup.attempts().is_empty(),
        "no continuation was asked for"
    );
    assert!(matches!(
        &events.lock().unwrap()[..],
        [RecoveryEvent::Failed {
            reason: "inside a tool call",
            ..
        }]
    ));
}

#[tokio::test]
async fn a_held_back_tool_call_cut_before_release_restarts_unseen() {
    let policy = RecoveryPolicy::holding_back(10, Duration::from_secs(5));
    let (svc, _, _mocks) = openai_pair(cut_after(2), policy).await;
    let mut stream = svc.oneshot(tool_ask()).await.unwrap();
    let mut answer = llm_providers::Assembler::default();
    while let Some(item) = stream.next().await {
        answer.push(&item.unwrap());
    }
    let answer = answer.finish("", "");
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(
        answer.tool_calls[0].arguments,
        r#"{"n":1,"tool":"get_weather"}"#
    );
    assert_eq!(answer.tool_calls[0].id, "call_mock0");
    assert_eq!(stream.recovery().unwrap().mode, RecoveryMode::Restarted);
}
