"""Who is calling, and what that caller may do.

A caller is the master key, a virtual key (with its team, if it has one), or anybody at all
when the gateway runs without a master key. Limits and model lists nest: a key can only
narrow what its team allows, never widen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from schemas.keys import Limits, Team, VirtualKey


@dataclass(frozen=True, slots=True)
class Principal:
    key: VirtualKey | None = None
    team: Team | None = None
    master: bool = False

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None

    @property
    def team_id(self) -> str | None:
        return self.team.id if self.team else None

    @property
    def admin_of_team(self) -> str | None:
        """The team whose keys this key manages (a ``team_admin`` key of a team)."""
        if self.key is not None and self.key.role == "team_admin" and self.team is not None:
            return self.team.id
        return None

    @property
    def is_unrestricted(self) -> bool:
        """No model list at the key's level nor the team's."""
        return not (self.key and self.key.allowed_models) and not (
            self.team and self.team.allowed_models)


MASTER = Principal(master=True)
# The caller of a gateway that has no master key: nothing is checked, nothing is limited,
# but the admin API stays closed, since nobody could be told apart from anybody else.
ANONYMOUS = Principal()

_N = TypeVar("_N", int, Decimal)


def _stricter(a: _N | None, b: _N | None) -> _N | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def effective_limits(principal: Principal) -> Limits:
    """The key's limits inside its team's: for each limit, the stricter of the two."""
    own = principal.key.limits if principal.key else Limits()
    team = principal.team.limits if principal.team else Limits()
    return Limits(
        rpm=_stricter(own.rpm, team.rpm),
        tpm=_stricter(own.tpm, team.tpm),
        max_parallel=_stricter(own.max_parallel, team.max_parallel),
        daily_budget_usd=_stricter(own.daily_budget_usd, team.daily_budget_usd),
        monthly_budget_usd=_stricter(own.monthly_budget_usd, team.monthly_budget_usd),
    )


def allowed(principal: Principal, model: str) -> bool:
    """Whether ``model`` (a ``model_name`` alias) is in the key's list and the team's;
    an empty list allows everything at its level."""
    for models in (
        principal.key.allowed_models if principal.key else (),
        principal.team.allowed_models if principal.team else (),
    ):
        if models and model not in models:
            return False
    return True


def visible_models(principal: Principal, models: Iterable[str]) -> list[str]:
    """The subset of ``models`` the caller may use, in the given order (for ``/v1/models``)."""
    return [m for m in models if allowed(principal, m)]
