"""uvicorn's internals stay in one module: read from the package's source."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "shutdown_scope"
COMPAT = "_uvicorn_compat.py"
# What the other modules may import of uvicorn: its documented Config.
PUBLIC = {"uvicorn", "uvicorn.config"}


def _uvicorn_imports(path: Path) -> set[str]:
    """The uvicorn modules ``path`` imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] == "uvicorn"}


def test_only_the_compat_module_imports_uvicorns_internals() -> None:
    beyond_public = {
        str(path.relative_to(PACKAGE)): sorted(imports - PUBLIC)
        for path in PACKAGE.rglob("*.py")
        if (imports := _uvicorn_imports(path)) - PUBLIC
    }
    assert set(beyond_public) == {COMPAT}, beyond_public


def test_the_uvicorn_config_is_the_only_public_name_used_elsewhere() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == COMPAT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "uvicorn.config":
                names = {alias.name for alias in node.names}
                assert names == {"Config"}, f"{path.name}: {names}"
