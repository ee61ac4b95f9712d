"""Sphinx configuration: ``python3 -m nox -s docs`` builds the site into docs/_build.

The build runs real shutdowns first (``_ext/shutdown_pictures.py``), so the
reports and timelines the pages show are regenerated each time, never pasted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

from sphinx.application import Sphinx  # noqa: E402 -- after the path

from shutdown_scope._version import __version__  # noqa: E402

project = "shutdown-scope"
author = "The shutdown-scope developers"
copyright = "the shutdown-scope developers, MIT license"  # noqa: A001 -- Sphinx's name
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
    "shutdown_pictures",
]
exclude_patterns = ["_build", "_generated", "_ext"]
# `code` is Python by default, like the docstrings' double backquotes.
default_role = "code"
highlight_language = "python"

# -- the API reference ---------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -n (nitpicky) checks every cross-reference. The build has no network, so no
# intersphinx: names of the standard library and of other packages resolve to
# no page and are let through here; this project's own names must resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(anyio|trio|hypercorn|uvicorn|h11|h2|starlette|_contextvars)\..*"),
    (r"py:.*", r"(prometheus_client|_pytest|pytest|asyncio)\..*"),
    (r"py:.*", r"(socket|signal|os|enum|contextlib|collections|typing|logging)\..*"),
    (r"py:.*", r"(typing_extensions|collections\.abc|types|pathlib|argparse)\..*"),
    (r"py:class", r"(Awaitable|Callable|Mapping|MutableMapping|Sequence|Iterable)"),
    (r"py:class", r"(AsyncIterator|Iterator|ContextManager|AbstractContextManager)"),
    (r"py:class", r"(ExceptionGroup|BaseExceptionGroup|NoReturn|TypeAlias)"),
    (r"py:class", r"(Scope|Receive|Send|Message|ASGIApp|ASGI3Application)"),
    (r"py:class", r"(CancelScope|SocketStream|TaskStatus|T|T_Retval|PosArgsT)"),
    (r"py:class", r"(ConnectionHandler|Literal|Any|_NO_DEFAULT|Final)"),
    (r"py:class", r"(Receiver|Take)"),  # token.take(): private protocol and iterator
    # Private modules and names, as annotations name them.
    (r"py:.*", r"shutdown_scope\._.*"),
    (r"py:.*", r"shutdown_scope\.\w+\._\w+"),
]

# -- HTML ----------------------------------------------------------------------
html_theme = "furo"
html_title = f"shutdown-scope {release}"
html_static_path: list[str] = []


def _no_inline_type(  # noqa: PLR0917 -- the event's signature
    app: Sphinx,  # noqa: ARG001 -- the event's signature
    what: str,
    name: str,  # noqa: ARG001
    obj: object,  # noqa: ARG001
    options: object,  # noqa: ARG001
    lines: list[str],
) -> None:
    """Undo napoleon's reading of ``X: Y`` on a property's first line as "of
    type X": this project's property docstrings begin with a sentence
    (``The scope's own token: shows the scope's phase``). A type has no spaces
    outside brackets and unions; a sentence has."""
    if what not in {"property", "attribute", "data"}:
        return
    for i, line in enumerate(lines):
        prefix = line.removeprefix(":type: ")
        if prefix != line and re.fullmatch(r"[A-Z][\w',]*( [\w',]+)+", prefix):
            del lines[i]
            if i and not lines[i - 1]:
                del lines[i - 1]
            first = next(n for n, text in enumerate(lines) if text)
            lines[first] = f"{prefix}: {lines[first]}"
            return


def setup(app: Sphinx) -> None:
    """Run ``_no_inline_type`` after napoleon (priority 500)."""
    app.connect("autodoc-process-docstring", _no_inline_type, priority=600)
