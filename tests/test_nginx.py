"""nginx in front of the launcher: ``examples/deploy/nginx.conf``, under load.

The example file is included into a throwaway nginx (unprivileged port,
foreground, every path in ``tmp_path``) with its two addresses, ``listen 80``
and the upstream ``server 127.0.0.1:8000``, replaced by free ports; everything
else (upstream keep-alive, ``proxy_next_upstream``) is the file as users copy
it. Upstream: ``shutdown-scope run --listen 127.0.0.1:0 --log-format json --
python -m shutdown_scope serve work_app:app``. Keep-alive clients load nginx
(``examples/http_load.py``) while the launcher reloads (SIGHUP, twice) or stops
(SIGTERM); every request through nginx must be answered 200 (an nginx 502 or
504 is a request lost at the server), and the app's own count of answered
requests must match the clients'.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from _launcher_events import EventLauncher, launcher_command
from _spawn import TIMEOUT

from shutdown_scope.testing.http_load import LoadStats, get_status, run_load

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
CONFIG = EXAMPLES / "deploy" / "nginx.conf"


def find_nginx() -> str | None:
    """On PATH, or in /usr/sbin (root's PATH has it, others' may not)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


NGINX = find_nginx()
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        NGINX is None,
        reason="no nginx program: install Debian's nginx package"
        " (apt-get install nginx; .ci/run does as root)",
    ),
]

CLIENTS = 8
WARM_UP = 60
AFTER_RELOAD = 60
STALL = 10.0
LISTEN = "listen 80;"
UPSTREAM = "server 127.0.0.1:8000;"
COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")


def example_config(listen_port: int, upstream_port: int) -> str:
    """``examples/deploy/nginx.conf`` with its two addresses replaced."""
    text = CONFIG.read_text()
    # Exactly one of each: a second server or listener would go untested.
    assert text.count(LISTEN) == 1, f"one {LISTEN!r} expected in {CONFIG}"
    assert text.count(UPSTREAM) == 1, f"one {UPSTREAM!r} expected in {CONFIG}"
    assert len(re.findall(r"^\s*(?:listen|server)\s+[^\s{]", text, re.MULTILINE)) == 2
    text = text.replace(LISTEN, f"listen 127.0.0.1:{listen_port};")
    return text.replace(UPSTREAM, f"server 127.0.0.1:{upstream_port};")


