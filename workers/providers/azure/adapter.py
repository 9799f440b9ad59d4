"""Azure OpenAI: OpenAI's API on a resource of one's own, as LiteLLM's ``azure/`` prefix.

The model after ``azure/`` names the Azure *deployment*, which goes in the URL:
``{api_base}/openai/deployments/{deployment}/chat/completions?api-version=...``. The key
goes in an ``api-key`` header rather than ``Authorization`` (an Entra ID token,
``azure_ad_token`` in ``litellm_params``, goes as a Bearer token instead). The API version
comes from ``api_version`` in ``litellm_params``, else ``AZURE_API_VERSION`` in the worker's
environment (read once), else :data:`DEFAULT_API_VERSION`. Bodies, answers, streams and
errors are OpenAI's, so everything else is the OpenAI adapter's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx

from workers.providers.base import Completion, StreamItem, UpstreamCall, unsupported
from workers.providers.openai.adapter import OpenAIProvider

PROVIDER = "azure"
# The latest generally available data-plane version when this was written.
DEFAULT_API_VERSION = "2024-10-21"


def deployment_url(api_base: str, deployment: str, path: str, api_version: str) -> str:
    """The URL of one operation (``path``: ``/chat/completions``) on one deployment."""
    base = api_base.rstrip("/")
    base = base.removesuffix("/openai")  # some write the resource URL with it
    return (f"{base}/openai/deployments/{quote(deployment, safe='')}{path}"
            f"?api-version={quote(api_version, safe='')}")


class AzureProvider(OpenAIProvider):
    def __init__(self, client: httpx.AsyncClient, name: str = PROVIDER,
                 api_version: str | None = None) -> None:
        super().__init__(client, name=name)
        self._default_version = (api_version or os.environ.get("AZURE_API_VERSION")
                                 or DEFAULT_API_VERSION)

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = self._header_cache.get(call.deployment.id)
        if headers is None:
            headers = {"content-type": "application/json"}
            token = call.deployment.extra.get("azure_ad_token")
            key = call.deployment.api_key
            if isinstance(token, str) and token:
                headers["authorization"] = f"Bearer {token}"
            elif key is not None:
                headers["api-key"] = key.get_secret_value()
            self._header_cache[call.deployment.id] = headers
        return headers

    def _url(self, call: UpstreamCall, path: str) -> httpx.URL:
        cache_key = (call.deployment.id, path)
        url = self._url_cache.get(cache_key)
        if url is None:
            deployment = call.deployment
            version = deployment.extra.get("api_version") or self._default_version
            url = self._url_cache[cache_key] = httpx.URL(deployment_url(
                deployment.base_url, deployment.upstream_model, path, str(version)))
        return url

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        async for item in super().stream(call):
            # Azure opens a stream with its content filter's verdict on the prompt: a chunk
            # with no choices (and no id or model) that is no part of the answer.
            if isinstance(item, dict) and not item.get("choices"):
                continue
            yield item

    async def rerank(self, call: UpstreamCall) -> Completion:
        raise unsupported(self._name, "/v1/rerank")

    async def moderate(self, call: UpstreamCall) -> Completion:
        # Azure filters content on every call instead; it has no moderations operation.
        raise unsupported(self._name, "/v1/moderations")
