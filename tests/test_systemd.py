"""shutdown_scope.systemd: sd_notify over real sockets, socket activation in real
child processes, and against systemd's own ``systemd-socket-activate``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shutdown_scope import _sd_notify, systemd

TIMEOUT = 30.0


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _sd_notify.MANAGER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths end at 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="sd-", dir="/tmp") as name:
        yield Path(name)


@contextlib.contextmanager
def receiver(address: str) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(TIMEOUT)
        yield sock


# -- notify -----------------------------------------------------------------------


def test_notify_to_a_socket_path(
    clean_env: pytest.MonkeyPatch, short_dir: Path
) -> None:
    path = str(short_dir / "notify")
    with receiver(path) as sock:
        clean_env.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1") is True
        assert systemd.notify("STATUS=warming cache") is True
        assert sock.recv(4096) == b"READY=1"
        assert sock.recv(4096) == b"STATUS=warming cache"


def test_notify_to_an_abstract_name(clean_env: pytest.MonkeyPatch) -> None:
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    with receiver(f"\0{name}") as sock:
        clean_env.setenv("NOTIFY_SOCKET", f"@{name}")
        assert systemd.notify("READY=1\nSTATUS=serving on :8000\n") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving on :8000\n"


def test_send_reads_the_environment_it_is_given(clean_env: pytest.MonkeyPatch) -> None:
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    with receiver(f"\0{name}") as sock:
        assert _sd_notify.send("STATUS=ok", {"NOTIFY_SOCKET": f"@{name}"}) is True
        assert sock.recv(4096) == b"STATUS=ok"
        assert _sd_notify.send("STATUS=no", {}) is False


@pytest.mark.parametrize("value", [None, ""])
def test_notify_without_a_socket_does_nothing(
    clean_env: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        clean_env.setenv("NOTIFY_SOCKET", value)
    assert systemd.notify("READY=1") is False


def test_a_missing_socket_is_named_in_the_error(
    clean_env: pytest.MonkeyPatch, short_dir: Path
) -> None:
    path = str(short_dir / "gone")
    clean_env.setenv("NOTIFY_SOCKET", path)
    with pytest.raises(FileNotFoundError) as caught:
        systemd.notify("READY=1")
    assert caught.value.errno == errno.ENOENT
    assert f"cannot notify NOTIFY_SOCKET={path!r}: No such file" in str(caught.value)


def test_a_socket_nobody_reads_is_named_in_the_error(
    clean_env: pytest.MonkeyPatch, short_dir: Path
) -> None:
    path = str(short_dir / "closed")
    with receiver(path):
        pass  # the file stays, nobody listens
    clean_env.setenv("NOTIFY_SOCKET", path)
    with pytest.raises(ConnectionRefusedError, match=f"NOTIFY_SOCKET={path!r}"):
        systemd.notify("READY=1")


def test_a_failed_send_is_named_in_the_error(clean_env: pytest.MonkeyPatch) -> None:
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    with receiver(f"\0{name}") as sock:
        sock.shutdown(socket.SHUT_RD)  # connect works, send fails
        clean_env.setenv("NOTIFY_SOCKET", f"@{name}")
        with pytest.raises(BrokenPipeError, match=f"NOTIFY_SOCKET='@{name}'"):
            systemd.notify("READY=1")


def test_an_address_too_long_is_named_in_the_error(
    clean_env: pytest.MonkeyPatch,
) -> None:
    path = "/" + "x" * 200
    clean_env.setenv("NOTIFY_SOCKET", path)
    with pytest.raises(
        OSError, match=f"cannot notify NOTIFY_SOCKET={path!r}"
    ) as caught:
        systemd.notify("READY=1")
    assert caught.value.errno is None


@pytest.mark.parametrize("value", ["run/notify", "vsock:2:1234", "@", "notify"])
def test_an_unknown_address_is_refused(
    clean_env: pytest.MonkeyPatch, value: str
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", value)
    with pytest.raises(
        ValueError, match="NOTIFY_SOCKET must be an absolute path"
    ) as caught:
        systemd.notify("READY=1")
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    "state",
    [
        "",
        "\n",
        "READY",
        "ready=1",
        "=1",
        "READY=1\n\nSTATUS=x",
        "STATUS=a\0b",
        "STATUS=" + "x" * 5000,
    ],
)
def test_a_malformed_state_is_refused(
    clean_env: pytest.MonkeyPatch, state: str
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", "@unused")
    with pytest.raises(ValueError, match="state must be"):
        systemd.notify(state)


def test_a_state_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="state must be a str"):
        systemd.notify(b"READY=1")  # type: ignore[arg-type]


# -- listen_fds: the environment alone ------------------------------------------


def test_no_listen_fds_without_the_variables(clean_env: pytest.MonkeyPatch) -> None:
    assert systemd.listen_fds() == []
    clean_env.setenv("LISTEN_FDS", "1")  # but no LISTEN_PID
    assert systemd.listen_fds_with_names() == []
    assert "LISTEN_FDS" not in os.environ


PID = "{pid}"  # this process's


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LISTEN_FDS": "two", "LISTEN_PID": PID}, "LISTEN_FDS must be a decimal"),
        ({"LISTEN_FDS": "-1", "LISTEN_PID": PID}, "integer >= 0, not '-1'"),
        ({"LISTEN_FDS": "", "LISTEN_PID": PID}, "LISTEN_FDS must be a decimal"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "me"}, "LISTEN_PID must be a decimal"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "0"}, "integer >= 1, not '0'"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "9" * 30}, "LISTEN_PID must be"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "\u0661"}, "LISTEN_PID must be"),
        (
            {"LISTEN_FDS": "2", "LISTEN_PID": PID, "LISTEN_FDNAMES": "web"},
            "LISTEN_FDNAMES must hold 2 non-empty name(s)",
        ),
        (
            {"LISTEN_FDS": "2", "LISTEN_PID": PID, "LISTEN_FDNAMES": "web:"},
            "separated by ':'; not 'web:'",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_PID": PID, "LISTEN_FDNAMES": ""},
            "LISTEN_FDNAMES must hold 1 non-empty name(s)",
        ),
    ],
)
def test_malformed_variables_are_refused_and_still_unset(
    clean_env: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        clean_env.setenv(name, value.replace(PID, str(os.getpid())))
    with pytest.raises(ValueError, match=re.escape(message)):
        systemd.listen_fds()
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(os.environ)


def test_fds_for_another_process_are_not_ours(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LISTEN_FDS", "not even read")
    clean_env.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert systemd.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "not even read"  # kept, as asked
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ


def test_zero_fds(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LISTEN_FDS", "0")
    clean_env.setenv("LISTEN_PID", str(os.getpid()))
    assert systemd.listen_fds_with_names() == []


def test_unset_environment_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="unset_environment must be True or False"):
        systemd.listen_fds(unset_environment=0)  # type: ignore[arg-type]


# -- listen_fds: fds passed to a real child process -------------------------------

# Places the fds it was given at 3, 4, ... (as systemd does), sets the
# variables ("{pid}" is its own pid), calls listen_fds_with_names(), prints what
# it saw as JSON, then answers one connection on each socket with its name.
CHILD = """
import fcntl, json, os, socket, sys

