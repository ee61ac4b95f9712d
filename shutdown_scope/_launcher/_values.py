"""The values of ``shutdown-scope``'s options, parsed strictly.

Each is an ``argparse`` type: a bad value is a one-line usage error (exit code 2)
that names the rule. Numbers are plain ASCII decimals: ``int()`` and ``float()``
also take signs, spaces, underscores, other scripts' digits and ``nan``.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import math
import os
import re
import signal

from ._options import ReadyMode
from ._signal_inbox import FORWARDED

__all__ = [
    "backlog",
    "group",
    "interval",
    "ready_mode",
    "rewrite",
    "rewritten_twice",
    "seconds",
    "timeout",
    "wait",
    "workers",
]

# A plain decimal: no sign, spaces, underscores, other scripts' digits, nan.
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
# listen(2) takes a C int; the kernel caps it at net.core.somaxconn anyway.
_MOST_BACKLOG = 2**31 - 1
_MOST_SIGNAL_DIGITS = 3
# About 31 years; Python's socket timeouts overflow near 9.2e9 s.
_MOST_SECONDS = 1e9
# What --rewrite may not do: these cannot be caught, or would freeze the child.
_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


def _duration(text: str, *, zero: bool = True, never: bool = True) -> float:
    """Seconds for an option: ``zero`` allows 0, ``never`` allows inf."""
    if text.lower() in {"inf", "infinity"} and never:
        return math.inf
    if not _NUMBER.fullmatch(text):
        forms = "5, 0.5 or inf" if never else "5 or 0.5"
        msg = f"{text!r} is not a number of seconds (such as {forms})"
        raise argparse.ArgumentTypeError(msg)
    value = float(text)
    if value > _MOST_SECONDS:
        never_text = "; inf for never" if never else ""
        msg = f"{text!r}: at most {_MOST_SECONDS:.0f} seconds{never_text}"
        raise argparse.ArgumentTypeError(msg)
    if value == 0 and not zero:
        msg = f"{text!r}: must be more than 0 seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def seconds(text: str) -> float:
    """Seconds >= 0, or inf: ``--grace-period``."""
    return _duration(text)


def timeout(text: str) -> float:
    """Seconds > 0, or inf: ``--ready-timeout``."""
    return _duration(text, zero=False)


def interval(text: str) -> float:
    """Seconds >= 0, finite: ``--debounce``."""
    return _duration(text, never=False)


def wait(text: str) -> float:
    """Seconds > 0, finite: ``reload --timeout``."""
    return _duration(text, zero=False, never=False)


def backlog(text: str) -> int:
    """``--backlog``: 0 to INT_MAX (``listen(2)`` takes a C int)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(_MOST_BACKLOG)):
        value = -1
    else:
        value = int(text)
    if not 0 <= value <= _MOST_BACKLOG:
        msg = f"{text!r} is not a backlog: a whole number from 0 to {_MOST_BACKLOG}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _signal_number(text: str) -> int:
    name = text.upper()
    if name in {"0", "NONE"}:
        return 0
    if name.isascii() and name.isdigit() and len(name) <= _MOST_SIGNAL_DIGITS:
        try:
            return signal.Signals(int(name))
        except ValueError:
            pass
    elif name.isascii():
        with contextlib.suppress(KeyError):
            return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    msg = f"{text!r} is not a signal name (TERM, SIGINT, ...) or number"
    raise argparse.ArgumentTypeError(msg)


def rewrite(text: str) -> tuple[int, int]:
    """``--rewrite FROM:TO``: FROM a signal the launcher handles; TO not SIGSTOP."""
    source, sep, target = text.partition(":")
    if not sep:
        msg = f"{text!r}: expected FROM:TO, as in TERM:INT (TO may be 0 to drop it)"
        raise argparse.ArgumentTypeError(msg)
    from_sig = _signal_number(source)
    to_sig = _signal_number(target)
    if from_sig == 0:
        msg = f"{text!r}: the signal to rewrite cannot be 0"
        raise argparse.ArgumentTypeError(msg)
    handled = (*FORWARDED, signal.SIGHUP)
    if from_sig not in handled:
        name = signal.Signals(from_sig).name
        why = "cannot be caught" if from_sig in _UNCATCHABLE else "is not handled"
        names = ", ".join(signal.Signals(x).name[3:] for x in handled)
        msg = f"{text!r}: {name} {why} by the launcher; FROM is one of {names}"
        raise argparse.ArgumentTypeError(msg)
    if to_sig == signal.SIGSTOP:
        msg = (
            f"{text!r}: SIGSTOP would freeze the child, which could then neither"
            " drain nor exit; forward TSTP if it should stop itself"
        )
        raise argparse.ArgumentTypeError(msg)
    return from_sig, to_sig


def rewritten_twice(rewrites: list[tuple[int, int]]) -> str | None:
    """The name of a signal that two ``--rewrite`` options rewrite, if any."""
    sources = [source for source, _ in rewrites]
    twice = next((x for x in sources if sources.count(x) > 1), None)
    return None if twice is None else signal.Signals(twice).name


def ready_mode(text: str) -> ReadyMode:
    """``--ready``: ``notify``, ``accepting`` or ``after:SECONDS`` (more than 0)."""
    if text == "notify":
        return ReadyMode(kind="notify")
    if text == "accepting":
        return ReadyMode(kind="accepting")
    kind, sep, rest = text.partition(":")
    if kind == "after" and sep:
        try:
            seconds = _duration(rest, zero=False, never=False)
            return ReadyMode(kind="after", seconds=seconds)
        except argparse.ArgumentTypeError as error:
            msg = f"after:SECONDS: {error}"
            raise argparse.ArgumentTypeError(msg) from None
    msg = f"{text!r}: expected notify, accepting or after:SECONDS (such as after:2)"
    raise argparse.ArgumentTypeError(msg)


# More workers than this is a typo, not a machine (and each costs a process).
_MOST_WORKERS = 1024


def workers(text: str) -> int:
    """``--workers``: 1 to 1024, or ``auto``/``0`` for the CPUs this process may use."""
    if text.lower() == "auto" or text == "0":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(_MOST_WORKERS)):
        value = -1
    else:
        value = int(text)
    if not 1 <= value <= _MOST_WORKERS:
        msg = (
            f"{text!r} is not a number of workers: 1 to {_MOST_WORKERS}, or auto (or 0)"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def group(text: str) -> int:
    """``--control-group``: a group name or a numeric gid."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        msg = f"{text!r} is not a group name or gid"
        raise argparse.ArgumentTypeError(msg) from None
