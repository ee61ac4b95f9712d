"""``shutdown-scope serve``: find the ASGI application that ``MODULE:ATTRIBUTE`` names.

Each way it can fail is a ``ServeError`` with one line that says what to fix:
exit code 2 when the command line names something that is not there or is not
an ASGI app, 1 when the user's code raised while it was imported or built.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Final

__all__ = ["ServeError", "load_app"]

logger = logging.getLogger("shutdown_scope.serve")

USAGE: Final = 2
FAILED: Final = 1

_MISSING: Final = object()
_ASGI: Final = "an ASGI application: an async callable taking (scope, receive, send)"


class ServeError(Exception):
    """``shutdown-scope serve`` cannot go on: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _raised(what: str, error: BaseException) -> ServeError:
    """The error raised by user code, in one line that points at where.

    The traceback is logged at DEBUG (``--log-level debug``).
    """
    logger.debug("%s:", what, exc_info=error)
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        where = f" ({error.filename}, line {error.lineno})"
    else:
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    text = str(error).splitlines()[0] if str(error) else ""
    name = type(error).__name__
    return ServeError(
        f"{what} raised {name}{': ' if text else ''}{text}{where};"
        " --log-level debug shows the traceback",
        FAILED,
    )


def _import(module_name: str, app_dir: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # The named module (or its package) is missing, not one it imports.
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            msg = (
                f"cannot import {module_name!r}: no module named {missing!r} in "
                f"{app_dir} (--app-dir) or on sys.path"
            )
            raise ServeError(msg, USAGE) from None
        what = f"importing {module_name!r}"
        raise _raised(what, error) from None
    except Exception as error:  # noqa: BLE001 -- user code: anything, in one line
        what = f"importing {module_name!r}"
        raise _raised(what, error) from None


def _attribute(module: Any, spec: str) -> Any:
    module_name, _, path = spec.partition(":")
    found = module
    for depth, name in enumerate(path.split(".")):
        found = getattr(found, name, _MISSING)
        if found is _MISSING:
            owner = ".".join([module_name, *path.split(".")[:depth]])
            msg = f"{spec!r}: {owner!r} has no attribute {name!r}"
            raise ServeError(msg, USAGE)
    return found


def _check_asgi(app: object, spec: str, *, factory: bool) -> None:
    """Refuse what cannot be an ASGI 3 application, with the likely fix."""
    kind = type(app).__name__
    if inspect.isclass(app):
        msg = (
            f"{spec!r} is a class: name an instance of it (app = {app.__name__}()),"
            " or add --factory to have it called"
        )
        raise ServeError(msg, USAGE)
    if not callable(app):
        msg = f"{spec!r} is a {kind}, not {_ASGI}"
        raise ServeError(msg, USAGE)
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return  # a callable without a signature (a builtin, say): let it try
    try:
        signature.bind(None, None, None)
    except TypeError:
        pass
    else:
        return
    if _accepts(signature, 2):
        msg = (
            f"{spec!r} looks like a WSGI application (environ, start_response), "
            f"not {_ASGI}; Django: django.core.asgi.get_asgi_application()"
        )
    elif _accepts(signature, 0) and not factory:
        msg = f"{spec!r} takes no arguments: if it returns the app, add --factory"
    else:
        msg = f"{spec!r} cannot be called with (scope, receive, send): not {_ASGI}"
    raise ServeError(msg, USAGE)


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*[None] * count)
    except TypeError:
        return False
    return True


def load_app(spec: str, *, factory: bool, app_dir: str) -> Any:
    """Import ``MODULE:ATTRIBUTE`` from ``app_dir`` and return the ASGI app.

    ``app_dir`` goes first on ``sys.path``, as uvicorn's ``--app-dir`` does.
    With ``factory``, the attribute is called with no arguments and returns it.

    Raises:
        ServeError: the module is missing, raised, or has no such attribute, or
            the object is not an ASGI application (the message says which).
    """
    directory = str(Path(app_dir).resolve())
    if not Path(directory).is_dir():
        msg = f"--app-dir {app_dir}: not a directory"
        raise ServeError(msg, USAGE)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module_name = spec.partition(":")[0]
    app = _attribute(_import(module_name, app_dir), spec)
    if factory:
        if not callable(app):
            msg = f"--factory: {spec!r} is a {type(app).__name__}, not a function"
            raise ServeError(msg, USAGE)
        try:
            takes_none = _accepts(inspect.signature(app), 0)
        except (TypeError, ValueError):
            takes_none = True  # no signature to read: let the call say
        if not takes_none:
            msg = f"--factory: {spec!r} cannot be called with no arguments"
            raise ServeError(msg, USAGE)
        try:
            app = app()
        except Exception as error:  # noqa: BLE001 -- user code: anything, in one line
            what = f"the factory {spec!r}"
            raise _raised(what, error) from None
        if inspect.isawaitable(app):
            close = getattr(app, "close", None)
            if callable(close):
                close()  # a coroutine never awaited: no RuntimeWarning
            msg = (
                f"--factory: {spec!r} returned an awaitable; the factory must be a "
                "plain function (not async def) that returns the app"
            )
            raise ServeError(msg, USAGE)
        spec = f"{spec}()"
    _check_asgi(app, spec, factory=factory)
    return app