def main_config(tmp: Path, site: Path) -> Path:
    """A whole nginx.conf around ``site``, every path in ``tmp``."""
    temp = {
        name: tmp / name
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    temps = "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
    conf = tmp / "nginx.conf"
    conf.write_text(
        "worker_processes 1;\n"
        # Run as root in CI: workers would run as nobody, which cannot enter tmp.
        + ("user root;\n" if os.geteuid() == 0 else "")
        + f"error_log {tmp / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {tmp / 'access.log'};\n"
        f"{temps}"
        f"    include {site};\n"
        "}\n"
    )
    return conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def nginx_argv(tmp: Path, conf: Path, *extra: str) -> list[str]:
    assert NGINX is not None
    return [
        NGINX,
        *("-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)),
        *("-g", f"daemon off; pid {tmp / 'nginx.pid'};", *extra),
    ]


@contextlib.contextmanager
def nginx_in_front(tmp: Path, upstream_port: int) -> Iterator[str]:
    """An nginx with the example config in front of ``upstream_port``; its URL."""
    port = free_port()
    site = tmp / "site.conf"
    site.write_text(example_config(port, upstream_port))
    conf = main_config(tmp, site)
    proc = subprocess.Popen(
        nginx_argv(tmp, conf),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, (tmp / "error.log").read_text()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_under_launcher() -> EventLauncher:
    # The server's own stderr lines are not JSON: onto stdout with them.
    command = [
        *("/bin/sh", "-c", 'exec "$@" 2>&1', "sh"),
        *(sys.executable, "-m", "shutdown_scope", "serve", "work_app:app"),
        *("--app-dir", str(EXAMPLES)),
    ]
    # --debounce 0: the second SIGHUP may come within 0.2 s of the first, and
    # would count as the same one (a debounced reload is not this test's topic).
    options = ("--listen", "127.0.0.1:0", "--debounce", "0")
    return EventLauncher(*launcher_command(*options, command=command))


def upstream_port(child: EventLauncher) -> int:
    address = child.wait_event("listening")["address"]
    found = re.fullmatch(r"127\.0\.0\.1:(\d+)", address)
    assert found is not None, address
    child.wait_event("generation_ready")
    return int(found[1])


async def wait_answers(stats: LoadStats, count: int) -> None:
    with anyio.move_on_after(STALL):
        while stats.answered < count:  # noqa: ASYNC110 -- polling our own counter
            await anyio.sleep(0.01)
        return
    msg = f"the clients stalled short of {count} answers: {stats.summary()}"
    raise AssertionError(msg)


def app_counts(child: EventLauncher) -> list[tuple[int, int]]:
    return [(int(r), int(a)) for r, a in COUNTS.findall(child.output)]


def test_the_nginx_example_is_a_valid_configuration(tmp_path: Path) -> None:
    site = tmp_path / "site.conf"
    site.write_text(example_config(free_port(), free_port()))
    conf = main_config(tmp_path, site)
    checked = subprocess.run(
        nginx_argv(tmp_path, conf, "-t"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = CONFIG.read_text()
    # What upstream keep-alive needs, and the retry of a request sent on an
    # upstream connection the server closed idle (see the file's comments).
    for setting in (
        "keepalive 16;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_next_upstream error timeout;",
    ):
        assert setting in text, setting


def test_two_reloads_under_load_through_nginx_fail_no_request(tmp_path: Path) -> None:
    with serve_under_launcher() as child:
        port = upstream_port(child)
        with nginx_in_front(tmp_path, port) as front:
            stats = LoadStats()
            going = [True]

            async def drive() -> None:
                load = functools.partial(
                    run_load,
                    f"{front}/work?ms=5",
                    clients=CLIENTS,
                    stats=stats,
                    while_=lambda: bool(going),
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load)
                    await wait_answers(stats, WARM_UP)
                    for reload in (1, 2):
                        child.send(signal.SIGHUP)
                        await anyio.to_thread.run_sync(
                            functools.partial(
                                child.wait_event, "reload_succeeded", reload=reload
                            )
                        )
                        await wait_answers(stats, stats.answered + AFTER_RELOAD)
                    going.clear()

            anyio.run(drive)
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.transcript()
    assert stats.lost == stats.refused == 0, stats.summary()
    # 502/504 would be nginx's answer for a request the server dropped.
    assert set(stats.statuses) == {200}, (stats.statuses, child.transcript())
    exits = [(e["generation"], e["exit_code"]) for e in child.named("child_exited")]
    assert exits == [(1, 0), (2, 0), (3, 0)], child.transcript()
    counts = app_counts(child)
    assert len(counts) == 3, child.output
    assert all(read == answered for read, answered in counts), counts
    assert sum(answered for _, answered in counts) == stats.answered, counts


def test_sigterm_under_load_through_nginx_answers_what_is_in_flight(
    tmp_path: Path,
) -> None:
    slow: list[int] = []
    with serve_under_launcher() as child:
        port = upstream_port(child)
        with nginx_in_front(tmp_path, port) as front:
            stats = LoadStats()
            going = [True]

            async def slow_request() -> None:
                slow.append(await get_status(f"{front}/work?ms=1500"))

            async def drive() -> None:
                load = functools.partial(
                    run_load,
                    f"{front}/work?ms=5",
                    clients=CLIENTS,
                    stats=stats,
                    while_=lambda: bool(going),
                )
                async with anyio.create_task_group() as tg:
                    for _ in range(4):
                        tg.start_soon(slow_request)
                    tg.start_soon(load)
                    await wait_answers(stats, WARM_UP)
                    # No request is begun from here on; those sent already,
                    # slow and quick, are in flight through nginx.
                    going.clear()
                    child.send(signal.SIGTERM)

            anyio.run(drive)
            code = child.finish()
    assert code == 0, child.transcript()
    assert slow == [200] * 4, (slow, child.transcript())
    assert stats.lost == stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, (stats.statuses, child.transcript())
    [(read, answered)] = app_counts(child)
    assert read == answered == stats.answered + len(slow), (read, answered, stats)
