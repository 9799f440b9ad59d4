"""Deterministic embeddings for the fake OpenAI server's ``concepts`` model.

Each word counts towards a concept (``capital``, ``france``, ``weather``...) when the
vocabulary knows it, in one of a few hashed "other" dimensions (at a lower weight) when it
does not, and not at all when it is a stop word. So paraphrases, which name the same
concepts in other words, land close ("What is the capital of France?" and "Tell me
France's capital city": about 0.95), while a question that shares most words but one
concept lands far ("What is the capital of Spain?": about 0.5).
"""

from __future__ import annotations

import hashlib
import math
import re

CONCEPTS: dict[str, tuple[str, ...]] = {
    "capital": ("capital", "city", "seat"),
    "france": ("france", "french", "paris"),
    "spain": ("spain", "spanish", "madrid"),
    "germany": ("germany", "german", "berlin"),
    "weather": ("weather", "forecast", "rain", "sunny", "temperature"),
    "today": ("today", "now", "currently", "tonight"),
    "python": ("python", "pythonic"),
    "list": ("list", "lists", "array", "arrays"),
    "sort": ("sort", "sorting", "sorted", "order", "ordering", "arrange"),
    "reverse": ("reverse", "reversed", "backwards", "descending"),
    "password": ("password", "passphrase", "credentials"),
    "reset": ("reset", "change", "recover", "forgot", "forgotten"),
    "account": ("account", "login", "profile"),
    "refund": ("refund", "money", "reimbursement", "reimburse"),
    "order_item": ("purchase", "bought", "item"),
    "population": ("population", "people", "inhabitants", "live", "lives"),
    "translate": ("translate", "translation", "say"),
    "hello": ("hello", "hi", "greeting"),
    "water": ("water", "h2o"),
    "boil": ("boil", "boils", "boiling"),
    "degrees": ("degrees", "celsius", "fahrenheit", "point"),
    "email": ("email", "e-mail", "mail", "inbox"),
    "delete": ("delete", "remove", "erase", "close"),
    "time_zone": ("timezone", "zone", "utc"),
}
_STOP = ("a an the of is are was what whats which who how do does did can could would i me "
         "my you your please tell give show to in on for at by it its it's and or as be with "
         "about there that this from into whom when where why should want need know")
STOP_WORDS = frozenset(_STOP.split(" "))
OTHER_DIMS = 16
OTHER_WEIGHT = 0.35

_WORD = {word: i for i, words in enumerate(CONCEPTS.values()) for word in words}
DIMS = len(CONCEPTS) + OTHER_DIMS


def _words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9][a-z0-9'\-]*", text.lower())
    return [w.removesuffix("'s").removesuffix("'") for w in words]


def embed(text: str) -> list[float]:
    """A unit vector for ``text`` (all zeros but one "other" dimension for an empty one)."""
    vector = [0.0] * DIMS
    for word in _words(text):
        if word in STOP_WORDS:
            continue
        concept = _WORD.get(word)
        if concept is None and word.endswith("s"):
            concept = _WORD.get(word[:-1])
        if concept is not None:
            vector[concept] += 1.0
        else:
            other = int(hashlib.sha256(word.encode()).hexdigest(), 16) % OTHER_DIMS
            vector[len(CONCEPTS) + other] += OTHER_WEIGHT
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[-1] = 1.0
        return vector
    return [round(v / norm, 6) for v in vector]


def similarity(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(embed(a), embed(b), strict=True))
