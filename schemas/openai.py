"""OpenAI request bodies, as far as the gateway must understand them.

Unknown fields are kept (``extra="allow"``) so new provider parameters pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


# Bounds on what a client may ask for: OpenAI's documented limits, or (where a limit is
# per model and the model is not known here) a ceiling no current model reaches. Per
# deployment limits from the config (``model_info``) are checked by the ingress.
MAX_CHOICES = 128
MAX_OUTPUT_TOKENS = 262_144
MAX_TOP_LOGPROBS = 20
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MAX_LOGIT_BIAS = 300
MAX_IMAGES = 500
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_TOKENS = 8192  # per token-array input
MAX_EMBEDDING_CHARS = 1024 * 1024  # per text input (the model counts its tokens)
MAX_DIMENSIONS = 8192
MAX_TOKEN_ID = 2**31 - 1
INT64 = 2**63 - 1

class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS)
    seed: int | None = Field(default=None, ge=-INT64 - 1, le=INT64)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    user: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _images(self) -> ChatCompletionRequest:
        images = sum(1 for m in self.messages if isinstance(m.content, list)
                     for part in m.content if part.get("type") == "image_url")
        if images > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} images per request, got {images}")
        return self


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1, le=MAX_DIMENSIONS)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, str):
            _text(value)
            return value
        if not value:
            raise ValueError("must not be empty")
        if all(isinstance(x, str) for x in value):
            _count(value)
            for text in value:
                _text(text)
        elif all(_token(x) for x in value):
            _tokens(value)
        elif all(isinstance(x, list) for x in value):
            _count(value)
            for tokens in value:
                if not tokens or not all(_token(x) for x in tokens):
                    raise ValueError("each token-id list must hold token ids (integers from "
                                     f"0 to {MAX_TOKEN_ID}) and not be empty")
                _tokens(tokens)
        else:
            raise ValueError("must be a string, a list of strings, a list of token ids or a "
                             "list of token-id lists")
        return value


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def _text(text: str) -> None:
    if len(text) > MAX_EMBEDDING_CHARS:
        raise ValueError(f"an input may be at most {MAX_EMBEDDING_CHARS:,} characters")


def _tokens(tokens: list[Any]) -> None:
    if len(tokens) > MAX_EMBEDDING_TOKENS:
        raise ValueError(f"an input may be at most {MAX_EMBEDDING_TOKENS} tokens")


def _count(inputs: list[Any]) -> None:
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(inputs)}")


class CompletionRequest(BaseModel):
    """A legacy text completion (``/v1/completions``)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str | list[Any]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            strings = all(isinstance(x, str) for x in value)
            if not (strings or all(_token(x) for x in value)
                    or all(isinstance(x, list) and x and all(_token(t) for t in x)
                           for x in value)):
                raise ValueError("must be a string, a list of strings, a list of token ids "
                                 "or a list of token-id lists")
            if strings:
                _count(value)
        return value
