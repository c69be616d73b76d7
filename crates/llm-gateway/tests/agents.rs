//! An agent loop through the gateway, driven by async-openai (an OpenAI client we did not
//! write): the model calls a tool, the result goes back, the final answer arrives — on the
//! README's quick-start configuration, and across a fallback from an OpenAI-format provider
//! to an Anthropic one in the middle of the loop. Stream and non-stream.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestToolMessageArgs, ChatCompletionRequestUserMessageArgs, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequestArgs, FinishReason, FunctionCall,
    FunctionObjectArgs,
};
use futures_util::StreamExt;
use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use llm_testkit::server::{Fault, MockProvider, Rule};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const KEY: &str = "agent-key";

/// The README's quick-start configuration, as written there.
fn quick_start() -> &'static str {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("<!-- quick-start -->").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    &section[start..start + section[start..].find("```").unwrap()]
}

/// Two providers on one mock: OpenAI's format first, Anthropic's as its fallback.
const TWO_FORMATS: &str = r#"
[[providers]]
name = "open"
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
model = "agent-a"
api_key_env = "LLM_API_KEY"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://127.0.0.1:1"
model = "agent-b"
api_key_env = "LLM_API_KEY"

[[routes]]
model = "agent"
targets = [{ provider = "open", model = "agent-a" }, { provider = "claude", model = "agent-b" }]
"#;

/// A pool of three keys of one OpenAI-format provider; the first is revoked (the mock takes
/// only `LLM_API_KEY`'s). Sticky, though these requests name no session: the strategy picks.
const POOLED: &str = r#"
[[providers]]
name = "open"
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
model = "agent-a"
keys = [{ name = "revoked", api_key = "sk-revoked-0123456789" }, { api_key_env = "LLM_API_KEY" }, { api_key_env = "LLM_API_KEY" }]
pool = { sticky = true }
"#;

struct Running {
    client: async_openai::Client<OpenAIConfig>,
    mock: MockProvider,
    _stop: oneshot::Sender<()>,
}

async fn start(config: &str, rules: Vec<Rule>) -> Running {
    let mut builder = MockProvider::builder().api_key(KEY);
    for rule in rules {
        builder = builder.rule(rule);
    }
    let mock = builder.start().await.unwrap();
    let base = mock.base_url();
    let vars = move |name: &str| match name {
        "GATEWAY_LLM_BASE_URL" | "GATEWAY_OPEN_BASE_URL" => Some(format!("{base}/v1")),
        "GATEWAY_CLAUDE_BASE_URL" => Some(base.clone()),
        "LLM_API_KEY" => Some(KEY.to_owned()),
        _ => None,
    };
    let config = GatewayConfig::from_toml(config, "agents.toml", &vars).unwrap();
    let gateway = Gateway::new(&config, &vars).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(url)
            .with_api_key("unused"),
    );
    Running {
        client,
        mock,
        _stop: stop,
    }
}

fn weather_tool() -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObjectArgs::default()
            .name("get_weather")
            .description("The weather in a city")
            .parameters(
                json!({"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"], "additionalProperties": false}),
            )
            .strict(true)
            .build()
            .unwrap(),
    })
}

/// One turn: the answer's text, its tool calls and finish reason, read whole or from the
/// stream's chunks.
async fn turn(
    client: &async_openai::Client<OpenAIConfig>,
    model: &str,
    messages: &[ChatCompletionRequestMessage],
    stream: bool,
) -> (
    String,
    Vec<ChatCompletionMessageToolCall>,
    Option<FinishReason>,
) {
    let request = CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages(messages.to_vec())
        .tools(vec![weather_tool()])
        .stream(stream)
        .build()
        .unwrap();
    if !stream {
        let response = client.chat().create(request).await.unwrap();
        let choice = response.choices.into_iter().next().unwrap();
        let calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| match c {
                ChatCompletionMessageToolCalls::Function(call) => call,
                other @ ChatCompletionMessageToolCalls::Custom(_) => {
                    panic!("not a function call: {other:?}")
                }
            })
            .collect();
        return (
            choice.message.content.unwrap_or_default(),
            calls,
            choice.finish_reason,
        );
    }
    let mut chunks = client.chat().create_stream(request).await.unwrap();
    let (mut text, mut calls, mut finish) =
        (String::new(), Vec::<(String, String, String)>::new(), None);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        let Some(choice) = chunk.choices.into_iter().next() else {
            continue;
        };
        if let Some(piece) = choice.delta.content {
            text.push_str(&piece);
        }
        for piece in choice.delta.tool_calls.unwrap_or_default() {
            let at = piece.index as usize;
            if calls.len() <= at {
                calls.resize(at + 1, Default::default());
            }
            if let Some(id) = piece.id {
                calls[at].0 = id;
            }
            if let Some(function) = piece.function {
                calls[at].1.push_str(&function.name.unwrap_or_default());
                calls[at]
                    .2
                    .push_str(&function.arguments.unwrap_or_default());
            }
        }
        finish = choice.finish_reason.or(finish);
    }
    let calls = calls
        .into_iter()
        .map(|(id, name, arguments)| ChatCompletionMessageToolCall {
            id,
            function: FunctionCall { name, arguments },
        })
        .collect();
    (text, calls, finish)
}

