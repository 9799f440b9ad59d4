"""The layering rules: each package imports only the layers beneath it, modules stay small."""

from __future__ import annotations

import ast
import functools
import gc
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each top-level package may import of ours. The roles meet only over NATS.
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "core": {"schemas", "core"},
    "ingress": {"schemas", "core", "ingress"},
    "workers": {"schemas", "core", "workers"},
    "accounting": {"schemas", "core", "accounting"},
    "cli": {"schemas", "core", "ingress", "workers", "accounting", "cli"},
}
OURS = set(ALLOWED)
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py"))


@functools.cache
def _tree(path: Path) -> ast.Module:
    """``path`` parsed once, with the collector held off meanwhile: CPython 3.11 fails a
    parse ("AST constructor recursion depth mismatch") when a collection runs finalizers
    (of the sockets and event loops earlier tests left) in the middle of it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text())
    finally:
        if enabled:
            gc.enable()


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_package_imports_only_the_layers_beneath_it() -> None:
    breaches = []
    for path in _modules():
        package = path.relative_to(ROOT).parts[0]
        for line, module in _imported(_tree(path)):
            top = module.split(".")[0]
            if top in OURS and top not in ALLOWED[package]:
                breaches.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert breaches == []


def test_no_relative_imports_hide_a_breach() -> None:
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _modules()
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_opens_with_a_line_saying_what_it_is_for(path: Path) -> None:
    doc = ast.get_docstring(_tree(path))
    assert doc, "no module docstring"
    assert doc.splitlines()[0].strip(), "the docstring's first line is empty"