spec = json.loads(sys.argv[1])
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in spec["fds"]]
for fd in spec["fds"]:
    os.close(fd)
for target, fd in enumerate(moved, start=3):
    os.dup2(fd, target)  # inheritable, as after systemd's exec
    os.close(fd)
for name, value in spec["env"].items():
    os.environ[name] = value.replace("{pid}", str(os.getpid()))

from shutdown_scope import systemd

seen = {}
try:
    passed = systemd.listen_fds_with_names(unset_environment=spec["unset"])
except (OSError, ValueError) as exc:
    passed = []
    seen["error"] = [type(exc).__name__, str(exc), exc.args[0]]
seen["passed"] = passed
seen["inheritable"] = [os.get_inheritable(fd) for fd, _ in passed]
seen["env"] = {
    k: os.environ.get(k) for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
}
print(json.dumps(seen), flush=True)
for fd, name in passed:
    with socket.socket(fileno=fd) as listener:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(f"{name} on fd {fd}\\n".encode())
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _sd_notify.MANAGER_VARIABLES}
    return {**env, **extra}


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def ask(address: tuple[str, int]) -> str:
    with socket.create_connection(address, timeout=TIMEOUT) as client:
        return client.makefile().readline().strip()


def run_child(
    fds: list[int], env: dict[str, str], *, unset: bool = True
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    spec = json.dumps({"fds": fds, "env": env, "unset": unset})
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, spec],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the child printed nothing (exit code {proc.wait(TIMEOUT)})"
    return proc, json.loads(line)


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.wait(TIMEOUT) == 0
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("names", "expected"),
    [("web:admin", ["web", "admin"]), (None, ["unknown", "unknown"])],
)
def test_a_child_gets_its_sockets_with_names(
    names: str | None, expected: list[str]
) -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "{pid}"}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    with listener() as web, listener() as admin:
        proc, seen = run_child([web.fileno(), admin.fileno()], env)
        addresses = [web.getsockname(), admin.getsockname()]
    assert seen == {
        "passed": [[3, expected[0]], [4, expected[1]]],
        "inheritable": [False, False],  # FD_CLOEXEC set
        "env": {"LISTEN_FDS": None, "LISTEN_PID": None, "LISTEN_FDNAMES": None},
    }
    # The child serves them: the sockets are the ones we bound.
    assert [ask(a) for a in addresses] == [
        f"{expected[0]} on fd 3",
        f"{expected[1]} on fd 4",
    ]
    finish(proc)


