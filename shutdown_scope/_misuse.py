"""Checks of a service before it runs: misuse gets a message with the fix."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["check_service", "not_a_coroutine", "service_name"]


def not_a_coroutine(value: object, *, call: str, right: str) -> None:
    """Refuse a coroutine object where a function is expected.

    Raises:
        TypeError: ``value`` is a coroutine (it is closed: no "never awaited").
    """
    if inspect.iscoroutine(value):
        value.close()
        msg = f"{call} takes the async function, not a coroutine: {right}"
        raise TypeError(msg)


def service_name(fn: Callable[..., object]) -> str | None:
    inner = fn
    while isinstance(inner, functools.partial):  # bound keyword options
        inner = inner.func
    return getattr(inner, "__name__", None)


def _mentions_token(annotation: object) -> bool:
    if isinstance(annotation, str):
        return "ShutdownToken" in annotation
    return getattr(annotation, "__name__", None) == "ShutdownToken"


def check_service(
    fn: object, args: tuple[object, ...], options: Mapping[str, Any], *, via: str
) -> None:
    """Check a service and its arguments before ``scope.start``/``start_soon``.

    Raises:
        TypeError: keyword options (bind them with ``functools.partial``), a
            coroutine instead of a function, not callable, a signature that
            cannot take the token first and ``args``, or (``start``) no
            ``task_status``.
    """
    not_a_coroutine(
        fn, call=f"scope.{via}()", right=f"scope.{via}(service, *args), not service()"
    )
    if not callable(fn):
        msg = f"a service must be an async function, not {fn!r}"
        raise TypeError(msg)
    name = service_name(fn) or repr(fn)
    if options:
        keys = ", ".join(f"{key}=..." for key in options)
        msg = (
            f"scope.{via}() passes only positional arguments to a service; bind"
            f" keyword options with functools.partial:"
            f" scope.{via}(functools.partial({name}, {keys}), ...)"
        )
        raise TypeError(msg)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or the like: let the call speak
        return
    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    first = positional[0] if positional else None
    if first is not None and not _mentions_token(first.annotation):
        later = next((p for p in positional[1:] if _mentions_token(p.annotation)), None)
        if later is not None:
            msg = (
                f"services receive the token first: {name}{signature} takes the"
                f" ShutdownToken as {later.name!r}, not as its first parameter;"
                f" define it as {name}(token, ...)"
            )
            raise TypeError(msg)
    kwargs = {"task_status": None} if via == "start" else {}
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError:
        pass
    else:
        return
    if via == "start" and not any(
        p.name == "task_status" or p.kind == p.VAR_KEYWORD for p in params
    ):
        msg = (
            f"scope.start() passes task_status=: {name}{signature} must accept"
            " task_status and call task_status.started() once ready (or start it"
            " with scope.start_soon())"
        )
        raise TypeError(msg)
    msg = (
        f"services receive the token first: scope.{via}() calls"
        f" {name}(token, {', '.join(['...'] * len(args))}) with {len(args)}"
        f" argument(s) after the token, but its signature is {signature}"
    )
    raise TypeError(msg)
