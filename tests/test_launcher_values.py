"""The launcher's option values, as the parser builds them (in-process)."""

from __future__ import annotations

import argparse

import pytest

from shutdown_scope._launcher._options import Options, ReadyMode
from shutdown_scope._launcher._values import ready_mode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("notify", ReadyMode()),
        ("accepting", ReadyMode(kind="accepting")),
        ("after:2", ReadyMode(kind="after", seconds=2.0)),
        ("after:0.25", ReadyMode(kind="after", seconds=0.25)),
    ],
)
def test_ready_modes_parse_to_equal_values(text: str, expected: ReadyMode) -> None:
    parsed = ready_mode(text)
    assert parsed == expected
    assert hash(parsed) == hash(expected)
    assert str(parsed) == text
    assert repr(parsed) == (
        f"ReadyMode(kind={expected.kind!r}, seconds={expected.seconds!r})"
    )


def test_ready_modes_that_differ_are_not_equal() -> None:
    assert ready_mode("after:2") != ready_mode("after:3")
    assert ready_mode("notify") != ready_mode("accepting")
    assert ready_mode("notify") != "notify"  # a value, not its text
    assert len({ready_mode("after:2"), ready_mode("after:2.0")}) == 1


@pytest.mark.parametrize("text", ["after:", "after:0", "after:-1", "later", "after:x"])
def test_bad_ready_modes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        ready_mode(text)


def test_options_show_every_field() -> None:
    options = Options(command=["true"])
    shown = repr(options)
    assert shown.startswith("Options(")
    for name in Options.__slots__:
        assert f"{name}=" in shown
