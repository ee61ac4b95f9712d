r"""Labels of work in flight, made safe to print.

Labels come from code and from clients (``"GET /path"``, with the path as the
client sent it, percent-decoded). Printed raw, a path with a newline forges log
lines (``GET /x\nshutdown clean ...``) and an escape sequence rewrites the
terminal. Every place that prints a label (the report's ``str()``, the service
manager's ``STATUS=``) shows it through ``printable_label``; the report's
``as_dict()`` keeps the true label, which JSON escapes.
"""

from __future__ import annotations

__all__ = ["LABEL_LIMIT", "printable_label"]

LABEL_LIMIT = 200
"""Characters of a label shown, by default, before it is cut."""


def _escaped(char: str) -> str:
    if char.isprintable() and char != "\\":
        return char
    return repr(char)[1:-1]  # \n, \x1b, \u2028, \udcff, and \\ itself


def printable_label(label: str, limit: int | None = LABEL_LIMIT) -> str:
    r"""``label`` on one line: what is not printable is escaped as ``repr()``
    does (``\n``, ``\x1b``, ``\u202e``), a backslash is doubled (so the text
    ``\n`` is told apart from a newline), and after ``limit`` characters it is
    cut, with a marker saying how much was left out (``…[+120 chars]``);
    ``limit=None`` for no cut.
    """
    if not label.isprintable() or "\\" in label:
        label = "".join(_escaped(char) for char in label)
    if limit is not None and len(label) > limit:
        label = f"{label[:limit]}…[+{len(label) - limit} chars]"
    return label
