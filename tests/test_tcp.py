"""serve_tcp: real sockets on 127.0.0.1 and unix paths, driven through the phases.

The in-process tests run the server and its clients on one event loop. None of
them sleeps: they wait for phases, for replies, or (to know that the listeners
are closed) for the server's in-flight labels to change.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from _services import NO_SIGNALS
from _spawn import TIMEOUT, Child
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownToken, graceful_scope
from shutdown_scope.tcp import serve_tcp

ECHO_EXAMPLE = str(Path(__file__).parent.parent / "examples" / "tcp_echo.py")
MAX_LINE = 100


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="ss-") as name:
        yield Path(name)


@pytest.fixture(params=["tcp", "unix"])
def where(request: pytest.FixtureRequest, sock_dir: Path) -> dict[str, Any]:
    """serve_tcp options for a TCP port on 127.0.0.1, or for a unix socket."""
    if request.param == "tcp":
        return {"host": "127.0.0.1"}
    return {"path": sock_dir / "server.sock"}


def serve(**options: Any) -> functools.partial[Any]:
    """serve_tcp with its options: scope.start() passes positional arguments only."""
    return functools.partial(serve_tcp, **options)


async def connect(address: str) -> SocketStream:
    if address.startswith("unix:"):
        return await anyio.connect_unix(address.removeprefix("unix:"))
    host, _, port = address.rpartition(":")
    return await anyio.connect_tcp(host, int(port))


def connect_now(address: str) -> socket.socket:
    """Connect without a checkpoint: the connection waits in the accept queue.

    A blocking connect to a local listener returns at once: the kernel completes
    it without the server's accept().
    """
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address.removeprefix("unix:"))
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)))


def peer_of(stream: SocketStream, address: str) -> str:
    """How the server names the client at the other end of ``stream``."""
    if address.startswith("unix:"):
        return "unix"
    return f"127.0.0.1:{stream.extra(SocketAttribute.local_port)}"  # noqa: S610 -- not Django


async def wait_listeners_closed(token: ShutdownToken) -> tuple[str, ...]:
    """Wait until a draining server has closed its listeners; the labels then.

    A server holds its drain open as ``listening on ...`` (``closes_itself``,
    not work in flight) until its listeners are closed. Nothing signals that
    moment, so look after each scheduler round (no sleeping; anyio's
    wait_all_tasks_blocked() cannot see asyncio callbacks that are due but not
    yet run).
    """
    for _ in range(100):
        holds = token._node.hold_names()
        if not any("listening on" in hold for hold in holds):
            return token.in_flight_labels()
        await anyio.lowlevel.checkpoint()
    msg = f"listeners not closed after 100 rounds: {token._node.hold_names()}"
    raise AssertionError(msg)


async def receive_line(reader: BufferedByteReceiveStream) -> bytes:
    return await reader.receive_until(b"\n", MAX_LINE)


async def echo(stream: SocketStream, token: ShutdownToken) -> None:
    """Echo lines until the client closes; never looks at the token."""
    reader = BufferedByteReceiveStream(stream)
    while True:
        try:
            line = await receive_line(reader)
        except anyio.IncompleteRead:
            return
        await stream.send(line + b"\n")


async def echo_until_drain(stream: SocketStream, token: ShutdownToken) -> None:
    """Echo lines; when the drain begins, an idle connection says bye and ends."""
    reader = BufferedByteReceiveStream(stream)
    while True:
        with token.cancel_on(Phase.DRAINING) as idle:
            line = await receive_line(reader)
        if idle.cancelled_caught:
            await stream.send(b"bye\n")
            return
        await stream.send(line + b"\n")


pytestmark = pytest.mark.anyio


async def test_echo_and_started_addresses(where: dict[str, Any]) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        addresses = await scope.start(serve(**where), echo, name="server")
        async with await connect(addresses[0]) as client:
            await client.send(b"hello\n")
            reply = await receive_line(BufferedByteReceiveStream(client))
        scope.request_shutdown("test over")
    assert reply == b"hello"
    if "path" in where:
        assert addresses == [f"unix:{where['path']}"]
        assert not where["path"].exists()  # the server removed its socket file
    else:
        [address] = addresses
        assert re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", address), address
    assert scope.report.clean
    assert scope.report.services[0].outcome == "returned"


async def test_every_interface_by_default_and_a_host_name() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        [everywhere] = await scope.start(serve(), echo, name="everywhere")
        [local] = await scope.start(serve(host="localhost"), echo, name="local")
        port = int(everywhere.rpartition(":")[2])
        # Dual stack where the system has it: IPv4 clients reach "::" too.
        async with await connect(f"127.0.0.1:{port}") as client:
            await client.send(b"v4\n")
            replies = [await receive_line(BufferedByteReceiveStream(client))]
        async with await connect(local) as client:
            await client.send(b"name\n")
            replies.append(await receive_line(BufferedByteReceiveStream(client)))
        scope.request_shutdown("test over")
    dual = socket.has_dualstack_ipv6()
    assert everywhere == (f"[::]:{port}" if dual else f"0.0.0.0:{port}")
    assert re.fullmatch(r"(127\.0\.0\.1|\[::1\]):[1-9]\d*", local), local
    assert replies == [b"v4", b"name"]
    assert scope.report.clean


async def test_a_host_name_that_does_not_resolve_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_such_host(*args: object, **kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(anyio, "getaddrinfo", no_such_host)  # no DNS in tests
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(socket.gaierror) as caught:
            await scope.start(serve(host="no-such-host.invalid", port=80), echo)
        scope.request_shutdown("test over")
    assert caught.value.errno == socket.EAI_NONAME
    assert "cannot listen on no-such-host.invalid:80: Name or service" in str(
        caught.value
    )


async def test_message_in_progress_is_finished_and_new_clients_are_refused(
    where: dict[str, Any],
) -> None:
    tokens: list[ShutdownToken] = []

    async def handler(stream: SocketStream, token: ShutdownToken) -> None:
        tokens.append(token)
        await echo(stream, token)

    async with graceful_scope(drain_timeout=30, **NO_SIGNALS) as scope:
        [address] = await scope.start(serve(**where), handler, name="server")
        async with await connect(address) as client:
            reader = BufferedByteReceiveStream(client)
            await client.send(b"first\n")
            assert await receive_line(reader) == b"first"
            await client.send(b"hel")  # the middle of a message
            scope.request_shutdown("deploy")
            await tokens[0].wait_phase(Phase.DRAINING)
            in_flight = await wait_listeners_closed(scope.token)
            with pytest.raises(ConnectionRefusedError):
                connect_now(address).close()
            await client.send(b"lo\n")
            finished = await receive_line(reader)
            peer = peer_of(client, address)
    assert finished == b"hello"
    assert in_flight == (f"server: connection {peer}",)  # only real work
    assert scope.report.clean
    assert len(tokens) == 1


async def test_connection_waiting_in_the_accept_queue_is_served_not_reset(
    where: dict[str, Any],
) -> None:
    # The server's accept loops are cancelled synchronously when its token
    # reaches DRAINING, but the listeners are closed (after taking the accept
    # queue) only when the server's task runs again, after its accept loops
    # have exited: at least one scheduler round later. A handler woken by the
    # same DRAINING runs before that, and a connect without a checkpoint there
    # leaves a connection in the kernel's accept queue that no accept loop can
    # take any more. Were the listeners closed without taking the queue, that
    # client would be reset.
    queued: list[socket.socket] = []
    queued_ready = anyio.Event()
    phase_of_queued: list[Phase] = []

    async def handler(stream: SocketStream, token: ShutdownToken) -> None:
        if queued_ready.is_set():
            phase_of_queued.append(token.phase)
            await echo(stream, token)
            return
        await stream.send(b"ready\n")
        await token.wait_phase(Phase.DRAINING)
        queued.append(connect_now(address))
        queued_ready.set()

    try:
        async with graceful_scope(drain_timeout=30, **NO_SIGNALS) as scope:
            [address] = await scope.start(serve(**where), handler, name="server")
            async with await connect(address) as first:
                reader = BufferedByteReceiveStream(first)
                assert await receive_line(reader) == b"ready"
                scope.request_shutdown("deploy")
                await queued_ready.wait()
            async with await SocketStream.from_socket(queued[0]) as late:
                await late.send(b"still served\n")
                reply = await receive_line(BufferedByteReceiveStream(late))
    finally:
        for sock in queued:  # already closed, unless the test failed early
            sock.close()
    assert reply == b"still served"
    assert phase_of_queued == [Phase.DRAINING]  # taken from the queue, not accepted
    assert scope.report.clean


async def test_idle_connection_watching_the_token_does_not_hold_the_drain(
    where: dict[str, Any],
) -> None:
    async with graceful_scope(drain_timeout=10, **NO_SIGNALS) as scope:
        [address] = await scope.start(serve(**where), echo_until_drain, name="s")
        async with await connect(address) as client:
            reader = BufferedByteReceiveStream(client)
            await client.send(b"ping\n")
            assert await receive_line(reader) == b"ping"
            scope.request_shutdown("deploy")
            # Idle, neither sending nor closing: the server says bye and closes.
            goodbye = await receive_line(reader)
            with pytest.raises(anyio.EndOfStream):
                await client.receive()
    assert goodbye == b"bye"
    # Held until the deadline, the connection would have been cancelled.
    assert scope.report.clean
    assert scope.report.services[0].outcome == "returned"


async def test_handler_ignoring_the_token_is_cancelled_at_the_drain_deadline(
    mock_clock: MockClock,
) -> None:
    closed_at: float | None = None
    async with graceful_scope(
        drain_timeout=10, cancel_timeout=3, **NO_SIGNALS
    ) as scope:
        [address] = await scope.start(serve(host="127.0.0.1"), echo, name="server")
        async with await connect(address) as client:
            reader = BufferedByteReceiveStream(client)
            await client.send(b"ping\n")
            assert await receive_line(reader) == b"ping"
            peer = peer_of(client, address)
            triggered_at = anyio.current_time()
            scope.request_shutdown("deploy")
            with pytest.raises(anyio.IncompleteRead):
                await receive_line(reader)  # the server closes the connection
            closed_at = anyio.current_time()
    assert closed_at == triggered_at + 10
    report = scope.report
    assert not report.clean
    drain = report.phase(Phase.DRAINING)
    assert drain is not None
    assert drain.duration == 10
    server = report.services[0]
    assert server.outcome == "cancelled"
    assert server.cancelled_in_flight == (f"server: connection {peer}",)


async def test_a_raising_handler_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture, where: dict[str, Any]
) -> None:
    async def handler(stream: SocketStream, token: ShutdownToken) -> None:
        reader = BufferedByteReceiveStream(stream)
        line = await receive_line(reader)
        if line == b"boom":
            msg = "the handler broke"
            raise ValueError(msg)
        await stream.send(line + b"\n")

    caplog.set_level(logging.ERROR, logger="shutdown_scope")
    async with graceful_scope(**NO_SIGNALS) as scope:
        [address] = await scope.start(serve(**where), handler, name="server")
        async with await connect(address) as bad, await connect(address) as good:
            await bad.send(b"boom\n")
            with pytest.raises(anyio.EndOfStream):
                await bad.receive()  # the server closed it
            await good.send(b"fine\n")
            reply = await receive_line(BufferedByteReceiveStream(good))
            bad_peer = peer_of(bad, address)
        scope.request_shutdown("test over")
    assert reply == b"fine"
    [record] = [r for r in caplog.records if r.name == "shutdown_scope"]
    assert record.getMessage() == f"shutdown_scope: connection {bad_peer} failed"
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert scope.report.clean
    assert scope.report.errors == ()


async def test_port_in_use_fails_start_and_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        async with graceful_scope(**NO_SIGNALS) as scope:
            with pytest.raises(OSError, match="in use") as caught:
                await scope.start(serve(host="127.0.0.1", port=port), echo)
            scope.request_shutdown("test over")
    assert caught.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{port}: " in str(caught.value)
    assert scope.report.services[0].outcome == "not started"


async def test_unix_path_of_a_live_server_is_not_taken(sock_dir: Path) -> None:
    path = sock_dir / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        async with graceful_scope(**NO_SIGNALS) as scope:
            with pytest.raises(OSError, match="another server") as caught:
                await scope.start(serve(path=path), echo)
            scope.request_shutdown("test over")
        assert caught.value.errno == errno.EADDRINUSE
        assert f"unix:{path}" in str(caught.value)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))  # still the live server's


async def test_unix_path_refuses_to_remove_a_file_that_is_no_socket(
    sock_dir: Path,
) -> None:
    path = sock_dir / "data.txt"
    path.write_text("precious")
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(FileExistsError, match="not a socket") as caught:
            await scope.start(serve(path=path), echo)
        scope.request_shutdown("test over")
    assert f"unix:{path}" in str(caught.value)
    assert "refusing to remove it" in str(caught.value)
    assert path.read_text() == "precious"


@pytest.mark.parametrize("takeover", ["unlink", "rename"])
async def test_unix_path_replaces_a_stale_socket_and_keeps_a_successors(
    sock_dir: Path, takeover: str
) -> None:
    path = sock_dir / "server.sock"
    staged = sock_dir / "successor.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))  # closed without removing its file: stale
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as successor:
        async with graceful_scope(**NO_SIGNALS) as scope:
            [address] = await scope.start(serve(path=path), echo, name="server")
            async with await connect(address) as client:
                await client.send(b"hi\n")
                reply = await receive_line(BufferedByteReceiveStream(client))
            # A successor takes over the path while this server still runs
            # (after removing its file, or by renaming its own over it): this
            # server must leave the successor's socket file alone when it ends.
            if takeover == "unlink":
                path.unlink()
            successor.bind(str(path if takeover == "unlink" else staged))
            successor.listen()
            if takeover == "rename":
                staged.rename(path)
            scope.request_shutdown("test over")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))  # the successor's: it is still there
        successor.accept()[0].close()
    assert reply == b"hi"
    assert scope.report.clean


async def test_inherited_sockets_are_served_as_they_are(sock_dir: Path) -> None:
    path = sock_dir / "inherited.sock"
    with ExitStack() as stack:
        tcp = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        unix = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        unix.bind(str(path))
        unix.listen()
        port = tcp.getsockname()[1]
        replies = []
        async with graceful_scope(**NO_SIGNALS) as scope:
            addresses = await scope.start(serve(sockets=[tcp, unix]), echo)
            blocking = [tcp.getblocking(), unix.getblocking()]
            for address in addresses:
                async with await connect(address) as client:
                    await client.send(address.encode() + b"\n")
                    replies.append(
                        await receive_line(BufferedByteReceiveStream(client))
                    )
            scope.request_shutdown("test over")
        assert addresses == [f"127.0.0.1:{port}", f"unix:{path}"]
        assert replies == [a.encode() for a in addresses]
        assert blocking == [False, False]
        assert tcp.fileno() == unix.fileno() == -1  # the server owned them
        assert path.is_socket()  # not created by the server: not removed by it
    assert scope.report.clean


@pytest.mark.parametrize(
    ("options", "error", "rule"),
    [
        ({"host": "127.0.0.1", "path": "x.sock"}, ValueError, "one of host/port"),
        ({"port": 8000, "sockets": []}, ValueError, "not host/port and sockets"),
        ({"path": "x.sock", "sockets": []}, ValueError, "not path and sockets"),
        ({"port": -1}, ValueError, "port must be from 0 to 65535"),
        ({"port": 65536}, ValueError, "port must be from 0 to 65535"),
        ({"port": "8000"}, TypeError, "port must be an int"),
        ({"port": True}, TypeError, "port must be an int"),
        ({"host": 127}, TypeError, "host must be a str"),
        ({"backlog": -1}, ValueError, "backlog must be from 0"),
        ({"path": ""}, TypeError, "path must be a non-empty str"),
        ({"sockets": []}, ValueError, "sockets is empty"),
        ({"sockets": ["fd 3"]}, TypeError, "sequence of socket.socket"),
    ],
)
async def test_bad_arguments_state_the_rule(
    options: dict[str, Any], error: type[Exception], rule: str
) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(error, match=re.escape(rule)):
            await scope.start(serve(**options), echo)
        scope.request_shutdown("test over")


async def test_bad_handler_and_sockets_state_the_rule() -> None:
    with ExitStack() as stack:
        unbound = stack.enter_context(socket.socket())
        bound = stack.enter_context(socket.socket())
        bound.bind(("127.0.0.1", 0))  # but not listening
        udp = stack.enter_context(socket.socket(type=socket.SOCK_DGRAM))
        async with graceful_scope(**NO_SIGNALS) as scope:
            with pytest.raises(TypeError, match="handler must be an async function"):
                await scope.start(serve(), "not a handler")
            with pytest.raises(TypeError, match=r"sequence of socket\.socket"):
                await scope.start(serve(sockets=bound), echo)
            for sock in (unbound, bound):
                with pytest.raises(ValueError, match=r"must already listen"):
                    await scope.start(serve(sockets=[sock]), echo)
            with pytest.raises(ValueError, match="TCP or unix stream sockets"):
                await scope.start(serve(sockets=[udp]), echo)
            scope.request_shutdown("test over")
        assert bound.fileno() != -1  # refused sockets are left to their owner


# -- the example, as a real process stopped by a real SIGTERM -----------------


class LineClient:
    """A blocking client socket that reads whole lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                msg = f"the server closed the connection; unread: {self._buffer!r}"
                raise AssertionError(msg)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def close_and_expect_close(self) -> None:
        """Close our end; the server then closes its own, without a reset."""
        self.sock.shutdown(socket.SHUT_WR)
        assert self.sock.recv(4096) == b""
        assert self._buffer == b""
        self.sock.close()


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_echo_example_answers_every_line_and_says_bye_on_sigterm(
    backend: str,
) -> None:
    with Child(ECHO_EXAMPLE, "--backend", backend) as child, ExitStack() as stack:
        ready = re.fullmatch(
            r"ready pid=(\d+) port=(\d+)", child.wait_for("ready pid=")
        )
        assert ready, child.output
        assert int(ready[1]) == child.proc.pid

        def client() -> LineClient:
            new = LineClient(int(ready[2]))
            stack.callback(new.sock.close)
            return new

        idle, partial, pending = client(), client(), client()
        idle.send(b"one\n")
        assert idle.line() == b"one"
        partial.send(b"two\n")
        assert partial.line() == b"two"
        partial.send(b"hal")  # a line half sent when SIGTERM comes
        pending.send(b"three\n")  # its echo is read only after SIGTERM
        child.send(signal.SIGTERM)
        child.wait_for("shutdown_scope: DRAINING")
        partial.send(b"f\n")
        assert idle.line() == b"bye"
        # Whether the server had read these lines when the drain began or
        # read them after its "bye" is up to the scheduler: both are echoed.
        assert sorted([partial.line(), partial.line()]) == [b"bye", b"half"]
        assert sorted([pending.line(), pending.line()]) == [b"bye", b"three"]
        for each in (idle, partial, pending):
            each.close_and_expect_close()
        assert child.finish() == 0, child.output
    child.assert_in_order(
        "shutdown_scope: STOPPING",
        "shutdown_scope: DRAINING",
        "shutdown clean (exit code 0)",
        "service 'echo': returned",
    )
    assert "CANCELLING" not in child.output
    assert "failed" not in child.output
