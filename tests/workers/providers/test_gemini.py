"""The Gemini adapter: pure translation, then the adapter against a fake Gemini over HTTP."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes.gemini_server import THOUGHT_SIGNATURE, THOUGHT_TOKENS, TOOL_ARGS, create_app
from tests.fakes.server import free_port, serve
from workers.providers.base import StreamItem, UpstreamCall, UpstreamError
from workers.providers.gemini.adapter import (
    GeminiProvider,
    StreamTranslator,
    error_from_gemini,
    from_gemini_embeddings,
    from_gemini_response,
    to_gemini_embed_request,
    to_gemini_request,
    usage_from_gemini,
)

KEY = "AIzaSyFAKE-fake-fake-fake-fake-fake-123"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def user(text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": text}


def rpc_body(status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": 400, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


# -- request translation ------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    request = to_gemini_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("Hi"),
            ]
        }
    )
    assert request["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Use French."}]
    }
    assert request["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_assistant_becomes_model_and_consecutive_same_role_turns_merge() -> None:
    request = to_gemini_request(
        {
            "messages": [
                user("one"),
                user("two"),
                {"role": "assistant", "content": "three"},
                user("four"),
            ]
        }
    )
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}]},
        {"role": "user", "parts": [{"text": "four"}]},
    ]


def test_tool_calls_become_function_calls_and_tool_results_function_responses_by_name() -> None:
    request = to_gemini_request(
        {
            "messages": [
                user("Weather in Paris and Rome?"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            "extra_content": {"google": {"thought_signature": "sig"}},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
                {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
            ]
        }
    )
    model_turn, results_turn = request["contents"][1:]
    assert model_turn == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "sig",
            },
            {"functionCall": {"name": "get_time", "args": {"city": "Rome"}}},
        ],
    }
    assert results_turn == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        ],
    }


def test_a_tool_result_for_an_unknown_call_is_an_invalid_request() -> None:
    with pytest.raises(UpstreamError) as caught:
        to_gemini_request({"messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]})
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST


def test_images_become_inline_data_or_file_data() -> None:
    pixel = base64.b64encode(b"\x89PNG").decode()
    request = to_gemini_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{pixel}"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/render"}},
                    ],
                }
            ]
        }
    )
    assert request["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": pixel}},
        {"fileData": {"fileUri": "https://x.test/cat.jpg", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://x.test/render", "mimeType": "image/*"}},
    ]


def test_tools_become_function_declarations_with_json_schema() -> None:
    request = to_gemini_request({"messages": [user("hi")], "tools": [WEATHER_TOOL]})
    function = WEATHER_TOOL["function"]
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather in a city",
                    "parametersJsonSchema": function["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]
    assert "toolConfig" not in request


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_the_function_calling_mode(
    tool_choice: Any, config: dict[str, Any]
) -> None:
    request = to_gemini_request(
        {"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    )
    assert request["toolConfig"] == {"functionCallingConfig": config}


def test_sampling_parameters_become_the_generation_config() -> None:
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 50,
            "max_completion_tokens": 100,
            "stop": "END",
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "response_format": {"type": "json_object"},
        }
    )
    assert request["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
    }


def test_a_json_schema_response_format_sends_the_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": schema},
            },
        }
    )
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


# -- response translation -----------------------------------------------------------------


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP") -> dict[str, Any]:
    found: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        found["finishReason"] = finish
    return found


def test_text_parts_join_and_thought_parts_become_reasoning_content() -> None:
    response = from_gemini_response(
        {
            "responseId": "r1",
            "candidates": [
                candidate([{"text": "hmm", "thought": True}, {"text": "Hello, "}, {"text": "you"}])
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        },
        "gemini-2.5-flash",
        created=123,
    )
    assert response == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 123,
        "model": "gemini-2.5-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, you",
                            "reasoning_content": "hmm"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": TokenUsage(prompt_tokens=3, completion_tokens=2).to_openai(),
    }


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons_map_to_openai(gemini: str, openai: str) -> None:
    response = from_gemini_response({"candidates": [candidate([{"text": "x"}], gemini)]}, "m")
    assert response["choices"][0]["finish_reason"] == openai


def test_function_calls_become_tool_calls_and_finish_with_tool_calls() -> None:
    response = from_gemini_response(
        {
            "responseId": "r2",
            "candidates": [
                candidate(
                    [
                        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "s"},
                        {"functionCall": {"name": "g", "args": {}}},
                    ]
                )
            ],
        },
        "m",
    )
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert first["extra_content"] == {"google": {"thought_signature": "s"}}
    assert second["function"] == {"name": "g", "arguments": "{}"}
    assert first["id"].startswith("call_")
    assert first["id"] != second["id"]
    again = from_gemini_response(
        {"responseId": "r2", "candidates": [candidate([{"functionCall": {"name": "f"}}])]}, "m"
    )
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == first["id"]


def test_several_candidates_become_several_choices() -> None:
    response = from_gemini_response(
        {"candidates": [candidate([{"text": "a"}]), {**candidate([{"text": "b"}]), "index": 1}]},
        "m",
    )
    assert [(c["index"], c["message"]["content"]) for c in response["choices"]] == [
        (0, "a"),
        (1, "b"),
    ]


def test_a_blocked_prompt_becomes_an_empty_content_filter_choice() -> None:
    response = from_gemini_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert response["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]


def test_thinking_tokens_count_once_in_completion_and_again_as_reasoning() -> None:
    usage = usage_from_gemini(
        {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 10,
            "cachedContentTokenCount": 40,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 160,
        }
    )
    assert usage == TokenUsage(
        prompt_tokens=110, completion_tokens=50, cached_tokens=40, reasoning_tokens=30
    )
    assert usage.total_tokens == 160


# -- stream translation -------------------------------------------------------------------


def test_a_text_stream_opens_with_the_role_and_ends_with_the_finish_reason() -> None:
    translator = StreamTranslator("m", created=5)
    chunks = translator.feed(
        {"responseId": "s1", "candidates": [candidate([{"text": "Hel"}], None)]}
    )
    chunks += translator.feed(
        {
            "responseId": "s1",
            "candidates": [candidate([{"text": "lo"}])],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
        }
    )
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert all(c["id"] == "chatcmpl-s1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c and c["choices"][0]["logprobs"] is None for c in chunks)
    assert translator.close() == TokenUsage(prompt_tokens=4, completion_tokens=2)


def test_a_streamed_function_call_is_one_whole_tool_call_delta() -> None:
    translator = StreamTranslator("m")
    chunks = translator.feed(
        {"candidates": [candidate([{"functionCall": {"name": "f", "args": {"x": 1}}}])]}
    )
    delta = chunks[1]["choices"][0]["delta"]
    assert delta["tool_calls"] == [
        {
            "index": 0,
            "id": delta["tool_calls"][0]["id"],
            "type": "function",
            "function": {"name": "f", "arguments": '{"x": 1}'},
        }
    ]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_without_a_finish_reason_ended_early() -> None:
    translator = StreamTranslator("m")
    translator.feed({"candidates": [candidate([{"text": "partial"}], None)]})
    with pytest.raises(UpstreamError) as caught:
        translator.close()
    assert caught.value.info.kind is ErrorKind.SERVER
    assert "ended early" in caught.value.info.message


# -- error translation --------------------------------------------------------------------

BAD_KEY_DETAILS = [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
]


@pytest.mark.parametrize(
    ("status", "body", "kind", "client_status", "code"),
    [
        (400, rpc_body("INVALID_ARGUMENT", "bad", BAD_KEY_DETAILS), "authentication", 401,
         "invalid_api_key"),
        (400, rpc_body("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
         "authentication", 401, "invalid_api_key"),
        (400, rpc_body("INVALID_ARGUMENT", "The input token count (2000000) exceeds the maximum "
                       "number of tokens allowed (1048576)."),
         "context_length", 400, "context_length_exceeded"),
        (400, rpc_body("INVALID_ARGUMENT", "Request contains an invalid argument."),
         "invalid_request", 400, None),
        (400, rpc_body("FAILED_PRECONDITION", "User location is not supported."),
         "invalid_request", 400, None),
        (403, rpc_body("PERMISSION_DENIED", "denied"), "permission", 403, None),
        (404, rpc_body("NOT_FOUND", "models/x is not found"), "not_found", 404, "model_not_found"),
        (429, rpc_body("RESOURCE_EXHAUSTED", "quota"), "rate_limit", 429, None),
        (500, rpc_body("INTERNAL", "oops"), "server", 500, None),
        (503, rpc_body("UNAVAILABLE", "overloaded"), "overloaded", 503, None),
        (504, rpc_body("DEADLINE_EXCEEDED", "late"), "timeout", 504, None),
        (502, b"<html>Bad Gateway</html>", "server", 502, None),
    ],
)  # fmt: skip
def test_gemini_errors_map_to_our_kinds_and_client_statuses(
    status: int, body: bytes, kind: str, client_status: int, code: str | None
) -> None:
    info = error_from_gemini(status, body, httpx.Headers())
    assert (info.kind, info.status, info.code) == (kind, client_status, code)
    assert info.upstream_status == status
    assert info.provider == "gemini"


def test_rate_limits_wait_for_the_retry_info_delay_unless_headers_say() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]
    body = rpc_body("RESOURCE_EXHAUSTED", "quota", details)
    from_details = error_from_gemini(429, body, httpx.Headers())
    from_header = error_from_gemini(429, body, httpx.Headers({"retry-after": "3"}))
    assert (from_details.retry_after, from_header.retry_after) == (12.5, 3.0)
    assert from_details.retryable


def test_error_messages_never_carry_an_api_key() -> None:
    body = rpc_body("INVALID_ARGUMENT", f"key={KEY} and AIza{'x' * 35} are bad")
    info = error_from_gemini(400, body, httpx.Headers(), secret="my-secret")
    assert KEY not in info.message
    assert "AIza" + "x" * 35 not in info.message
    info = error_from_gemini(400, rpc_body("INVALID_ARGUMENT", "my-secret"), httpx.Headers(),
                             secret="my-secret")  # fmt: skip
    assert "my-secret" not in info.message


# -- embeddings translation ---------------------------------------------------------------


def test_embedding_inputs_become_batch_requests_with_dimensions() -> None:
    request = to_gemini_embed_request({"input": ["a", "b"], "dimensions": 4}, "text-embedding-004")
    assert request == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 4,
            }
            for text in ("a", "b")
        ]
    }


def test_base64_embeddings_are_little_endian_float32() -> None:
    response, usage = from_gemini_embeddings(
        {"embeddings": [{"values": [0.5, -1.0]}]}, "e", "base64"
    )
    raw = base64.b64decode(response["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    assert usage == TokenUsage()


# -- the adapter against a fake Gemini over HTTP ------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[Starlette, str]]:
    app = create_app(api_key=KEY)
    with serve(app) as url:
        yield app, url


@pytest.fixture
async def provider() -> AsyncIterator[GeminiProvider]:
    async with httpx.AsyncClient() as client:
        yield GeminiProvider(client)


def make_call(
    url: str, body: dict[str, Any], model: str = "gemini-2.5-flash", key: str = KEY
) -> UpstreamCall:
    deployment = Deployment(
        id="gemini#1",
        model_name="gemini",
        provider="gemini",
        upstream_model=model,
        api_key=SecretStr(key),
        api_base=url,
        timeout=10,
    )
    return UpstreamCall(deployment=deployment, body={"model": model, **body}, request_id="req-1")


async def collect(provider: GeminiProvider, call: UpstreamCall) -> list[StreamItem]:
    return [item async for item in provider.stream(call)]


async def failure(provider: GeminiProvider, call: UpstreamCall, stream: bool = False) -> Any:
    attempt = collect(provider, call) if stream else provider.complete(call)
    with pytest.raises(UpstreamError) as caught:
        await attempt
    return caught.value.info


async def test_complete_posts_generate_content_with_the_key_header(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    body = {"messages": [{"role": "system", "content": "Be kind."}, user("Hi there")]}
    result = await provider.complete(make_call(url, body))
    assert app.state.last_path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert app.state.last_headers["x-goog-api-key"] == KEY
    assert app.state.last_request["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    choice = result.response["choices"][0]
    assert choice["message"]["content"] == "Hello from gemini-2.5-flash! You said: Hi there"
    assert choice["finish_reason"] == "stop"
    assert result.usage == TokenUsage(prompt_tokens=4, completion_tokens=7)
    assert result.response["usage"] == result.usage.to_openai()


async def test_an_image_is_sent_as_inline_data_the_fake_accepts(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    pixel = base64.b64encode(b"\x89PNG").decode()
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
    ]
    result = await provider.complete(make_call(url, {"messages": [user(content)]}))
    sent = app.state.last_request["contents"][0]["parts"][1]
    assert sent == {"inlineData": {"mimeType": "image/png", "data": pixel}}
    assert result.response["choices"][0]["finish_reason"] == "stop"


async def test_a_request_gemini_refuses_is_an_invalid_request(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [{"role": "system", "content": "Only a system prompt"}]})
    info = await failure(provider, call)
    assert (info.kind, info.status, info.upstream_status) == ("invalid_request", 400, 400)


async def test_a_tool_call_round_trips_through_the_fake(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    messages: list[dict[str, Any]] = [user("USE_TOOL for Paris weather")]
    first = await provider.complete(make_call(url, {"messages": messages, "tools": [WEATHER_TOOL]}))
    assert first.response["choices"][0]["finish_reason"] == "tool_calls"
    message = first.response["choices"][0]["message"]
    (tool_call,) = message["tool_calls"]
    assert json.loads(tool_call["function"]["arguments"]) == TOOL_ARGS
    messages += [
        message,
        {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"temp_c": 21}'},
    ]
    second = await provider.complete(
        make_call(url, {"messages": messages, "tools": [WEATHER_TOOL]})
    )
    sent = app.state.last_request["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == THOUGHT_SIGNATURE
    assert sent[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}
    ]
    assert second.response["choices"][0]["message"]["content"] == 'The tool said: {"temp_c": 21}'


async def test_thinking_tokens_from_the_fake_are_counted_once(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    result = await provider.complete(make_call(url, {"messages": [user("THINK hard")]}))
    assert "Thinking" not in result.response["choices"][0]["message"]["content"]
    visible = len(result.response["choices"][0]["message"]["content"].split())
    assert result.usage.reasoning_tokens == THOUGHT_TOKENS
    assert result.usage.completion_tokens == visible + THOUGHT_TOKENS


async def test_generation_config_is_accepted_by_the_fake(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    body = {
        "messages": [user("Tell me a long story please")],
        "max_completion_tokens": 3,
        "n": 2,
        "temperature": 0.5,
        "stop": ["\n\n"],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
    }
    result = await provider.complete(make_call(url, body))
    assert app.state.last_request["generationConfig"]["maxOutputTokens"] == 3
    assert [c["finish_reason"] for c in result.response["choices"]] == ["length", "length"]


async def test_a_blocked_prompt_from_the_fake_is_a_content_filter_choice(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    result = await provider.complete(make_call(url, {"messages": [user("BLOCK_PROMPT")]}))
    assert result.response["choices"][0]["finish_reason"] == "content_filter"


async def test_a_stream_yields_role_text_and_finish_chunks_then_usage(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    items = await collect(provider, make_call(url, {"messages": [user("Stream this please")]}))
    assert app.state.last_path.endswith(":streamGenerateContent")
    assert app.state.last_query == {"alt": "sse"}
    *chunks, usage = items
    assert isinstance(usage, TokenUsage)
    assert all(isinstance(c, dict) and "usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict)]
    assert deltas[0] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Hello from gemini-2.5-flash! You said: Stream this please"
    assert len(chunks) > 3
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if isinstance(c, dict)]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert usage == TokenUsage(prompt_tokens=3, completion_tokens=len(text.split()))


async def test_a_streamed_tool_call_arrives_whole_and_finishes_with_tool_calls(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [user("USE_TOOL now")], "tools": [WEATHER_TOOL]})
    *chunks, usage = await collect(provider, call)
    last = chunks[-1]
    assert isinstance(last, dict)
    (tool_call,) = last["choices"][0]["delta"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == TOOL_ARGS
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert isinstance(usage, TokenUsage)


async def test_a_bad_key_is_a_401_whose_message_does_not_show_the_key(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    wrong = "AIzaSyWRONG-wrong-wrong-wrong-wrong-1234"
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, key=wrong))
    assert (info.kind, info.status, info.upstream_status) == ("authentication", 401, 400)
    assert wrong not in info.message
    assert not info.retryable


async def test_a_missing_model_is_a_404_model_not_found(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "missing-model"))
    assert (info.kind, info.status, info.code) == ("not_found", 404, "model_not_found")


async def test_a_rate_limit_is_a_retryable_429_with_the_retry_delay(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [user("hi")]}, "fail-429")
    for info in (await failure(provider, call), await failure(provider, call, stream=True)):
        assert (info.kind, info.status, info.retry_after) == ("rate_limit", 429, 12.0)
        assert info.retryable


@pytest.mark.parametrize(
    ("model", "kind", "status"),
    [
        ("fail-503", "overloaded", 503),
        ("fail-500", "server", 500),
        ("fail-504", "timeout", 504),
    ],
)
async def test_upstream_outages_are_retryable(
    fake: tuple[Starlette, str], provider: GeminiProvider, model: str, kind: str, status: int
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, model))
    assert (info.kind, info.status, info.retryable) == (kind, status, True)


async def test_a_context_overflow_is_a_context_length_error(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "fail-context"))
    assert (info.kind, info.status, info.code) == (
        "context_length",
        400,
        "context_length_exceeded",
    )


async def test_the_key_never_appears_even_when_gemini_echoes_it(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "fail-echo-key"))
    assert info.kind == "invalid_request"
    assert KEY not in info.message
    assert "***" in info.message


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("fail-midstream", "connection"),
        ("fail-midstream-error", "server"),
        ("truncated-stream", "server"),
    ],
)
async def test_a_stream_that_breaks_after_some_text_raises(
    fake: tuple[Starlette, str], provider: GeminiProvider, model: str, kind: str
) -> None:
    _, url = fake
    received: list[StreamItem] = []

    async def drain() -> None:
        async for item in provider.stream(make_call(url, {"messages": [user("hi")]}, model)):
            received.append(item)

    with pytest.raises(UpstreamError) as caught:
        await drain()
    assert caught.value.info.kind == kind
    assert caught.value.info.retryable
    assert any(isinstance(i, dict) and i["choices"][0]["delta"].get("content") for i in received)
    assert not any(isinstance(i, TokenUsage) for i in received)


async def test_embeddings_come_back_as_an_openai_list(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    call = make_call(url, {"input": ["alpha", "beta"], "dimensions": 6}, "text-embedding-004")
    result = await provider.embed(call)
    assert app.state.last_path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert result.response["object"] == "list"
    assert [d["index"] for d in result.response["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 6 for d in result.response["data"])
    assert result.response["data"][0]["embedding"] != result.response["data"][1]["embedding"]
    assert result.usage == TokenUsage()


async def test_an_unreachable_gemini_is_a_connection_error(provider: GeminiProvider) -> None:
    call = make_call(f"http://127.0.0.1:{free_port()}", {"messages": [user("hi")]})
    info = await failure(provider, call)
    assert info.kind == "connection"
    assert KEY not in info.message
