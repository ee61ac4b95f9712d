"""hypercorn's internals stay in one layer: read from the package's source."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "shutdown_scope"
PYPROJECT = PACKAGE.parent / "pyproject.toml"
COMPAT = "_hypercorn_compat.py"
# The layer: the module that imports hypercorn, and those that build on it.
LAYER = (COMPAT, "_hypercorn_workers.py", "_hypercorn_h2.py")
# What the layer may import besides the hypercorn extra's own requirements.
ALSO_ALLOWED = {"anyio", "trio", "shutdown_scope"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute_imports(tree: ast.Module) -> set[str]:
    """Top-level names of the packages a module imports (relative ones left out)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_compat_module_imports_hypercorn() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "hypercorn" in _absolute_imports(_tree(path))
    }
    assert importers == {COMPAT}


def test_the_layer_uses_hypercorns_types_not_any() -> None:
    for name in LAYER:
        tree = _tree(PACKAGE / name)
        uses_any = [
            node.lineno
            for node in ast.walk(tree)
            if (isinstance(node, ast.Name) and node.id == "Any")
            or (isinstance(node, ast.Attribute) and node.attr == "Any")
            or (isinstance(node, ast.alias) and node.name == "Any")
        ]
        assert uses_any == [], f"{name} uses Any on lines {uses_any}"


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return match.group(0).lower().replace("-", "_")


def test_the_hypercorn_extra_declares_what_the_layer_imports() -> None:
    # A static check of the source: running it on 3.11 and later is enough.
    tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    declared = {
        _requirement_name(r) for r in extras["optional-dependencies"]["hypercorn"]
    }
    # The extra is pinned to the minors tested: an upper bound.
    (pin,) = [
        r
        for r in extras["optional-dependencies"]["hypercorn"]
        if r.startswith("hypercorn")
    ]
    assert re.search(r"<\d", pin), pin
    imported: set[str] = set()
    for name in (*LAYER, "hypercorn.py"):
        imported |= _absolute_imports(_tree(PACKAGE / name))
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party - ALSO_ALLOWED <= declared, sorted(third_party - declared)


@pytest.mark.anyio
async def test_the_context_every_connection_holds_has_no_instance_dict() -> None:
    # Every connection holds one for as long as it is open, idle ones too:
    # slots, not a dict each (bench/conn_memory.py counts the bytes).
    import socket

    import sniffio

    from shutdown_scope._hypercorn_compat import (
        ConnectionContext,
        asyncio_tree,
        trio_tree,
    )

    trio = sniffio.current_async_library() == "trio"
    tree = trio_tree() if trio else asyncio_tree()
    with socket.socket() as conn:
        context = ConnectionContext(tree.worker_context(None), conn)
        assert context.conn is conn
        assert not hasattr(context, "__dict__")
        assert not hasattr(context.terminated, "__dict__")
