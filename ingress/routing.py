"""Which deployments serve a model alias, and in which order to try them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from schemas.config import Deployment, GatewayConfig


class Router:
    """Round-robin over the deployments of a group. The plan for one request is the whole
    group, starting at the next deployment in turn, so a retryable failure moves on to
    the others."""

    def __init__(self, config: GatewayConfig) -> None:
        self._groups: dict[str, tuple[Deployment, ...]] = {
            name: tuple(config.group(name)) for name in config.model_names
        }
        self._turns: dict[str, Iterator[int]] = {
            name: itertools.count() for name in self._groups
        }

    def __contains__(self, model: str) -> bool:
        return model in self._groups

    @property
    def models(self) -> list[str]:
        return list(self._groups)

    def plan(self, model: str) -> list[Deployment]:
        group = self._groups.get(model)
        if not group:
            return []
        if len(group) == 1:
            return [group[0]]
        start = next(self._turns[model]) % len(group)
        return [*group[start:], *group[:start]]
