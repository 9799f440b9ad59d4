"""OpenAI Responses API (``/v1/responses``): the request body, and a stored response.

The gateway answers Responses requests through chat: the ingress translates the request to
a chat request and the answer back (``ingress.protocols.responses``). A stored response
(``store``, the default) keeps the conversation it ended so that a later request can
continue it with ``previous_response_id``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.openai import MAX_OUTPUT_TOKENS, MAX_TOOLS

# Each stored response lives this long unless the deployment says otherwise.
DEFAULT_TTL_SECONDS = 30 * 24 * 3600
MAX_INPUT_ITEMS = 10_000


class ResponsesRequest(BaseModel):
    """What the gateway checks of a Responses request; unknown fields are kept and
    refused or ignored by the translator, one by one."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = Field(default=None, max_length=MAX_INPUT_ITEMS)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=200)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = False
    store: bool | None = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    background: bool | None = None


class StoredResponse(BaseModel):
    """A response kept for ``previous_response_id``, ``GET`` and ``input_items``.

    ``context`` is every input item of the conversation up to this response's own input
    (earlier turns' inputs and outputs first); this response's input starts at
    ``input_start``. A follow-up continues with ``context + response["output"]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    # The virtual key that made it (None: the master key, or a gateway without keys).
    owner: str | None = None
    created_at: float = Field(default_factory=time.time)
    response: dict[str, Any]
    context: list[dict[str, Any]]
    input_start: int = 0

    @property
    def own_input(self) -> list[dict[str, Any]]:
        return self.context[self.input_start:]

    @property
    def continuation(self) -> list[dict[str, Any]]:
        output = self.response.get("output")
        return [*self.context, *(output if isinstance(output, list) else [])]
