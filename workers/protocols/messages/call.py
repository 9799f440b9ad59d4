"""One Messages call on any provider: passed through to one that speaks Messages itself
(:class:`NativeMessages`, the Anthropic adapter), translated through chat for the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol, runtime_checkable

from schemas.usage import TokenUsage
from workers.protocols.messages.request import to_chat
from workers.protocols.messages.response import to_message
from workers.protocols.messages.stream import EventWriter
from workers.providers.base import Completion, Provider, UpstreamCall

# A streamed Messages answer: SSE events framed as Anthropic frames them, and the call's
# usage so far (the last one counts), as for chat streams (workers.providers.base).
EventItem = bytes | TokenUsage


@runtime_checkable
class NativeMessages(Protocol):
    async def messages(self, call: UpstreamCall) -> Completion: ...

    def messages_stream(self, call: UpstreamCall) -> AsyncIterator[EventItem]: ...


def chat_call(call: UpstreamCall) -> UpstreamCall:
    """The call as chat, for a provider that does not speak Messages."""
    return replace(call, body=to_chat(call.body))


async def complete(provider: Provider, call: UpstreamCall) -> Completion:
    """The whole answer as a ``Message``, and the call's usage."""
    if isinstance(provider, NativeMessages):
        return await provider.messages(call)
    result = await provider.complete(chat_call(call))
    message = to_message(result.response, result.usage, request_id=call.request_id,
                         model=call.deployment.upstream_model)
    return Completion(response=message, usage=result.usage)


async def stream(
    provider: Provider, call: UpstreamCall, chat: UpstreamCall | None = None
) -> AsyncIterator[EventItem]:
    """The answer as Messages stream events, with the usage as the provider reports it;
    ``chat`` is :func:`chat_call` of ``call`` when the caller has it already."""
    if isinstance(provider, NativeMessages):
        async for item in provider.messages_stream(call):
            yield item
        return
    writer = EventWriter(request_id=call.request_id, model=call.deployment.upstream_model)
    usage = TokenUsage()
    async for piece in provider.stream(chat or chat_call(call)):
        if isinstance(piece, TokenUsage):
            usage = piece
            yield piece
            continue
        for event in writer.feed(piece):
            yield event
    for event in writer.finish(usage):
        yield event
