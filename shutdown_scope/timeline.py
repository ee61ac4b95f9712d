"""Draw a ShutdownReport as an SVG timeline (standard library only).

``render_svg(scope.report)`` returns the SVG document as text: the phases as
bands on a time axis, what was in flight at each phase change, each service's
outcome, and the deadlines as dashed lines. It takes the report itself or its
``as_dict()``, including one read back from a JSON log, so a shutdown in
production can be drawn afterwards::

    python -m shutdown_scope.timeline report.json --drain-timeout 20 > out.svg

The report does not carry the scope's budgets: pass them (the same keyword
names as ``graceful_scope``) to get the deadline lines, or put them in a
``"plan"`` object in the JSON. Labels in flight (often a client's request path)
are escaped, so no report can break or inject into the SVG.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._report import ShutdownReport
from ._timeline import timeline_svg

__all__ = ["main", "render_svg"]


def _budget(name: str, value: object, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds or None, not {value!r}"
        raise TypeError(msg)
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be {rule} seconds (math.inf for never), got {value!r}"
        raise ValueError(msg)
    return seconds


def render_svg(
    report: ShutdownReport | Mapping[str, object],
    *,
    announce_delay: float | None = None,
    drain_timeout: float | None = None,
    cancel_timeout: float | None = None,
    grace_period: float | None = None,
) -> str:
    """Draw ``report`` as an SVG timeline and return the document as text.

    Args:
        report: a ``ShutdownReport``, its ``as_dict()``, or that dict read back
            from JSON (an optional ``"plan"`` object in it gives the budgets).
        announce_delay: the scope's budgets, as given to ``graceful_scope``, for
            the deadline lines (None: unknown; an unknown ``announce_delay``
            counts as 0, graceful_scope's default).
        drain_timeout: see ``announce_delay``.
        cancel_timeout: see ``announce_delay``.
        grace_period: the orchestrator's window: a line where SIGKILL comes.

    Raises:
        TypeError: ``report`` is neither a report nor a mapping, or a budget is
            not a number.
        ValueError: a budget is negative or NaN, or the dict lacks a field of
            the report or has one of the wrong type (the message names it).
    """
    budgets = {
        "announce_delay": _budget("announce_delay", announce_delay),
        "drain_timeout": _budget("drain_timeout", drain_timeout),
        "cancel_timeout": _budget("cancel_timeout", cancel_timeout),
        "grace_period": _budget("grace_period", grace_period, allow_zero=False),
    }
    if isinstance(report, ShutdownReport):
        data = report.as_dict()
    elif isinstance(report, Mapping):
        data = dict(report)
    else:
        msg = (
            "render_svg() takes a ShutdownReport or its as_dict(), not"
            f" {type(report).__name__}"
        )
        raise TypeError(msg)
    return timeline_svg(data, budgets)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if math.isnan(value) or value < 0:
        msg = f"{text!r}: seconds must be >= 0 (inf for never)"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m shutdown_scope.timeline``."""
    command = argparse.ArgumentParser(
        prog="python -m shutdown_scope.timeline",
        description="Draw a ShutdownReport (the JSON of report.as_dict()) as an "
        "SVG timeline.",
    )
    command.add_argument(
        "report", metavar="REPORT", help="a JSON file holding as_dict(); - for stdin"
    )
    command.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the SVG here (default: standard output)",
    )
    for name in ("announce-delay", "drain-timeout", "cancel-timeout", "grace-period"):
        command.add_argument(
            f"--{name}",
            type=_seconds,
            metavar="S",
            help=f"the scope's {name.replace('-', '_')}, for the deadline lines "
            "(default: the report's plan, if any)",
        )
    return command


def _read(path: str) -> Mapping[str, object]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, Mapping):
        msg = f"the report must be a JSON object, not {type(data).__name__}"
        raise ValueError(msg)  # noqa: TRY004 -- bad input, reported as such
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code (0, or 2 on bad input)."""
    command = _parser()
    args = command.parse_args(argv)
    try:
        data = _read(args.report)
        svg = render_svg(
            data,
            announce_delay=args.announce_delay,
            drain_timeout=args.drain_timeout,
            cancel_timeout=args.cancel_timeout,
            grace_period=args.grace_period,
        )
    except (OSError, UnicodeDecodeError, ValueError) as error:
        # json.JSONDecodeError is a ValueError: one line, and where.
        command.error(f"{args.report}: {error}")
    # Bytes: the document declares UTF-8, whatever the locale's encoding is.
    encoded = svg.encode("utf-8")
    if args.output is None:
        sys.stdout.buffer.write(encoded)
        sys.stdout.flush()
        return 0
    try:
        Path(args.output).write_bytes(encoded)
    except OSError as error:
        command.error(f"{args.output}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
