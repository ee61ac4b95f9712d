"""Errors for a missing optional dependency that name the extra to install."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(error: ModuleNotFoundError, extra: str) -> ModuleNotFoundError:
    """``error`` again, saying which extra of this package brings the module.

    Args:
        error: the failed import of the optional dependency.
        extra: the extra that installs it, e.g. ``"hypercorn"``.
    """
    missing = error.name or extra
    msg = (
        f"{missing} is not installed; shutdown_scope's {extra} support needs it:"
        f' pip install "shutdown-scope[{extra}]"'
    )
    return ModuleNotFoundError(msg, name=error.name, path=error.path)
