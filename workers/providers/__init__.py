"""Provider adapters, one module each, found by the provider prefix of a deployment."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import httpx

from workers.providers.base import Provider

# provider prefix -> "module:Class". OpenAI-compatible servers share the OpenAI adapter.
_ADAPTERS: dict[str, str] = {
    "openai": "workers.providers.openai.adapter:OpenAIProvider",
    "anthropic": "workers.providers.anthropic.adapter:AnthropicProvider",
    "gemini": "workers.providers.gemini.adapter:GeminiProvider",
    "mock": "workers.providers.mock:MockProvider",
    "cohere": "workers.providers.cohere.adapter:CohereProvider",
    "cohere_chat": "workers.providers.cohere.adapter:CohereProvider",
    "azure": "workers.providers.azure.adapter:AzureProvider",
}
_OPENAI_COMPATIBLE = "workers.providers.openai.adapter:OpenAIProvider"


def adapter_path(provider: str) -> str:
    return _ADAPTERS.get(provider, _OPENAI_COMPATIBLE)


def create_provider(provider: str, client: httpx.AsyncClient) -> Provider:
    module_name, _, class_name = adapter_path(provider).partition(":")
    factory: Callable[..., Provider] = getattr(importlib.import_module(module_name), class_name)
    if adapter_path(provider) == _OPENAI_COMPATIBLE or provider == "mock":
        return factory(client, name=provider)
    return factory(client)
