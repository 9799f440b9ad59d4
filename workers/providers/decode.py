"""An upstream's JSON answer decoded without holding up the worker's event loop.

A large answer (a batch of embeddings runs to tens of megabytes) takes the event loop
long enough to starve heartbeats and every other call on the worker; past
:data:`OFF_LOOP_BYTES` it is decoded in a thread.
"""

from __future__ import annotations

from typing import Any

import httpx

from core.json_codec import loads
from workers.offload import off_loop

OFF_LOOP_BYTES = 256 * 1024


async def json_body(response: httpx.Response) -> Any:
    """The decoded body; None when it is not JSON."""
    content = response.content
    try:
        if len(content) > OFF_LOOP_BYTES:
            return await off_loop(loads, content)
        return loads(content)
    except ValueError:
        return None
