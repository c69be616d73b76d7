"""The official anthropic Python SDK against the gateway's Messages API (tests/sdk/run.sh
starts the gateways and their mock providers).

`client` talks to the README's quick-start gateway, whose only upstream speaks OpenAI's
format: every Messages request there is answered across dialects. gpt-4o's non-streamed calls
are reset and its streams cut after 40 tokens, so gpt-4o-mini answers or finishes. `mixed`
talks to the gateway of gateway-mixed.toml: a caller key, routes through an Anthropic-format
upstream, and models that fail on purpose. Prints `N passed, N failed` and exits non-zero on
a failure.
"""

import json
import os

import anthropic

from harness import canonical, run

client = anthropic.Anthropic(base_url=os.environ["GATEWAY_URL"], api_key="not-needed", max_retries=0)
mixed = anthropic.Anthropic(base_url=os.environ["MIXED_URL"], api_key=os.environ["MIXED_KEY"], max_retries=0)
MESSAGES = [{"role": "user", "content": "Hello"}]
WEATHER = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]



def test_a_message_through_the_fallback_with_its_headers():
    raw = client.messages.with_raw_response.create(model="gpt-4o", max_tokens=1024, messages=MESSAGES)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant", message
    assert message.model == "gpt-4o-mini", message.model
    assert message.stop_reason == "end_turn", message.stop_reason
    canonical(message.content[0].text)
    assert message.usage.output_tokens == 60, message.usage
    # Two calls, or one when the openai suite has already opened gpt-4o's breaker.
    assert raw.headers["x-gateway-attempts"] in ("1", "2"), dict(raw.headers)
    assert raw.headers.get("request-id"), dict(raw.headers)


def test_a_message_through_a_pool_of_keys_one_revoked():
    for _ in range(3):
        message = mixed.messages.create(
            model="pooled", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
        )
        canonical(message.content[0].text)


def test_a_stream_cut_mid_answer_is_read_whole():
    with client.messages.stream(model="gpt-4o", max_tokens=1024, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    canonical(text)
    canonical(final.content[0].text)
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens >= 60, final.usage


def test_the_stream_events_come_in_anthropics_order():
    events = [e.type for e in client.messages.create(
        model="gpt-4o-mini", max_tokens=1024, messages=MESSAGES, stream=True)]
    assert events[0] == "message_start", events
    assert events[1] == "content_block_start" and events[-3] == "content_block_stop", events
    assert events[-2:] == ["message_delta", "message_stop"], events


def tool_loop(messages_api, model, stream):
    """The model calls get_weather, the result goes back, the answer names it."""
    history = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with messages_api.stream(model=model, max_tokens=1024, messages=history, tools=WEATHER) as events:
            partial = ""
            for event in events:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    partial += event.delta.partial_json
            first = events.get_final_message()
        assert json.loads(partial) == {"n": 1, "tool": "get_weather"}, partial
    else:
        first = messages_api.create(model=model, max_tokens=1024, messages=history, tools=WEATHER)
    assert first.stop_reason == "tool_use", first
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather", first.content
    assert uses[0].input == {"n": 1, "tool": "get_weather"}, uses[0].input
    # The SDK's own content blocks go back as they are.
    history += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C"}]},
    ]
    answer = messages_api.create(model=model, max_tokens=1024, messages=history, tools=WEATHER)
    assert answer.content[0].text == "Tool get_weather said: 18 C.", answer.content
    assert answer.stop_reason == "end_turn", answer.stop_reason


def test_a_tool_loop_whole():
    tool_loop(client.messages, "gpt-4o-mini", stream=False)


def test_a_tool_loop_streamed():
    tool_loop(client.messages, "gpt-4o-mini", stream=True)


def test_a_message_answered_by_an_openai_upstream_with_tools_through_a_fallback():
    raw = mixed.messages.with_raw_response.create(model="gpt-mini", max_tokens=1024, messages=MESSAGES)
    assert raw.headers["x-gateway-provider"] == "openai", dict(raw.headers)
    canonical(raw.parse().content[0].text)
    tool_loop(mixed.messages, "gpt-mini", stream=False)
    tool_loop(mixed.messages, "gpt-mini", stream=True)


