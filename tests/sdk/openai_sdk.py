"""The official openai Python SDK against the gateway (tests/sdk/run.sh starts both).

The gateway runs the README's quick-start configuration over the test kit's mock-provider
binary, whose plan resets every non-streamed call to gpt-4o and cuts every gpt-4o stream
after 40 tokens: the fallback, gpt-4o-mini, answers or finishes. Prints `N passed, N failed`
and exits non-zero on a failure.
"""

import json
import os
import sys
import traceback

import openai

client = openai.OpenAI(base_url=os.environ["GATEWAY_URL"], api_key="not-needed", max_retries=0)
MESSAGES = [{"role": "user", "content": "Hello"}]


def canonical(text):
    """The mock's canonical answer: 60 words, `Alfa-1` to `Hotel-60`, in order."""
    words = text.split(" ")
    assert len(words) == 60, f"{len(words)} words: {text!r}"
    for i, word in enumerate(words, start=1):
        assert word.endswith(f"-{i}"), f"word {i} is {word!r} in {text!r}"


def test_an_answer_through_the_fallback_with_its_headers():
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini", completion.model
    canonical(completion.choices[0].message.content)
    assert completion.usage.completion_tokens == 60, completion.usage
    assert raw.headers["x-gateway-attempts"] == "2", dict(raw.headers)


def test_a_stream_cut_mid_answer_is_read_whole():
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, models, recovered, usage = "", [], False, None
    for chunk in stream:
        models.append(chunk.model)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        recovered |= bool((chunk.model_extra or {}).get("recovered"))
        usage = chunk.usage or usage
    canonical(text)
    assert recovered, "no recovered chunk"
    assert models[0] == "gpt-4o" and models[-1] == "gpt-4o-mini", models
    assert usage is not None and usage.completion_tokens >= 60, usage


def test_a_value_out_of_range_is_a_400_naming_it():
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=5)
    except openai.BadRequestError as err:
        assert err.status_code == 400
        assert err.param == "temperature", err.body
        assert err.type == "invalid_request_error", err.body
    else:
        raise AssertionError("no error")


def test_a_field_the_gateway_cannot_carry_is_refused_not_dropped():
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )
    except openai.BadRequestError as err:
        assert err.param in ("modalities", "audio"), err.body
    else:
        raise AssertionError("audio output was dropped silently")


def test_several_choices_come_back():
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1], completion.choices
    canonical(completion.choices[1].message.content)


WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False},
        "strict": True,
    },
}]


def tool_loop(stream):
    """The model calls get_weather, the result goes back, the answer names it."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        calls, finish = {}, None
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, tools=WEATHER, stream=True
        ):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
        assert finish == "tool_calls", finish
        call = calls[0]
        assistant = {"role": "assistant", "tool_calls": [{"id": call["id"], "type": "function",
                     "function": {"name": call["name"], "arguments": call["arguments"]}}]}
    else:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=WEATHER)
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content is None, choice.message
        tool_call = choice.message.tool_calls[0]
        call = {"id": tool_call.id, "name": tool_call.function.name,
                "arguments": tool_call.function.arguments}
        # The SDK's own message object goes back as it is.
        assistant = choice.message
    assert call["name"] == "get_weather", call
    assert json.loads(call["arguments"]) == {"n": 1, "tool": "get_weather"}, call
    messages += [assistant, {"role": "tool", "tool_call_id": call["id"], "content": "18 C"}]
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=WEATHER)
    assert answer.choices[0].message.content == "Tool get_weather said: 18 C.", answer
    assert answer.choices[0].finish_reason == "stop"


def test_a_tool_loop_whole():
    tool_loop(stream=False)


def test_a_tool_loop_streamed():
    tool_loop(stream=True)


def test_structured_output_and_an_image_part():
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Who is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        ]}],
        response_format={"type": "json_schema", "json_schema": {"name": "Person", "strict": True, "schema": {
            "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"], "additionalProperties": False}}},
    )
    assert json.loads(completion.choices[0].message.content) == {"name": "Alfa", "age": 1}


def test_an_unrouted_model_is_a_404():
    try:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    except openai.NotFoundError as err:
        assert err.code == "model_not_found", err.body
    else:
        raise AssertionError("no error")


def test_the_models_listed_are_the_routes():
    ids = sorted(model.id for model in client.models.list())
    assert ids == ["gpt-4o", "gpt-4o-mini"], ids


def main():
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_")]
    failed = 0
    for name, test in tests:
        try:
            test()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
