"""The phases of a shutdown and the validated timing plan."""

from __future__ import annotations

import enum
import math
import signal
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Phase",
    "Plan",
    "ShutdownPlanWarning",
    "validate_dump_signal",
    "validate_exit_code",
    "validate_flags",
    "validate_signals",
]


class Phase(enum.IntEnum):
    """Where a shutdown is. Ordered: ``Phase.RUNNING < Phase.STOPPING < ...``.

    ``DONE`` is the terminal state of a scope that finished without the watchdog;
    ``EXITING`` means a deadline passed and the process is being ended from outside
    the event loop.
    """

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    RUNNING = 0
    STOPPING = 1
    DRAINING = 2
    CANCELLING = 3
    EXITING = 4
    DONE = 5


class ShutdownPlanWarning(UserWarning):
    """The shutdown plan does not fit inside the orchestrator's grace period."""


_UNCATCHABLE: Final = frozenset({signal.SIGKILL, signal.SIGSTOP})


def _seconds(name: str, value: object, *, allow_zero: bool = True) -> float:
    # bool is an int subclass, but `drain_timeout=True` is a bug, not a budget.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = (
            f"{name} must be a number of seconds (int or float, math.inf for never),"
            f" not {type(value).__name__}: {value!r}"
        )
        raise TypeError(msg)
    seconds = float(value)
    if math.isnan(seconds):
        msg = f"{name} must be a number of seconds, not NaN"
        raise ValueError(msg)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be {rule} seconds (math.inf for never), got {value!r}"
        raise ValueError(msg)
    return seconds


def _microseconds(seconds: float) -> float:
    # Budgets are compared in whole microseconds (systemd's resolution): float
    # sums land a hair off (0.1 + 0.2 > 0.3), which is no reason to warn.
    micro = seconds * 1_000_000
    return micro if math.isinf(micro) else round(micro)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Validated budgets, in seconds. ``math.inf`` means "never"."""

    announce_delay: float
    drain_timeout: float
    cancel_timeout: float
    grace_period: float | None
    signal_debounce: float
    start_warning: float = 5.0

    @classmethod
    def from_options(
        cls,
        *,
        announce_delay: object,
        drain_timeout: object,
        cancel_timeout: object,
        grace_period: object,
        signal_debounce: object,
        start_timeout_warning: object = 5.0,
    ) -> Plan:
        """Check every budget and return the plan.

        Raises:
            TypeError: a budget is not an int or float.
            ValueError: a budget is negative or NaN (or zero where that makes no sense).
        """
        debounce = _seconds("signal_debounce", signal_debounce)
        if debounce >= 1:
            # A person pressing Ctrl-C again a second later means it.
            msg = f"signal_debounce must be under 1 second, got {signal_debounce!r}"
            raise ValueError(msg)
        return cls(
            announce_delay=_seconds("announce_delay", announce_delay),
            drain_timeout=_seconds("drain_timeout", drain_timeout),
            cancel_timeout=_seconds("cancel_timeout", cancel_timeout),
            grace_period=None
            if grace_period is None
            else _seconds("grace_period", grace_period, allow_zero=False),
            signal_debounce=debounce,
            start_warning=_seconds(
                "start_timeout_warning", start_timeout_warning, allow_zero=False
            ),
        )

    @property
    def total(self) -> float:
        """The longest a shutdown may take, from trigger to the hard exit."""
        return self.announce_delay + self.drain_timeout + self.cancel_timeout

    def misfit(self) -> str | None:
        """Say why the plan does not fit the grace period, or None if it does."""
        if self.grace_period is None:
            return None
        if _microseconds(self.total) <= _microseconds(self.grace_period):
            return None
        # 15 digits: enough to show a microsecond over, too few to show float noise.
        return (
            f"the shutdown plan takes up to {self.total:.15g} s (announce_delay"
            f" {self.announce_delay:.15g} + drain_timeout {self.drain_timeout:.15g} +"
            f" cancel_timeout {self.cancel_timeout:.15g}) but grace_period is"
            f" {self.grace_period:.15g} s: the orchestrator would SIGKILL the process"
            " before the plan ends; shorten the budgets or raise the grace period"
        )


def validate_signals(signals: object) -> tuple[signal.Signals, ...]:
    """Turn the ``signals=`` option into a tuple of catchable signals.

    Raises:
        TypeError: not an iterable of ints.
        ValueError: an unknown or uncatchable signal.
    """
    if isinstance(signals, (str, bytes)) or not hasattr(signals, "__iter__"):
        msg = f"signals must be an iterable of signal numbers, not {signals!r}"
        raise TypeError(msg)
    result: list[signal.Signals] = []
    for sig in signals:
        if isinstance(sig, bool) or not isinstance(sig, int):
            msg = (
                f"signals must hold signal numbers such as signal.SIGTERM, not {sig!r}"
            )
            raise TypeError(msg)
        try:
            known = signal.Signals(sig)
        except ValueError:
            msg = f"unknown signal number {sig!r}"
            raise ValueError(msg) from None
        if known in _UNCATCHABLE:
            msg = f"{known.name} cannot be caught; remove it from signals"
            raise ValueError(msg)
        if known not in result:
            result.append(known)
    return tuple(result)


def validate_flags(**flags: object) -> None:
    """Raises: TypeError: an option that must be a bool is not."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            msg = f"{name} must be True or False, not {flag!r}"
            raise TypeError(msg)


def validate_exit_code(code: object) -> None:
    """Raises: TypeError, ValueError: not None or an exit code (0-255)."""
    if code is None:
        return
    if isinstance(code, bool) or not isinstance(code, int):
        msg = f"hard_exit_code must be None or an int, not {code!r}"
        raise TypeError(msg)
    if not 0 <= code <= 255:  # noqa: PLR2004 -- the range of exit codes
        msg = f"hard_exit_code must be from 0 to 255, not {code}"
        raise ValueError(msg)


def validate_dump_signal(
    dump_signal: object, signals: tuple[signal.Signals, ...]
) -> signal.Signals | None:
    """The ``dump_signal=`` option, checked.

    Raises:
        TypeError, ValueError: not a catchable signal, or one of ``signals``.
    """
    if dump_signal is None:
        return None
    if isinstance(dump_signal, bool) or not isinstance(dump_signal, int):
        msg = f"dump_signal must be None or a signal number, not {dump_signal!r}"
        raise TypeError(msg)
    (sig,) = validate_signals((dump_signal,))
    if sig in signals:
        msg = (
            f"dump_signal {sig.name} is also in signals: a dump must not stop the scope"
        )
        raise ValueError(msg)
    return sig