@pytest.mark.subprocess
def test_a_child_keeps_the_variables_if_asked() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "{pid}", "LISTEN_FDNAMES": "web"}
    with listener() as web:
        proc, seen = run_child([web.fileno()], env, unset=False)
        address = web.getsockname()
    assert seen["passed"] == [[3, "web"]]
    assert seen["env"]["LISTEN_FDS"] == "1"
    assert seen["env"]["LISTEN_FDNAMES"] == "web"
    assert seen["env"]["LISTEN_PID"] == str(proc.pid)
    assert ask(address) == "web on fd 3"
    finish(proc)


@pytest.mark.subprocess
def test_a_child_ignores_fds_for_another_process() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    with listener() as web:
        proc, seen = run_child([web.fileno()], env)
    assert seen["passed"] == []
    assert seen["env"] == {
        "LISTEN_FDS": None,
        "LISTEN_PID": None,
        "LISTEN_FDNAMES": None,
    }
    finish(proc)


@pytest.mark.subprocess
def test_a_passed_fd_that_is_not_a_socket_is_refused() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "{pid}", "LISTEN_FDNAMES": "web:log"}
    read_end, write_end = os.pipe()
    try:
        with listener() as web:
            proc, seen = run_child([web.fileno(), read_end], env)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert seen["error"][:2] == ["ValueError", "LISTEN_FDS: fd 4 (log) is not a socket"]
    assert seen["env"] == {
        "LISTEN_FDS": None,
        "LISTEN_PID": None,
        "LISTEN_FDNAMES": None,
    }
    finish(proc)


@pytest.mark.subprocess
def test_a_passed_fd_that_is_not_open_is_refused() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "{pid}"}
    with listener() as web:
        proc, seen = run_child([web.fileno()], env)  # one fd for two
    kind, message, code = seen["error"]
    assert kind == "OSError"
    assert code == errno.EBADF
    assert message.endswith(
        "LISTEN_FDS: fd 4 (unknown) is not open: Bad file descriptor"
    )
    finish(proc)


# -- against systemd's own socket activation --------------------------------------

ACTIVATED = """
import functools, socket, anyio
from shutdown_scope import graceful_scope, systemd
from shutdown_scope.tcp import serve_tcp

passed = systemd.listen_fds_with_names()
sockets = [socket.socket(fileno=fd) for fd, _ in passed]

async def main():
    async with graceful_scope() as scope:
        async def handle(stream, token):
            fd, name = passed[0]
            await stream.send(f"{name} on fd {fd}\\n".encode())
            scope.request_shutdown("served one")

        await scope.start(functools.partial(serve_tcp, sockets=sockets), handle)
    print(scope.report, flush=True)

anyio.run(main)
"""


PYTHON_ACTIVATED = (sys.executable, "-c", ACTIVATED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def socket_activate(tool: str) -> tuple[subprocess.Popen[str], int]:
    """``systemd-socket-activate`` on a free port, once it listens."""
    for _ in range(2):  # the port may be taken between our check and its bind
        port = free_port()
        proc = subprocess.Popen(
            [tool, "-l", f"127.0.0.1:{port}", "--fdname=web", *PYTHON_ACTIVATED],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if line.startswith("Listening on"):
            return proc, port
        rest = proc.communicate(timeout=TIMEOUT)[1]
        if "in use" not in line + rest:
            pytest.fail(f"systemd-socket-activate failed:\n{line}{rest}")
    pytest.fail("no free port for systemd-socket-activate")


@pytest.mark.subprocess
@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate (Debian package systemd) is not installed",
)
def test_systemd_socket_activate_hands_us_its_socket() -> None:
    tool = shutil.which("systemd-socket-activate")
    assert tool is not None
    proc, port = socket_activate(tool)
    try:
        # Our connection makes it exec the program with the socket as fd 3.
        assert ask(("127.0.0.1", port)) == "web on fd 3"
        output, errors = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, errors
    assert "Execing" in errors  # systemd-socket-activate started us
    assert output.startswith("shutdown clean (exit code 0)"), output
