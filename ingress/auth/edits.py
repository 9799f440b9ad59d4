"""How an admin edit changes one key or team entry: PATCH semantics, and a compare-and-set
write to KV on the entry's revision, so two replicas (or a revoke and a ``last_used_at``
flush) never overwrite each other's change."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import nats.js.errors
import pydantic
from nats.js.kv import KeyValue
from pydantic import BaseModel

from ingress.auth.key_errors import Conflict, NotFound
from schemas.keys import Limits, merge_limits

_M = TypeVar("_M", bound=BaseModel)

# Compare-and-set retries before a write gives up; contention on one key is rare (an admin
# edit racing a last_used flush), so a few attempts are plenty.
_CAS_ATTEMPTS = 5


async def modify(
    kv: KeyValue, kind: str, id: str, model: type[_M], change: Callable[[_M], _M]
) -> tuple[int, _M]:
    """Read, change and compare-and-set one entry; retry if someone wrote in between."""
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError,
                nats.js.errors.InvalidKeyError):
            raise NotFound(kind, id) from None
        if entry.value is None or entry.revision is None:
            raise NotFound(kind, id)
        try:
            current = model.model_validate_json(entry.value)
        except pydantic.ValidationError:
            # An entry we cannot read is refused by the mirror; it cannot be changed
            # here either, only replaced through the admin API.
            raise NotFound(kind, id) from None
        changed = change(current)
        if changed is current:
            return entry.revision, current
        try:
            revision = await kv.update(id, changed.model_dump_json().encode(),
                                       last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        return revision, changed
    raise Conflict(f"{kind} {id} is being changed concurrently; try again")


def patched(current: _M, patch: BaseModel) -> _M:
    """``current`` with the fields the PATCH body sent: ``null`` clears a field (an empty
    list or dict for collections, no limits for ``limits``); ``limits`` merges by field."""
    update: dict[str, object] = {}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if name == "limits":
            value = Limits() if value is None else merge_limits(getattr(current, name), value)
        elif value is None and name in ("allowed_models", "metadata"):
            value = type(getattr(current, name))()
        elif value is None and name == "role":
            value = "user"
        update[name] = value
    return current.model_copy(update=update)
