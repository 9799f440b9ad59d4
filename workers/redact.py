"""Secrets taken out of upstream error messages before they cross NATS.

An upstream that quotes the request back in its error (proxies do, some providers do for a
bad header) would hand the provider key to whoever made the call. Every error a worker
sends, from every adapter, streamed or not, batch lines included, passes through
:func:`redact`: the deployment's own key wherever it appears, and anything shaped like a
credential: ``Bearer`` tokens, ``sk-`` keys (OpenAI, Anthropic), Google ``AIza`` keys,
``x-api-key``/``api-key``/``x-goog-api-key`` values and ``key=`` in URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{4,}"), rf"\1 {REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), f"sk-{REDACTED}"),
    (re.compile(r"AIza[0-9A-Za-z_\-]{35}"), f"AIza{REDACTED}"),
    (re.compile(r"(?i)\b((?:x-goog-|x-)?api[-_]key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)([?&](?:key|api_key|access_token)=)[^&\s\"']+"), rf"\1{REDACTED}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets or anything shaped like a credential."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
