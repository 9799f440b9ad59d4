"""A request checked against what the deployments of its model can do (``model_info``).

A limit counts only when every deployment the request may go to declares one: the call is
refused (400 naming the parameter) when it asks for more than the most generous of them,
since no deployment could serve it. A deployment that declares nothing is left to refuse
for itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.config import Deployment


class OverLimit(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _ceiling(values: Sequence[int | None]) -> int | None:
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def check(plan: Sequence[Deployment], body: dict[str, Any], model: str) -> None:
    """Raise :class:`OverLimit` if no deployment in ``plan`` could serve ``body``."""
    ceiling = _ceiling([d.max_output_tokens for d in plan])
    if ceiling is not None:
        for param in ("max_completion_tokens", "max_tokens"):
            asked = body.get(param)
            if isinstance(asked, int) and asked > ceiling:
                raise OverLimit(param, f"{param} is too large: {asked}. The model `{model}` "
                                f"supports at most {ceiling} completion tokens.")
    ceiling = _ceiling([d.output_vector_size for d in plan])
    asked = body.get("dimensions")
    if ceiling is not None and isinstance(asked, int) and asked > ceiling:
        raise OverLimit("dimensions", f"dimensions is too large: {asked}. The model "
                        f"`{model}` has at most {ceiling} dimensions.")
