"""``token.take(stream)``: take items until the stop begins, losing none.

The commonest service loop ("handle messages until asked to stop") is easy to
get wrong by hand: a receive cancelled on STOPPING leaves its variable unbound
(or bound to the *previous* item, which is then handled twice). This iterator
ends instead, and an item already received when the stop begins is yielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, TypeVar, final

import anyio

from ._phases import Phase

if TYPE_CHECKING:
    from ._token import ShutdownToken

__all__ = ["Receiver", "Take", "check_take"]

T_co = TypeVar("T_co", covariant=True)


class Receiver(Protocol[T_co]):
    """What ``take()`` reads from: an anyio object stream or a trio channel."""

    async def receive(self) -> T_co:
        """The next item; ``anyio.EndOfStream`` (or trio's) once there is none."""


def check_take(stream: object, until: object) -> Phase:
    """Check ``take()``'s arguments; return ``until`` as a Phase.

    Raises:
        TypeError: ``stream`` has no ``receive()`` method.
        ValueError: ``until`` is not a phase after RUNNING.
    """
    if not callable(getattr(stream, "receive", None)):
        msg = (
            f"take() reads a stream with an async receive() method (an anyio"
            f" MemoryObjectReceiveStream, a trio MemoryReceiveChannel), not"
            f" {type(stream).__name__}"
        )
        raise TypeError(msg)
    try:
        phase = Phase(until)  # type: ignore[arg-type]  # checked here
    except ValueError:
        phase = None
    if phase is None or phase <= Phase.RUNNING:
        allowed = ", ".join(p.name for p in Phase if p > Phase.RUNNING)
        msg = f"take(until=...) is a Phase after RUNNING ({allowed}), not {until!r}"
        raise ValueError(msg)
    return phase


@final
class Take(AsyncIterator[T_co]):
    """The items of a stream, until a token reaches a phase (see ``token.take``)."""

    __slots__ = ("_done", "_stream", "_token", "_until")

    def __init__(
        self, token: ShutdownToken, stream: Receiver[T_co], until: Phase
    ) -> None:
        self._token = token
        self._stream = stream
        self._until = until
        self._done = False

    def __aiter__(self) -> Take[T_co]:
        return self

    async def __anext__(self) -> T_co:
        """The next item, or the end once ``until`` is reached. A checkpoint."""
        if self._done or self._token.phase >= self._until:
            self._done = True
            await anyio.lowlevel.checkpoint()
            raise StopAsyncIteration
        # Cancelling a blocked receive is safe with the streams this is for:
        # anyio's memory streams (4.4+) skip a receiver whose cancel is pending
        # and do not cancel one already handed an item, and trio channels never
        # lose an item to a cancel. An item that wins that race is returned
        # here even though the stop has begun: it was taken, so it is handled.
        with self._token.cancel_on(self._until):
            try:
                return await self._stream.receive()
            except (anyio.EndOfStream, _trio_end_of_channel()):
                self._done = True
                raise StopAsyncIteration from None
        self._done = True
        raise StopAsyncIteration


def _trio_end_of_channel() -> type[Exception]:
    """The ``EndOfChannel`` of trio when trio is loaded, else ``anyio.EndOfStream``."""
    import sys

    trio = sys.modules.get("trio")
    if trio is None:
        return anyio.EndOfStream
    end: type[Exception] = trio.EndOfChannel
    return end