/// The loop: ask, run the tool the model called, send its result, read the final answer.
async fn agent_loop(
    client: &async_openai::Client<OpenAIConfig>,
    model: &str,
    stream: bool,
) -> String {
    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestUserMessageArgs::default()
            .content("What is the weather in Paris?")
            .build()
            .unwrap()
            .into(),
    ];
    let (text, calls, finish) = turn(client, model, &messages, stream).await;
    assert_eq!(finish, Some(FinishReason::ToolCalls), "stream={stream}");
    assert!(text.is_empty(), "{text:?}");
    assert_eq!(calls.len(), 1);
    let call = calls[0].clone();
    assert_eq!(call.function.name, "get_weather");
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(args, json!({"n": 1, "tool": "get_weather"}));
    messages.push(
        ChatCompletionRequestAssistantMessageArgs::default()
            .tool_calls(vec![ChatCompletionMessageToolCalls::Function(call.clone())])
            .build()
            .unwrap()
            .into(),
    );
    messages.push(
        ChatCompletionRequestToolMessageArgs::default()
            .tool_call_id(call.id.clone())
            .content("18 C and sunny")
            .build()
            .unwrap()
            .into(),
    );
    let (text, calls, finish) = turn(client, model, &messages, stream).await;
    assert!(calls.is_empty());
    assert_eq!(finish, Some(FinishReason::Stop));
    text
}

#[tokio::test]
async fn an_agent_loop_runs_through_the_quick_start_gateway() {
    let running = start(quick_start(), Vec::new()).await;
    for stream in [false, true] {
        let answer = agent_loop(&running.client, "gpt-4o", stream).await;
        assert_eq!(
            answer, "Tool get_weather said: 18 C and sunny.",
            "stream={stream}"
        );
    }
    // The tools reached the upstream each time: 2 turns, twice.
    assert_eq!(running.mock.attempts().len(), 4);
}

#[tokio::test]
async fn an_agent_loop_runs_through_a_pool_of_keys_past_a_revoked_one() {
    let running = start(POOLED, Vec::new()).await;
    for stream in [false, true] {
        let answer = agent_loop(&running.client, "agent-a", stream).await;
        assert_eq!(
            answer, "Tool get_weather said: 18 C and sunny.",
            "stream={stream}"
        );
    }
    // Four turns answered; the revoked key met once (its 401 handed over), never again.
    let statuses: Vec<Option<u16>> = running.mock.attempts().iter().map(|a| a.status).collect();
    assert_eq!(running.mock.answered_with(401), 1, "{statuses:?}");
    assert_eq!(running.mock.answered_with(200), 4, "{statuses:?}");
}

#[tokio::test]
async fn an_agent_loop_falls_back_to_another_format_in_the_middle() {
    for stream in [false, true] {
        // The OpenAI-format provider answers the first turn, then resets every connection:
        // the second turn — tool call and result included — goes to Anthropic's format.
        let rules = vec![
            Rule::model("agent-a").sequence([Fault::Ok]),
            Rule::model("agent-a").fault(Fault::Reset),
        ];
        let running = start(TWO_FORMATS, rules).await;
        let answer = agent_loop(&running.client, "agent", stream).await;
        assert_eq!(
            answer, "Tool get_weather said: 18 C and sunny.",
            "stream={stream}"
        );
        let routes: Vec<String> = running
            .mock
            .attempts()
            .iter()
            .map(|a| format!("{}:{}", a.route, a.model))
            .collect();
        assert_eq!(
            routes,
            ["openai:agent-a", "openai:agent-a", "anthropic:agent-b"],
            "stream={stream}"
        );
    }
}

#[tokio::test]
async fn log_probabilities_come_back_through_the_gateway() {
    let running = start(quick_start(), Vec::new()).await;
    let request = CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages(vec![
            ChatCompletionRequestUserMessageArgs::default()
                .content("Hello")
                .build()
                .unwrap()
                .into(),
        ])
        .logprobs(true)
        .build()
        .unwrap();
    let response = running.client.chat().create(request).await.unwrap();
    let logprobs = response.choices[0].logprobs.clone().unwrap();
    assert_eq!(logprobs.content.unwrap().len(), 60);
}

#[tokio::test]
async fn several_choices_come_back_through_the_gateway_whole_and_streamed() {
    let running = start(quick_start(), Vec::new()).await;
    let request = |stream: bool| {
        CreateChatCompletionRequestArgs::default()
            .model("gpt-4o-mini")
            .messages(vec![
                ChatCompletionRequestUserMessageArgs::default()
                    .content("Hello")
                    .build()
                    .unwrap()
                    .into(),
            ])
            .n(2)
            .stream(stream)
            .build()
            .unwrap()
    };
    let response = running.client.chat().create(request(false)).await.unwrap();
    assert_eq!(response.choices.len(), 2);
    let texts: Vec<String> = response
        .choices
        .iter()
        .map(|c| c.message.content.clone().unwrap())
        .collect();
    assert_eq!(texts[0], texts[1]);
    assert_eq!(response.choices[1].index, 1);
    let mut stream = running
        .client
        .chat()
        .create_stream(request(true))
        .await
        .unwrap();
    let mut streamed = [String::new(), String::new()];
    while let Some(chunk) = stream.next().await {
        for choice in chunk.unwrap().choices {
            if let Some(piece) = choice.delta.content {
                streamed[choice.index as usize].push_str(&piece);
            }
        }
    }
    assert_eq!(streamed, [texts[0].clone(), texts[0].clone()]);
}
