"""The semantic cache's step in a chat request: embed its prompt, look it up, serve a hit.

The route hands in how to start the embeddings call (its own path: admitted for the caller,
dispatched to a worker, accounted under the request id plus ``-semantic``) and how to
account a hit, so this module decides only what the semantic cache does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import Response

from ingress.cache.key import CachePolicy
from ingress.cache.semantic import SEMANTIC_HIT, SIMILARITY_HEADER, embedding_of
from ingress.cache.semantic_index import Vector
from ingress.cache.semantic_key import Prompt
from ingress.cache.store import CachedAnswer, Outcome
from ingress.dispatch import relay, replay
from ingress.dispatch.execution import Started
from ingress.errors import ApiError
from ingress.metrics import CACHE
from ingress.state import Gateway
from schemas.config import Deployment

log = logging.getLogger("aigw.ingress")

# (plan, model alias, body) -> the embeddings call, started
StartEmbedding = Callable[[list[Deployment], str, dict[str, Any]], Awaitable[Started]]
# (answer, similarity): account a hit
AccountHit = Callable[[CachedAnswer, float], None]


async def embed(gateway: Gateway, start: StartEmbedding, text: str) -> Vector | None:
    """``text``'s unit vector by the configured embedding model; None when that fails (the
    request goes on without the semantic cache)."""
    alias = gateway.semantic.embedding_model
    plan = gateway.router.plan(alias) if alias is not None else None
    if not plan or alias is None:
        log.warning("semantic cache: the embedding model %r is not served", alias)
        return None
    body: dict[str, Any] = {"model": alias, "input": text, "encoding_format": "float"}
    try:
        started = await start(plan, alias, body)
        response = await relay.json_response(started, gateway.settings.heartbeat_timeout,
                                             gateway.gatekeeper.settle)
        vector = embedding_of(json.loads(bytes(response.body)))
    except ApiError as exc:
        log.info("semantic cache: embedding failed (%s %s); serving without it",
                 exc.status, exc.code or exc.type)
        return None
    if vector is None:
        log.warning("semantic cache: %s answered no usable embedding", alias)
    return vector


async def run(
    gateway: Gateway, prompt: Prompt, wanted: CachePolicy, start: StartEmbedding,
    account: AccountHit, stream: bool, include_usage: bool,
) -> tuple[Response | None, Outcome | None, float | None]:
    """A hit, served; or, on a miss, what stores the request's answer under its prompt's
    vector once it is complete, and how close the nearest entry of its scope came."""
    vector = await embed(gateway, start, prompt.text)
    if vector is None:
        return None, None, None
    nearest = None
    if wanted.lookup:
        nearest = await gateway.semantic.lookup(
            prompt, vector, gateway.semantic.threshold(wanted.similarity), wanted.max_age)
    if nearest is None or nearest.answer is None:
        return (None, gateway.semantic.storer(prompt, vector, wanted.ttl),
                nearest.similarity if nearest is not None else None)
    answer = nearest.answer
    CACHE.labels("semantic_hit").inc()
    account(answer, nearest.similarity)
    served = (replay.stream_hit(answer, include_usage) if stream
              else replay.json_hit(answer))
    served.headers[replay.CACHE_HEADER] = SEMANTIC_HIT
    served.headers[SIMILARITY_HEADER] = f"{nearest.similarity:.4f}"
    return served, None, None
