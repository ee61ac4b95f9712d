"""``shutdown-scope serve MODULE:ATTRIBUTE``, run as real processes with real signals.

The apps are in ``tests/serve_apps`` (``--app-dir``): plain ASGI, FastAPI, Starlette
and Django, each with ``/hello`` and ``/stream``, a stream of ticks that ends with
``bye`` when the drain begins. The server prints ``shutdown-scope serve: listening
on URL`` once it accepts; the tests read the port there (``--bind 127.0.0.1:0``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from _spawn import TIMEOUT, Child, Launcher

ROOT = Path(__file__).parent.parent
APPS = Path(__file__).parent / "serve_apps"
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

pytestmark = pytest.mark.subprocess

NEEDS_UVICORN = pytest.mark.skipif(
    importlib.util.find_spec("shutdown_scope.uvicorn") is None,
    reason="shutdown_scope.uvicorn not available",
)
UVICORN = pytest.param("uvicorn", marks=NEEDS_UVICORN)
LISTENING = re.compile(r"shutdown-scope serve: listening on (\S+)")
SERVE = ("-m", "shutdown_scope", "serve", "--app-dir", str(APPS))


def serve(*args: str, env: dict[str, str] | None = None) -> Child:
    """``shutdown-scope serve`` with the test apps on its path."""
    return Child(*SERVE, *args, env=env)


def url_of(child: Child) -> str:
    found = LISTENING.search(child.wait_for("shutdown-scope serve: listening on"))
    assert found is not None
    return found[1]


def get(url: str, **client: object) -> httpx.Response:
    with httpx.Client(timeout=TIMEOUT, **client) as http:  # type: ignore[arg-type]
        return http.get(url)


def stream_across_sigterm(child: Child, url: str) -> list[str]:
    """Open ``/stream``, SIGTERM the server after the first tick; all the lines.

    httpx raises if the response is cut: the lines are those of a complete one.
    """
    lines: list[str] = []
    with httpx.Client(timeout=TIMEOUT) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                child.send(signal.SIGTERM)
    return lines


# -- frameworks -------------------------------------------------------------------

FRAMEWORKS = {
    "plain": ("plain_app:app", "hello plain\n"),
    "fastapi": ("fastapi_app:app", '{"hello":"fastapi"}'),
    "starlette": ("starlette_app:app", "hello starlette\n"),
    "django": ("django_app:application", "hello django\n"),
}
CASES = [
    pytest.param(
        framework,
        server,
        marks=[NEEDS_UVICORN] if server == "uvicorn" else [],
        id=f"{framework}-{server}",
    )
    for framework, servers in [
        ("plain", ["hypercorn", "hypercorn-trio", "uvicorn"]),
        ("fastapi", ["hypercorn", "hypercorn-trio", "uvicorn"]),
        # Starlette is FastAPI's base: asyncio only, to keep the suite short.
        ("starlette", ["hypercorn", "uvicorn"]),
        # Django runs its async views on asyncio only (asgiref).
        ("django", ["hypercorn", "uvicorn"]),
    ]
    for server in servers
]


def server_args(server: str) -> list[str]:
    if server == "hypercorn-trio":
        return ["--server", "hypercorn", "--backend", "trio"]
    return ["--server", server]


@pytest.mark.parametrize(("framework", "server"), CASES)
def test_an_app_streams_until_the_drain_and_the_server_exits_0(
    framework: str, server: str
) -> None:
    if framework != "plain":
        pytest.importorskip(framework)
    spec, hello = FRAMEWORKS[framework]
    with serve(
        spec,
        *server_args(server),
        "--bind",
        "127.0.0.1:0",
        "--readiness-path",
        "/readyz",
        "--drain-timeout",
        "20",
    ) as child:
        url = url_of(child)
        assert get(url + "/readyz").status_code == 200
        answer = get(url + "/hello")
        assert (answer.status_code, answer.text) == (200, hello)
        lines = stream_across_sigterm(child, url + "/stream")
        # Without the app's early end, the stream would hold the drain for its
        # whole 20 s and be cancelled: exit code 1.
        assert child.finish() == 0, child.output
    assert lines[0] == "tick 1"
    assert lines[-1] == "bye", lines
    assert all(line.startswith("tick ") for line in lines[:-1]), lines


def test_a_request_cut_at_the_deadline_exits_1() -> None:
    with serve(
        "plain_app:app", "--bind", "127.0.0.1:0", "--drain-timeout", "0.2"
    ) as child:
        url = url_of(child)
        with (
            httpx.Client(timeout=TIMEOUT) as http,
            http.stream("GET", url + "/hang") as response,
        ):
            lines = response.iter_lines()
            assert next(lines) == "hanging"
            child.send(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):  # cut: no final chunk
                list(lines)
        assert child.finish() == 1, child.output


def test_a_blocked_event_loop_ends_in_a_hard_exit_128_plus_sigterm() -> None:
    with serve(
        "plain_app:app",
        "--bind",
        "127.0.0.1:0",
        "--drain-timeout",
        "0.2",
        "--cancel-timeout",
        "0.2",
    ) as child:
        url = url_of(child)
        with (
            httpx.Client(timeout=TIMEOUT) as http,
            http.stream("GET", url + "/block") as response,
        ):
            assert next(response.iter_lines()) == "blocking"
            child.send(signal.SIGTERM)
            assert child.finish() == 128 + signal.SIGTERM, child.output


def test_the_factory_is_called_and_a_plan_that_does_not_fit_is_one_warning() -> None:
    with serve(
        "plain_app:make_app",
        "--factory",
        "--bind",
        "127.0.0.1:0",
        "--drain-timeout",
        "5",
        "--grace-period",
        "1",
    ) as child:
        url = url_of(child)
        assert get(url + "/hello").text == "hello plain\n"
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    child.assert_in_order("factory: called", "lifespan: startup", "listening on")
    (warning,) = [line for line in child.lines if "ShutdownPlanWarning" in line]
    assert warning.startswith("shutdown-scope serve: ShutdownPlanWarning: ")
    assert "grace_period is 1 s" in warning


# -- addresses ---------------------------------------------------------------------

# Binds fd 5 to a fresh listening socket (as a launcher would) and execs the rest.
WITH_FD_5 = (
    "import os, socket, sys\n"
    "sock = socket.create_server(('127.0.0.1', 0))\n"
    "os.dup2(sock.fileno(), 5)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_hypercorn_serves_every_form_of_bind_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    binds = ["127.0.0.1:0", f"unix:{path}", "fd://5"]
    if ipv6_loopback():
        binds.append("[::1]:0")
    argv = [arg for bind in binds for arg in ("--bind", bind)]
    with Child("-c", WITH_FD_5, *SERVE, "plain_app:app", *argv) as child:
        urls = [url_of(child) for _ in binds]
        assert urls[1] == f"http://unix:{path}"
        tcp = [url for url in urls if url != urls[1]]
        assert len({*tcp}) == len(tcp) == len(binds) - 1
        for url in tcp:
            assert get(url + "/hello").text == "hello plain\n", url
        by_unix = get("http://app/hello", transport=httpx.HTTPTransport(uds=path))
        assert by_unix.text == "hello plain\n"
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output


@pytest.mark.parametrize("form", ["unix", "fd", "ipv6"])
@pytest.mark.parametrize("server", [UVICORN])
def test_uvicorn_serves_each_form_of_bind(
    tmp_path: Path, server: str, form: str
) -> None:
    path = str(tmp_path / "app.sock")
    if form == "ipv6" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    bind = {"unix": f"unix:{path}", "fd": "fd://5", "ipv6": "[::1]:0"}[form]
    argv = [*SERVE, "plain_app:app", "--server", server, "--bind", bind]
    with Child("-c", WITH_FD_5, *argv) as child:
        url = url_of(child)
        if form == "unix":
            answer = get("http://app/hello", transport=httpx.HTTPTransport(uds=path))
        else:
            answer = get(url + "/hello")
        assert answer.text == "hello plain\n"
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output


# -- under the launcher --------------------------------------------------------------

CLIENTS = 8
WARM_UP = 100
AFTER_RELOAD = 100
STALL = 10.0
COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")


async def wait_answers(stats: LoadStats, count: int) -> None:
    with anyio.move_on_after(STALL):
        while stats.answered < count:  # noqa: ASYNC110 -- polling our own counter
            await anyio.sleep(0.01)
        return
    msg = f"the clients stalled short of {count} answers: {stats.summary()}"
    raise AssertionError(msg)


def reload_under_load(child: Launcher, url: str) -> LoadStats:
    """SIGHUP the launcher under keep-alive load; return once generation 1 exited
    and generation 2 has answered more."""
    stats = LoadStats()
    going = [True]

    async def drive() -> None:
        async with anyio.create_task_group() as tg:
            load = functools.partial(
                run_load, url, clients=CLIENTS, stats=stats, while_=lambda: bool(going)
            )
            tg.start_soon(load)
            await wait_answers(stats, WARM_UP)
            child.send(signal.SIGHUP)
            line = await anyio.to_thread.run_sync(child.wait_for, ") exited: ")
            assert "generation 1 (pid" in line, child.output
            await wait_answers(stats, stats.answered + AFTER_RELOAD)
            going.clear()

    anyio.run(drive)
    return stats


@pytest.mark.parametrize("server", ["hypercorn", "hypercorn-trio", UVICORN])
def test_a_sighup_reload_under_the_launcher_fails_no_request(
    tmp_path: Path, server: str
) -> None:
    command = [
        *("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0", "--"),
        *(sys.executable, "-m", "shutdown_scope", "serve", "work_app:app"),
        *("--app-dir", str(EXAMPLES), *server_args(server)),
        # Ignored: the launcher's socket is served (this address cannot be bound).
        *("--bind", "192.0.2.1:8000"),
    ]
    with Launcher(*command) as child:
        line = child.wait_for("shutdown-scope: listening on 127.0.0.1:")
        port = re.search(r"127\.0\.0\.1:(\d+) ", line)
        assert port is not None, line
        child.wait_for(") ready")  # READY=1, from the scope, with no app code
        stats = reload_under_load(child, f"http://127.0.0.1:{port[1]}/work?ms=5")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    assert stats.lost == stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, stats.statuses
    assert "reload 1: done; generation 2 (pid" in child.output
    exits = re.findall(r"generation (\d) \(pid \d+\) exited: (.*)", child.output)
    assert exits == [("1", "exit code 0"), ("2", "exit code 0")], child.output
    # Each generation served the socket it was handed, and every request an app
    # read was answered and reached a client.
    counts = [(int(r), int(a)) for r, a in COUNTS.findall(child.output)]
    assert len(counts) == 2, child.output
    assert all(read == answered for read, answered in counts), counts
    assert sum(answered for _, answered in counts) == stats.answered, counts
    assert counts[1][1] >= AFTER_RELOAD - CLIENTS, counts
    assert child.output.count("--bind 192.0.2.1:8000 ignored") == 2, child.output


def test_uvicorn_refuses_more_than_one_handed_over_socket() -> None:
    command = [
        *("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0"),
        *("--listen", "127.0.0.1:0", "--"),
        *(sys.executable, *SERVE, "plain_app:app", "--server", "uvicorn"),
    ]
    with Launcher(*command) as child:
        assert child.finish() == 2, child.output
    assert "--server uvicorn serves one address, not 2 (fd://3, fd://4)" in child.output


# -- bad input -----------------------------------------------------------------------

ERROR = "shutdown-scope serve: error: "
BAD_INPUT = [
    # The command line names what is not there, or not an ASGI app: exit 2.
    (["nomodule:app"], 2, "cannot import 'nomodule': no module named 'nomodule'"),
    (["nopackage.sub:app"], 2, "no module named 'nopackage'"),
    (["plain_app:missing"], 2, "'plain_app' has no attribute 'missing'"),
    (["plain_app:App.missing"], 2, "'plain_app.App' has no attribute 'missing'"),
    (["plain_app:NOT_AN_APP"], 2, "'plain_app:NOT_AN_APP' is a str, not an ASGI"),
    (["plain_app:App"], 2, "is a class: name an instance of it (app = App())"),
    (["plain_app:wsgi_app"], 2, "looks like a WSGI application"),
    (
        ["plain_app:make_app"],
        2,
        "takes no arguments: if it returns the app, add --factory",
    ),
    (["--factory", "plain_app:app"], 2, "cannot be called with no arguments"),
    (["--factory", "plain_app:NOT_AN_APP"], 2, "is a str, not a function"),
    (["--factory", "plain_app:async_factory"], 2, "returned an awaitable"),
    (["--app-dir", "/nonexistent", "plain_app:app"], 2, "not a directory"),
    (["--bind", "fd://99", "plain_app:app"], 2, "fd 99 is not open"),
    (["--bind", "fd://0", "plain_app:app"], 2, "fd 0 is not a socket"),
    (["--grace-period", "0", "plain_app:app"], 2, "grace_period must be > 0"),
    (
        ["--server", "uvicorn", "--backend", "trio", "plain_app:app"],
        2,
        "--server uvicorn runs on asyncio only",
    ),
    (
        [
            "--server",
            "uvicorn",
            "--bind",
            "127.0.0.1:0",
            "--bind",
            "unix:/x",
            "plain_app:app",
        ],
        2,
        "--server uvicorn serves one address, not 2",
    ),
    # The user's code raised, or the server could not start: exit 1.
    (["broken_app:app"], 1, "importing 'broken_app' raised KeyError: 'DATABASE_URL' ("),
    (
        ["missing_dependency_app:app"],
        1,
        "raised ModuleNotFoundError: No module named 'not_installed_package_for_tests'",
    ),
    (["--factory", "plain_app:failing_factory"], 1, "raised RuntimeError: no database"),
    (
        ["--bind", "192.0.2.1:8000", "plain_app:app"],
        1,
        "cannot start the server: hypercorn cannot listen on 192.0.2.1:8000",
    ),
    (
        ["--bind", "127.0.0.1:0", "plain_app:failing_startup"],
        1,
        "cannot start the server: LifespanFailureError: Lifespan failure in startup",
    ),
]
# Rejected by argparse: its usage line, then one error line; exit 2.
BAD_ARGUMENTS = [
    (["plain_app"], "expected MODULE:ATTRIBUTE"),
    (["plain_app:"], "expected MODULE:ATTRIBUTE"),
    (["tests/serve_apps/plain_app.py:app"], "name the module, not its file"),
    (["--bind", "localhost", "plain_app:app"], "is not an address"),
    (["--bind", "127.0.0.1:http", "plain_app:app"], "is not an address"),
    (["--bind", "127.0.0.1:65536", "plain_app:app"], "is not an address"),
    (["--bind", ":8000", "plain_app:app"], "is not an address"),
    (["--bind", "::1:8000", "plain_app:app"], "write an IPv6 host in brackets"),
    (["--bind", "unix:", "plain_app:app"], "a unix socket needs a path"),
    (["--bind", "fd://three", "plain_app:app"], "fd://N takes a file descriptor"),
    (["--drain-timeout", "-1", "plain_app:app"], "seconds must be >= 0"),
    (["--announce-delay", "soon", "plain_app:app"], "is not a number of seconds"),
    (["--readiness-path", "readyz", "plain_app:app"], "a path starts with /"),
    (["--server", "gunicorn", "plain_app:app"], "invalid choice: 'gunicorn'"),
]


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *SERVE, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_an_exit_code(
    args: list[str], code: int, message: str
) -> None:
    result = run_serve(*args)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # no traceback, no report
    assert line.startswith(ERROR), line
    assert message in line, line


@pytest.mark.parametrize("server", ["hypercorn", "hypercorn-trio", UVICORN])
def test_a_failed_lifespan_shutdown_is_not_a_clean_stop(server: str) -> None:
    # The app says its cleanup failed: the stop is not clean, on every server.
    with serve("plain_app:failing_shutdown", *server_args(server)) as child:
        url_of(child)
        child.send(signal.SIGTERM)
        code = child.finish()
    assert code == 1, child.output
    child.assert_in_order("lifespan: shutdown", "shutdown NOT clean (exit code 1)")


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_serve("--bind", f"127.0.0.1:{port}", "plain_app:app")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line == (
        f"{ERROR}cannot start the server: hypercorn cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    )


# Puts a socket at fd 3, sets LISTEN_FDS=argv[1] for its own pid (kept by exec)
# and execs the rest: a launcher that hands over something wrong.
HAND_OVER = (
    "import os, socket, sys\n"
    "kind = socket.SOCK_DGRAM if sys.argv[2] == 'udp' else socket.SOCK_STREAM\n"
    "sock = socket.socket(socket.AF_INET, kind)\n"
    "os.dup2(sock.fileno(), 3)\n"
    "os.set_inheritable(3, True)  # in case sock was fd 3 itself\n"
    "os.environ.update(LISTEN_FDS=sys.argv[1], LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n"
)


@pytest.mark.parametrize(
    ("count", "kind", "message"),
    [
        ("1", "udp", "LISTEN_FDS: fd 3 is not a stream (TCP or unix) socket"),
        ("2", "tcp", "LISTEN_FDS: fd 4 (unknown) is not open: Bad file descriptor"),
        ("three", "tcp", "LISTEN_FDS must be a decimal integer >= 0, not 'three'"),
    ],
)
def test_a_bad_handover_is_one_line_and_exit_1(
    count: str, kind: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HAND_OVER, count, kind, *SERVE, "plain_app:app"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line == ERROR + message


def test_the_app_is_imported_from_the_working_directory_by_default() -> None:
    # As the `shutdown-scope` script runs: the working directory is not on
    # sys.path (python -m would put it there).
    script = (
        "import sys; del sys.path[0]\n"
        "from shutdown_scope._launcher import main\n"
        "raise SystemExit(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "serve", "plain_app:NOT_AN_APP"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=APPS,
    )
    # Imported (so the object was found), then refused: not an ASGI app.
    assert result.returncode == 2, result.stderr
    assert "'plain_app:NOT_AN_APP' is a str, not an ASGI" in result.stderr


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_a_malformed_argument_is_an_argparse_error(
    args: list[str], message: str
) -> None:
    result = run_serve(*args)
    assert result.returncode == 2, result.stderr
    usage, error = result.stderr.splitlines()
    assert usage.startswith("usage: shutdown-scope serve")
    assert error.startswith("shutdown-scope serve: error: argument "), error
    assert message in error, error


def test_the_traceback_of_a_broken_module_is_shown_at_debug_level() -> None:
    result = run_serve("--log-level", "debug", "broken_app:app")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'DATABASE_URL = SETTINGS["DATABASE_URL"]' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(ERROR)


# -- the launcher imports no event loop for it ---------------------------------------


def imported_modules(*argv: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shutdown_scope", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_the_serve_parser_adds_no_import_to_the_launcher() -> None:
    baseline = imported_modules("reload", "--help")
    for argv in (("serve", "--help"), ("run", "--help")):
        added = imported_modules(*argv) - baseline
        heavy = {
            name
            for name in added
            if name.split(".")[0]
            in {"anyio", "asyncio", "trio", "hypercorn", "uvicorn"}
            or name.startswith("shutdown_scope._serve_")
        }
        assert not heavy, (argv, sorted(heavy))
    assert "shutdown_scope._serve_args" in baseline
    assert "shutdown_scope._serve_command" not in baseline


def test_serve_loads_none_of_the_launchers_modules() -> None:
    # The app server starts as fast as it can (and as fast under the launcher):
    # the supervisor, control socket, pid file... are the launcher's alone.
    loaded = imported_modules("serve", "--help")
    assert "shutdown_scope._serve_args" in loaded
    launcher = sorted(x for x in loaded if x.startswith("shutdown_scope._launcher."))
    assert launcher == [], launcher
