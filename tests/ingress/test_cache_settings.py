"""The response cache as the config's ``litellm_settings.cache`` sets it up: default TTLs
per endpoint, the store it picks, and the key namespace."""

from __future__ import annotations

import time

from ingress.cache.key import default_ttls, policy
from ingress.cache.store import CachedAnswer, MemoryCache, ResponseCache
from schemas.config import CacheSettings
from schemas.infer import Endpoint
from schemas.usage import TokenUsage

ANSWER = CachedAnswer(stored_at=time.time(), provider="openai", usage=TokenUsage(),
                      response={"id": "x"})


def test_without_the_config_every_endpoint_gets_the_process_ttl() -> None:
    assert default_ttls(CacheSettings(), 30.0) == dict.fromkeys(Endpoint, 30.0)


def test_cache_true_sets_the_ttl_of_the_listed_call_types_only() -> None:
    cache = CacheSettings(enabled=True, ttl=600, endpoints=(Endpoint.CHAT,))
    assert default_ttls(cache, 30.0) == {**dict.fromkeys(Endpoint, 0.0), Endpoint.CHAT: 600.0}


def test_a_request_without_cache_fields_is_cached_by_default_and_its_own_word_wins() -> None:
    ttl = default_ttls(CacheSettings(enabled=True, ttl=600), 0.0)[Endpoint.CHAT]
    assert policy({}, None, ttl, 86400.0).ttl == 600.0
    assert policy({}, None, ttl, 86400.0).lookup
    assert policy({"cache": {"ttl": 5}}, None, ttl, 86400.0).ttl == 5.0
    assert not policy({"cache": {"no-cache": True}}, None, ttl, 86400.0).lookup
    assert policy({}, "no-store", ttl, 86400.0).ttl == 0.0


async def test_type_local_keeps_entries_in_process_even_with_a_shared_store() -> None:
    shared, local = MemoryCache(), MemoryCache()
    cache = ResponseCache(shared, local=local)
    cache.configure(CacheSettings(store="local"))
    await cache.store.set("k", ANSWER, 60)
    assert len(local) == 1 and len(shared) == 0
    cache.configure(CacheSettings())
    assert cache.store is shared


async def test_a_namespace_prefixes_every_key_and_separates_entries() -> None:
    store = MemoryCache()
    cache = ResponseCache(store)
    cache.configure(CacheSettings(namespace="team-a"))
    cache.save("k", ANSWER, 60)
    await cache.drain()
    assert await store.get("team-a:k") is not None
    assert await cache.lookup("k") is not None
    cache.configure(CacheSettings(namespace="team-b"))
    assert await cache.lookup("k") is None
