//! Conversations beyond text, per provider, over real loopback HTTP against the test kit's
//! mock provider — whose reading of each wire format is written apart from ours: tool calls
//! and their results (whole and streamed), images, structured output, reasoning with
//! signatures, features a target cannot honour, and a property test that a generated
//! conversation survives each provider's format as the mock reads it.

use futures_util::StreamExt;
use llm_core::{ErrorKind, LlmError};
use llm_providers::{
    Assembler, ChatRequest, ChatResponse, Content, FinishReason, Media, Message, Part, Provider,
    ProviderKind, ReasoningConfig, ReasoningEffort, ResponseFormat, Tool, ToolCall, ToolChoice,
};
use llm_testkit::server::{Fault, MockProvider, Route, Rule};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "sk-live-SECRET-0123456789";
const KINDS: [ProviderKind; 7] = ProviderKind::ALL;

fn provider(mock: &MockProvider, kind: ProviderKind) -> Provider {
    let base = mock.base_url();
    let url = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => format!("{base}/v1"),
        ProviderKind::OpenRouter => format!("{base}/api/v1"),
        ProviderKind::Gemini => format!("{base}/v1beta"),
        _ => base,
    };
    let mut builder = Provider::builder(kind).base_url(url);
    if kind != ProviderKind::Ollama {
        builder = builder.api_key(KEY);
    }
    builder.build().unwrap()
}

fn weather() -> Tool {
    Tool::new("get_weather")
        .description("The weather in a city")
        .parameters(
            json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}),
        )
}

fn tool_request(model: &str) -> ChatRequest {
    ChatRequest::new(model)
        .system("You call tools.")
        .user("What is the weather in Paris?")
        .tools([weather(), Tool::new("get_time")])
}

/// A call or stream, whole: the streamed one assembled from its chunks.
async fn ask(p: &Provider, req: ChatRequest, stream: bool) -> Result<ChatResponse, LlmError> {
    if !stream {
        return p.clone().oneshot(req).await;
    }
    let mut s = p.streaming().oneshot(req).await?;
    let mut answer = Assembler::default();
    while let Some(chunk) = s.next().await {
        answer.push(&chunk?);
    }
    Ok(answer.finish(s.provider(), s.model()))
}

fn arguments(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap()
}

#[tokio::test]
async fn every_provider_carries_a_tool_loop_whole_and_streamed() {
    let mock = MockProvider::builder().start().await.unwrap();
    for kind in KINDS {
        for stream in [false, true] {
            let p = provider(&mock, kind);
            let first = ask(&p, tool_request("m"), stream).await.unwrap();
            let at = format!("{kind} stream={stream}");
            assert_eq!(first.finish_reason, Some(FinishReason::ToolCalls), "{at}");
            assert_eq!(first.tool_calls.len(), 1, "{at}: {first:?}");
            let call = &first.tool_calls[0];
            assert_eq!(call.name, "get_weather", "{at}");
            assert_eq!(
                arguments(call),
                json!({"n": 1, "tool": "get_weather"}),
                "{at}"
            );
            assert!(!call.id.is_empty(), "{at}");
            if kind == ProviderKind::Gemini {
                // Gemini's signature rides on its first call, to be sent back.
                assert!(
                    call.signature
                        .as_deref()
                        .is_some_and(|s| s.starts_with("sig-")),
                    "{at}"
                );
            }
            let second = tool_request("m")
                .message(first.to_message())
                .message(Message::tool_result(call.id.clone(), "18 C and sunny"));
            let answer = ask(&p, second, stream).await.unwrap();
            assert_eq!(
                answer.text, "Tool get_weather said: 18 C and sunny.",
                "{at}"
            );
            assert_eq!(answer.finish_reason, Some(FinishReason::Stop), "{at}");
            assert!(answer.tool_calls.is_empty(), "{at}");
        }
    }
}

#[tokio::test]
async fn parallel_calls_arrive_in_order_with_their_own_arguments() {
    let mock = MockProvider::builder().start().await.unwrap();
    let req = ChatRequest::new("m")
        .user("Use get_time and get_weather together")
        .tools([weather(), Tool::new("get_time")]);
    for kind in KINDS {
        for stream in [false, true] {
            let answer = ask(&provider(&mock, kind), req.clone(), stream)
                .await
                .unwrap();
            let names: Vec<&str> = answer.tool_calls.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["get_time", "get_weather"], "{kind} stream={stream}");
            assert_eq!(arguments(&answer.tool_calls[1])["n"], 2, "{kind}");
            let ids: std::collections::HashSet<&str> =
                answer.tool_calls.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids.len(), 2, "{kind}: ids are distinct");
        }
    }
}