def test_a_system_prompt_an_image_and_a_stop_sequence_are_carried():
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=1024,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Who is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ]}],
        stop_sequences=["END"], metadata={"user_id": "u-42"},
    )
    canonical(message.content[0].text)


def test_the_beta_namespace_reaches_the_same_door():
    # `client.beta.messages` posts to `/v1/messages?beta=true` with `anthropic-beta`.
    message = client.beta.messages.create(
        model="gpt-4o-mini", max_tokens=1024, messages=MESSAGES, betas=["token-efficient-tools-2025-02-19"])
    canonical(message.content[0].text)
    count = client.beta.messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES)
    assert count.input_tokens > 0, count


def test_a_body_over_the_gateways_limit_is_a_413_in_anthropics_shape():
    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=10,
                               messages=[{"role": "user", "content": "x" * (2 << 20)}])
    except anthropic.APIStatusError as err:
        assert err.status_code == 413, err
        assert err.body["error"]["type"] == "request_too_large", err.body
    else:
        raise AssertionError("no error")


def test_tokens_are_counted():
    count = client.messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES, system="Be brief.")
    assert count.input_tokens > 0, count


def test_the_models_listed_are_the_routes():
    ids = sorted(model.id for model in client.models.list())
    assert ids == ["gpt-4o", "gpt-4o-mini"], ids


def test_an_unrouted_model_is_a_404():
    try:
        client.messages.create(model="claude-9", max_tokens=10, messages=MESSAGES)
    except anthropic.NotFoundError as err:
        assert err.body["error"]["type"] == "not_found_error", err.body
    else:
        raise AssertionError("no error")


def test_a_server_tool_is_refused_naming_it():
    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=MESSAGES,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    except anthropic.BadRequestError as err:
        assert err.body["error"]["type"] == "invalid_request_error", err.body
        assert err.body["error"]["message"].startswith("tools.0.type"), err.body
    else:
        raise AssertionError("a server tool was dropped silently")


def test_a_wrong_key_is_an_authentication_error():
    wrong = anthropic.Anthropic(base_url=os.environ["MIXED_URL"], api_key="not-the-key", max_retries=0)
    try:
        wrong.messages.create(model="gpt-mini", max_tokens=10, messages=MESSAGES)
    except anthropic.AuthenticationError as err:
        assert err.body["error"]["type"] == "authentication_error", err.body
    else:
        raise AssertionError("no error")


def test_a_bearer_token_is_accepted():
    bearer = anthropic.Anthropic(base_url=os.environ["MIXED_URL"], api_key=None,
                                 auth_token=os.environ["MIXED_KEY"], max_retries=0)
    canonical(bearer.messages.create(model="gpt-mini", max_tokens=1024, messages=MESSAGES).content[0].text)


def test_an_overloaded_upstream_is_a_529():
    try:
        mixed.messages.create(model="overloaded", max_tokens=10, messages=MESSAGES)
    except anthropic.OverloadedError as err:
        assert err.status_code == 529, err
        assert err.body["error"]["type"] == "overloaded_error", err.body
    else:
        raise AssertionError("no error")


def test_a_rate_limit_is_a_429_with_retry_after():
    try:
        mixed.messages.create(model="limited", max_tokens=10, messages=MESSAGES)
    except anthropic.RateLimitError as err:
        # 7 s, or what is left of them when the openai suite met the same limit first.
        assert 1 <= int(err.response.headers["retry-after"]) <= 7, dict(err.response.headers)
        assert err.body["error"]["type"] == "rate_limit_error", err.body
    else:
        raise AssertionError("no error")


def test_a_stream_broken_mid_answer_raises():
    text = ""
    try:
        with mixed.messages.stream(model="breaks", max_tokens=1024, messages=MESSAGES) as stream:
            for chunk in stream.text_stream:
                text += chunk
    except anthropic.APIStatusError as err:
        assert text, "the error came before any text"
        assert err.status_code == 200, err
        assert err.body["error"]["type"], err.body
    else:
        raise AssertionError("a broken stream ended as if complete")


if __name__ == "__main__":
    run(globals())
