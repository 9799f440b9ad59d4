"""What Grafana and the ClickHouse plugin do to a panel's ``rawSql`` before ClickHouse sees it,
reproduced so the dashboard's queries can run against chDB.

Three passes, in the plugin's order:

1. ``$__conditionalAll(cond, $var)`` (plugin frontend): ``cond``, or ``1=1`` when the
   variable is All or empty.
2. Template variables (Grafana's ``templateSrv.replace``): ``$var``, ``${var}``,
   ``${var:format}``, ``[[var]]``. All without an ``allValue`` stands for every option the
   variable's query returned. Without a format, the plugin quotes a multi-value list
   (``'a','b'``).
3. Macros (plugin backend, grafana/sqlds): ``$__timeFilter(ts)`` →
   ``ts >= toDateTime(<from s>) AND ts <= toDateTime(<to s>)``, ``$__timeInterval(ts)`` →
   ``toStartOfInterval(toDateTime(ts), INTERVAL <n> second)``, ``$__fromTime`` … as in the
   plugin's ``pkg/macros/macros.go``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

ALL = "$__all"


@dataclass(frozen=True)
class Selection:
    """A multi-value variable with an All option, as the dashboard holds it."""

    values: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # what the variable's query offered: what All stands for
    all: bool = False

    @classmethod
    def of(cls, *values: str) -> Selection:
        return cls(values=values)

    @classmethod
    def everything(cls, options: tuple[str, ...] = ()) -> Selection:
        return cls(options=options, all=True)

    @property
    def current(self) -> str:
        """``current.value.toString()`` in the plugin: an array joins with commas."""
        return ALL if self.all else ",".join(self.values)

    @property
    def expanded(self) -> tuple[str, ...]:
        return self.options if self.all else self.values


@dataclass(frozen=True)
class QueryContext:
    start: datetime
    end: datetime
    interval_s: int = 60
    variables: Mapping[str, Selection] = field(default_factory=dict)


class MacroError(ValueError):
    pass


def _args(text: str, open_at: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the bracket at ``open_at`` (split at its own depth
    only) and the index just past its closing bracket."""
    if text[open_at] != "(":
        raise MacroError(f"expected '(' at {open_at}")
    args: list[str] = []
    depth = 0
    start = open_at + 1
    for i in range(open_at, len(text)):
        char = text[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i])
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(text[start:i])
            start = i + 1
    raise MacroError("missing close bracket")


def conditional_all(sql: str, variables: Mapping[str, Selection]) -> str:
    """Frontend pass, last occurrence first like the plugin."""
    macro = "$__conditionalAll("
    while (at := sql.rfind(macro)) != -1:
        args, end = _args(sql, at + len(macro) - 1)
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll takes 2 arguments, got {args}")
        name = args[1].strip().removeprefix("$").strip("{}")
        if name not in variables:
            raise MacroError(f"$__conditionalAll on unknown variable {name!r}")
        current = variables[name].current
        phrase = "1=1" if current in ("", ALL) else args[0]
        sql = sql[:at] + phrase + sql[end:]
    return sql


def _singlequote(values: tuple[str, ...]) -> str:
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _doublequote(values: tuple[str, ...]) -> str:
    return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)


_FORMATS: dict[str, Callable[[tuple[str, ...]], str]] = {
    "singlequote": _singlequote,
    "doublequote": _doublequote,
    "csv": ",".join,
    "raw": ",".join,
}

# Grafana's variable syntax: $name, [[name:fmt]], ${name.field:fmt}
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)


def template_variables(sql: str, variables: Mapping[str, Selection]) -> str:
    """Grafana's pass. Unknown names (``$__timeFilter``) are left for the backend."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in variables:
            return match.group(0)
        values = variables[name].expanded
        if fmt is None:
            return _singlequote(values)  # the plugin's own format for arrays
        if fmt not in _FORMATS:
            raise MacroError(f"variable format {fmt!r} is not modelled here")
        return _FORMATS[fmt](values)

    return _VARIABLE.sub(replace, sql)


def _seconds(t: datetime) -> int:
    return int(t.timestamp())


def _millis(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _one(name: str, args: list[str]) -> str:
    if len(args) != 1 or not args[0]:
        raise MacroError(f"$__{name} takes 1 argument, got {args}")
    return args[0]


def _macros(ctx: QueryContext) -> dict[str, Callable[[list[str]], str]]:
    frm, to = ctx.start, ctx.end
    sec = max(ctx.interval_s, 1)
    return {
        "fromTime": lambda a: f"toDateTime({_seconds(frm)})",
        "toTime": lambda a: f"toDateTime({_seconds(to)})",
        "fromTime_ms": lambda a: f"fromUnixTimestamp64Milli({_millis(frm)})",
        "toTime_ms": lambda a: f"fromUnixTimestamp64Milli({_millis(to)})",
        "timeFilter": lambda a: (
            f"{_one('timeFilter', a)} >= toDateTime({_seconds(frm)}) AND "
            f"{a[0]} <= toDateTime({_seconds(to)})"
        ),
        "timeFilter_ms": lambda a: (
            f"{_one('timeFilter_ms', a)} >= fromUnixTimestamp64Milli({_millis(frm)}) AND "
            f"{a[0]} <= fromUnixTimestamp64Milli({_millis(to)})"
        ),
        "dateFilter": lambda a: (
            f"{_one('dateFilter', a)} >= toDate('{frm:%Y-%m-%d}') AND "
            f"{a[0]} <= toDate('{to:%Y-%m-%d}')"
        ),
        "timeInterval": lambda a: (
            f"toStartOfInterval(toDateTime({_one('timeInterval', a)}), INTERVAL {sec} second)"
        ),
        "timeInterval_ms": lambda a: (
            f"toStartOfInterval(toDateTime64({_one('timeInterval_ms', a)}, 3), "
            f"INTERVAL {sec * 1000} millisecond)"
        ),
        "interval_s": lambda a: str(sec),
    }


_MACRO = re.compile(r"\$__(\w+)\b")


def macros(sql: str, ctx: QueryContext) -> str:
    """Backend pass: ``$__name`` with a bracketed argument list only when ``(`` follows at
    once; arguments are split at the top level and trimmed."""
    table = _macros(ctx)
    out: list[str] = []
    pos = 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue  # inside the arguments of a macro already expanded
        name = match.group(1)
        if name not in table:
            raise MacroError(f"$__{name} is not a macro of the ClickHouse plugin")
        end = match.end()
        args: list[str] = []
        if sql.startswith("(", end):
            raw, end = _args(sql, end)
            args = [a.strip() for a in raw]
        out.append(sql[pos : match.start()])
        out.append(table[name](args))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def render(sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for ``sql`` in this context."""
    sql = conditional_all(sql, ctx.variables)
    sql = template_variables(sql, ctx.variables)
    return macros(sql, ctx)