#[tokio::test]
async fn a_forced_tool_is_the_one_called() {
    let mock = MockProvider::builder().start().await.unwrap();
    let req = tool_request("m").tool_choice(ToolChoice::Tool("get_time".into()));
    for kind in KINDS.into_iter().filter(|k| *k != ProviderKind::Ollama) {
        let answer = ask(&provider(&mock, kind), req.clone(), false)
            .await
            .unwrap();
        assert_eq!(answer.tool_calls[0].name, "get_time", "{kind}");
    }
}

#[tokio::test]
async fn a_feature_a_target_lacks_is_refused_before_the_call() {
    let mock = MockProvider::builder().start().await.unwrap();
    let cases: [(ProviderKind, ChatRequest); 5] = [
        (
            ProviderKind::Ollama,
            tool_request("m").tool_choice(ToolChoice::Required),
        ),
        (
            ProviderKind::Anthropic,
            ChatRequest::new("m").user("x").seed(7),
        ),
        (
            ProviderKind::Anthropic,
            ChatRequest::new("m")
                .user("x")
                .response_format(ResponseFormat::JsonObject),
        ),
        (
            ProviderKind::Gemini,
            tool_request("m").parallel_tool_calls(false),
        ),
        (
            ProviderKind::Ollama,
            ChatRequest::new("m").message(Message::user(vec![Part::Image(Media::url(
                "https://example.com/cat.png",
            ))])),
        ),
    ];
    for (kind, req) in cases {
        let err = provider(&mock, kind).oneshot(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{kind}: {err}");
        assert!(!err.kind().is_retryable() && err.kind().triggers_fallback());
    }
    assert!(mock.attempts().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn structured_output_is_asked_natively_and_answered_as_json() {
    let mock = MockProvider::builder().start().await.unwrap();
    let format = ResponseFormat::JsonSchema {
        name: "Person".into(),
        description: None,
        schema: json!({"type": "object", "properties": {"name": {"type": "string"},
            "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false}),
        strict: Some(true),
    };
    let req = ChatRequest::new("m")
        .user("Alice is 30")
        .response_format(format);
    for kind in KINDS {
        for stream in [false, true] {
            let answer = ask(&provider(&mock, kind), req.clone(), stream)
                .await
                .unwrap();
            let value: Value = serde_json::from_str(&answer.text)
                .unwrap_or_else(|_| panic!("{kind}: {:?}", answer.text));
            assert_eq!(
                value,
                json!({"name": "Alfa", "age": 1}),
                "{kind} stream={stream}"
            );
        }
    }
}

#[tokio::test]
async fn reasoning_comes_back_signed_and_is_sent_back_to_its_maker() {
    let mock = MockProvider::builder().start().await.unwrap();
    let req = tool_request("m").reasoning(ReasoningConfig::effort(ReasoningEffort::High));
    for kind in [
        ProviderKind::Anthropic,
        ProviderKind::OpenRouter,
        ProviderKind::Gemini,
        ProviderKind::Ollama,
        ProviderKind::OpenAiCompatible,
    ] {
        for stream in [false, true] {
            let answer = ask(&provider(&mock, kind), req.clone(), stream)
                .await
                .unwrap();
            let at = format!("{kind} stream={stream}");
            assert_eq!(answer.reasoning.len(), 1, "{at}: {answer:?}");
            assert_eq!(answer.reasoning[0].text, "Thinking it over.", "{at}");
            if matches!(kind, ProviderKind::Anthropic | ProviderKind::OpenRouter) {
                assert!(
                    answer.reasoning[0]
                        .signature
                        .as_deref()
                        .is_some_and(|s| s.starts_with("sig-")),
                    "{at}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_call_is_never_presented_as_complete() {
    // The cut falls after the call's first piece (its name, or its first arguments).
    let mock = MockProvider::builder()
        .rule(Rule::any().fault(Fault::CutAfter {
            chunks: 1,
            abort: false,
        }))
        .start()
        .await
        .unwrap();
    // Gemini sends its calls whole, with the finish reason: a cut after them cuts nothing.
    for kind in KINDS.into_iter().filter(|k| *k != ProviderKind::Gemini) {
        let err = ask(&provider(&mock, kind), tool_request("m"), true).await;
        let err = err.expect_err(&format!("{kind}: a cut stream is an error"));
        assert_eq!(err.kind(), ErrorKind::StreamInterrupted, "{kind}: {err}");
    }
}

// --- A generated conversation survives each provider's format as the mock reads it --------

#[derive(Debug, Clone)]
enum Gen {
    User(String, Option<String>),
    Calls(String, Vec<(String, i64)>),
}

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "Paris",
        "rain",
        "ok",
        "ça va",
        "\"quoted\"",
        "日本",
        "a\nb",
    ])
    .prop_map(str::to_owned)
}

fn turns() -> impl Strategy<Value = Vec<Gen>> {
    let user = (word(), prop::option::of(Just("iVBORw0KGgo=".to_owned())))
        .prop_map(|(t, image)| Gen::User(t, image));
    let calls = (
        prop::option::of(word()),
        prop::collection::vec(
            (
                prop::sample::select(vec!["add", "mul", "get_weather"]),
                -5i64..50,
            ),
            1..3,
        ),
    )
        .prop_map(|(text, calls)| {
            Gen::Calls(
                text.unwrap_or_default(),
                calls.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            )
        });
    prop::collection::vec(prop_oneof![2 => user, 1 => calls], 1..5)
}

/// The request for `turns` and the conversation the mock must read from it.
fn conversation(turns: &[Gen], kind: ProviderKind) -> (ChatRequest, Value) {
    let mut req = ChatRequest::new("echo").system("Be exact.");
    let mut expected = Vec::new();
    let mut next_id = 0;
    for turn in turns {
        match turn {
            Gen::User(text, image) => {
                let content = match image {
                    None => Content::Text(text.clone()),
                    Some(data) => Content::Parts(vec![
                        Part::Text(text.clone()),
                        Part::Image(Media::base64("image/png", data.clone())),
                    ]),
                };
                req = req.message(Message::user(content));
                let mut m = json!({"role": "user", "text": text});
                if let Some(data) = image {
                    // Ollama takes images without a media type.
                    let media_type = if kind == ProviderKind::Ollama {
                        ""
                    } else {
                        "image/png"
                    };
                    m["media"] = json!([format!("image:{media_type}:{data}")]);
                }
                expected.push(m);
            }
            Gen::Calls(text, calls) => {
                let mut made = Vec::new();
                let mut results = Vec::new();
                for (name, value) in calls {
                    let id = format!("call_{next_id}");
                    next_id += 1;
                    let args = json!({"value": value});
                    made.push(ToolCall::new(id.clone(), name.clone(), args.to_string()));
                    results.push((id, name.clone(), format!("{name} gave {value}")));
                }
                req = req.message(Message::assistant(text.clone()).with_tool_calls(made));
                let mut m = json!({"role": "assistant",
                    "tool_calls": calls.iter().map(|(n, v)| json!({"name": n, "arguments": {"value": v}})).collect::<Vec<_>>()});
                if !text.is_empty() {
                    m["text"] = json!(text);
                }
                expected.push(m);
                for (id, name, text) in results {
                    req = req.message(Message::tool_result(id.clone(), text.clone()));
                    // Every format keeps the call's id (Gemini's and Ollama's beside the
                    // tool's name).
                    let _ = name;
                    expected.push(json!({"role": "tool", "text": text, "result_for": id}));
                }
            }
        }
    }
    (req, json!({"system": "Be exact.", "messages": expected}))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_generated_conversation_survives_every_format(turns in turns()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mock = MockProvider::builder().start().await.unwrap();
            for kind in KINDS {
                let (req, expected) = conversation(&turns, kind);
                let answer = provider(&mock, kind).oneshot(req).await.unwrap();
                let read: Value = serde_json::from_str(&answer.text).unwrap();
                let read = merge_user_turns(read);
                prop_assert_eq!(&read, &merge_user_turns(expected), "{}", kind);
            }
            Ok(())
        })?;
    }
}

/// Consecutive user turns as one (Anthropic and Gemini join them; the meaning is the same).
fn merge_user_turns(mut conversation: Value) -> Value {
    let messages = conversation["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<Value> = Vec::new();
    for m in messages {
        if let Some(last) = out.last_mut() {
            if last["role"] == "user" && m["role"] == "user" {
                let text = format!(
                    "{}{}",
                    last["text"].as_str().unwrap_or_default(),
                    m["text"].as_str().unwrap_or_default()
                );
                last["text"] = json!(text);
                let mut media = last["media"].as_array().cloned().unwrap_or_default();
                media.extend(m["media"].as_array().cloned().unwrap_or_default());
                if !media.is_empty() {
                    last["media"] = json!(media);
                }
                continue;
            }
        }
        out.push(m);
    }
    conversation["messages"] = json!(out);
    conversation
}

#[test]
fn routes_and_kinds_are_the_same_six_formats() {
    // The property test above runs the generic OpenAI-compatible kind too, on the OpenAI route.
    assert_eq!(Route::ALL.len() + 1, KINDS.len());
}

#[tokio::test]
async fn a_fallback_chain_skips_a_target_lacking_a_feature_unasked() {
    use llm_fallback_layer::{Fallback, Target};
    let ollama_mock = MockProvider::builder().start().await.unwrap();
    let openai_mock = MockProvider::builder().start().await.unwrap();
    let chain = Fallback::builder(vec![
        Target::new("ollama", provider(&ollama_mock, ProviderKind::Ollama)),
        Target::new("openai", provider(&openai_mock, ProviderKind::OpenAi)),
    ])
    .build()
    .unwrap();
    let req = tool_request("m").tool_choice(ToolChoice::Required);
    let answer = chain.oneshot(req).await.unwrap();
    assert_eq!(answer.tool_calls[0].name, "get_weather");
    assert_eq!(answer.provider.as_ref(), "openai");
    assert!(
        ollama_mock.attempts().is_empty(),
        "the lacking target was never asked"
    );
    assert_eq!(openai_mock.attempts().len(), 1);
}

#[tokio::test]
async fn logprobs_asked_of_an_openai_format_upstream_come_back_whole_and_streamed() {
    let mock = MockProvider::builder()
        .answer_tokens(5)
        .start()
        .await
        .unwrap();
    let req = ChatRequest::new("m").user("hi").extra("logprobs", true);
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::OpenRouter,
    ] {
        for stream in [false, true] {
            let answer = ask(&provider(&mock, kind), req.clone(), stream)
                .await
                .unwrap();
            let tokens = answer.logprobs.as_ref().unwrap()["content"]
                .as_array()
                .unwrap();
            assert_eq!(tokens.len(), 5, "{kind} stream={stream}");
            assert_eq!(tokens[0]["token"], "Alfa-1");
        }
    }
}

#[tokio::test]
async fn geminis_calls_without_ids_get_ids_of_their_own_that_find_their_tool_later() {
    let mock = MockProvider::builder().start().await.unwrap();
    let gemini = provider(&mock, ProviderKind::Gemini);
    let tools = [weather(), Tool::new("get_time")];
    let mut req = ChatRequest::new("m").tools(tools.clone());
    let mut ids = Vec::new();
    for (ask_for, result) in [("get_weather please", "18 C"), ("now get_time", "noon")] {
        req = req.user(ask_for);
        let answer = gemini.clone().oneshot(req.clone()).await.unwrap();
        let call = answer.tool_calls[0].clone();
        assert!(!call.has_provider_id(), "Gemini 2.5 gives no ids");
        ids.push(call.id.clone());
        req = req
            .message(answer.to_message())
            .message(Message::tool_result(call.id, result));
    }
    assert_ne!(ids[0], ids[1], "two turns' calls never share an id");
    // What Gemini is sent: each result named by its own call's tool, no made-up id.
    let mut echo = req.clone();
    llm_core::ModelRequest::set_model(&mut echo, "echo");
    let answer = gemini.oneshot(echo).await.unwrap();
    let read: Value = serde_json::from_str(&answer.text).unwrap();
    let results: Vec<&Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| &m["result_for"])
        .collect();
    assert_eq!(results, [&json!("get_weather"), &json!("get_time")]);
}

#[tokio::test]
async fn several_choices_asked_of_an_openai_format_upstream_all_come_back() {
    let mock = MockProvider::builder()
        .answer_tokens(5)
        .start()
        .await
        .unwrap();
    let req = ChatRequest::new("m").user("hi").extra("n", 3);
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::OpenRouter,
    ] {
        for stream in [false, true] {
            let answer = ask(&provider(&mock, kind), req.clone(), stream)
                .await
                .unwrap();
            let at = format!("{kind} stream={stream}");
            assert_eq!(
                answer.text, "Alfa-1 Bravo-2 Charlie-3 Delta-4 Echo-5",
                "{at}"
            );
            assert_eq!(answer.other_choices.len(), 2, "{at}");
            for (i, other) in answer.other_choices.iter().enumerate() {
                assert_eq!(other["index"], i + 1, "{at}");
                assert_eq!(other["message"]["content"], answer.text.as_str(), "{at}");
                assert_eq!(other["finish_reason"], "stop", "{at}");
            }
        }
    }
}
