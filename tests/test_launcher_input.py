"""The launcher's inputs, bad and odd: options, addresses, inherited sockets, limits.

Each bad input is a one-line error (exit code 2 for an option, 1 for the rest),
never a traceback; each odd but valid one works, with real processes and sockets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest
from _spawn import Launcher
from test_launcher import LAUNCHED, launcher

from shutdown_scope import systemd
from shutdown_scope._launcher import main

pytestmark = pytest.mark.subprocess


# -- option values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--backlog", str(2**40)], f"'{2**40}' is not a backlog: a whole number"),
        (["--backlog", "-1"], "'-1' is not a backlog"),
        (["--backlog", "+5"], "'+5' is not a backlog"),
        (["--backlog", " 5"], "' 5' is not a backlog"),
        (["--backlog", "\u0663"], "'\u0663' is not a backlog"),
        (["--backlog", "1_0"], "'1_0' is not a backlog"),
        (["--rewrite", "KILL:TERM"], "SIGKILL cannot be caught by the launcher"),
        (["--rewrite", "STOP:TERM"], "SIGSTOP cannot be caught by the launcher"),
        (["--rewrite", "9:TERM"], "SIGKILL cannot be caught by the launcher"),
        (["--rewrite", "PIPE:TERM"], "SIGPIPE is not handled by the launcher"),
        (["--rewrite", "CHLD:TERM"], "SIGCHLD is not handled by the launcher"),
        (["--rewrite", "TERM:STOP"], "SIGSTOP would freeze the child"),
        (["--rewrite", "\u0663:TERM"], "is not a signal name"),
        (["--rewrite", "TERM:" + "1" * 5000], "is not a signal name"),
        (
            ["--rewrite", "TERM:INT", "--rewrite", "SIGTERM:QUIT"],
            "--rewrite: SIGTERM is rewritten twice",
        ),
        (["--grace-period", "nan"], "'nan' is not a number of seconds"),
        (["--grace-period", " 5"], "' 5' is not a number of seconds"),
        (["--grace-period", "1_0"], "'1_0' is not a number of seconds"),
        (["--grace-period", "\u0663"], "is not a number of seconds"),
        (["--grace-period", "1e999"], "at most 1000000000 seconds; inf for never"),
        (["--grace-period", "2e9"], "at most 1000000000 seconds"),
        (["--ready-timeout", "0"], "'0': must be more than 0 seconds"),
        (["--debounce", "inf"], "'inf' is not a number of seconds (such as 5 or 0.5)"),
        (["--debounce", "-0.1"], "'-0.1' is not a number of seconds"),
        # (these seven were test_launcher.py's test_bad_options_are_usage_errors)
        (["--rewrite", "TERM"], "expected FROM:TO"),
        (["--rewrite", "TERM:BOGUS"], "'BOGUS' is not a signal name"),
        (["--rewrite", "0:TERM"], "the signal to rewrite cannot be 0"),
        (["--rewrite", "99:TERM"], "'99' is not a signal name"),
        (["--grace-period", "-1"], "'-1' is not a number of seconds"),
        (["--ready-timeout", "soon"], "'soon' is not a number of seconds"),
        (["--debounce", "nan"], "'nan' is not a number of seconds"),
    ],
)
def test_bad_option_values_are_usage_errors(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", *arguments, "--", "true"])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["inf", "0", "2e9", "-1"])
def test_a_reload_timeout_must_be_finite_and_positive(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reload", "--control", "/nonexistent", "--timeout", timeout])
    assert exited.value.code == 2
    assert f"--timeout: {timeout!r}" in capsys.readouterr().err


def test_edge_values_that_are_valid_work() -> None:
    """The largest backlog; numbers of seconds written with a point at either end."""
    options = ("--backlog", str(2**31 - 1), "--grace-period", "30.", "--debounce", ".5")
    with launcher("--listen", "127.0.0.1:0", *options) as child:
        child.wait_for(") ready")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "Traceback" not in child.output


def test_deadlines_beyond_what_a_wait_can_take_work() -> None:
    """A wait takes at most 24.8 days (epoll): farther deadlines come in steps."""
    options = ("--grace-period", "3000000", "--ready-timeout", "3000000")
    with launcher(*options, behaviour="serve,hang") as child:
        child.wait_for(") ready")
        child.send(signal.SIGHUP)
        child.wait_for("gen 2 pid")  # a successor not ready: its deadline is set
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "Traceback" not in child.output
    assert "gen 2 got SIGTERM" in child.output


# -- --listen addresses --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("h:\u0663", "expected HOST:PORT"),
        ("h:+80", "expected HOST:PORT"),
        ("h: 80", "expected HOST:PORT"),
        ("h:", "expected HOST:PORT"),
        ("h:" + "9" * 5000, "expected HOST:PORT"),
        ("h:65536", "a port is 0 to 65535"),
        (":8000", "name the host: 0.0.0.0:8000 or [::]:8000"),
        ("[]:8000", "name the host"),
        ("unix:@", "an abstract socket needs a name"),
    ],
)
def test_a_malformed_listen_address_is_a_one_line_error(
    address: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--listen", address, "--", "true"]) == 1
    err = capsys.readouterr().err
    assert f"--listen {address!r}: " in err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_an_abstract_unix_socket_is_handed_over_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    command = ("-m", "shutdown_scope", "run", "--listen", f"unix:@{name}", "--")
    # Started in tmp_path: a relative file "@name" would appear there.
    program = (
        "import os, sys; os.chdir(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"
    )
    launched = (sys.executable, LAUNCHED, "serve")
    with Launcher(
        "-c", program, str(tmp_path), sys.executable, *command, *launched
    ) as child:
        child.wait_for(f"listening on unix:@{name} (fd 3 in the child)")
        pid = child.wait_for("gen 1 pid").split()[3]
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect("\0" + name)
            assert conn.makefile().readline().strip() == f"gen 1 pid {pid}"
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert list(tmp_path.iterdir()) == []


# -- a successor's unix socket ---------------------------------------------------


@pytest.mark.parametrize("takeover", ["unlink", "rename"])
def test_a_stopping_launcher_leaves_a_successors_unix_socket(
    tmp_path: Path, takeover: str
) -> None:
    """The first launcher drains while a second one serves at the same path."""
    path = tmp_path / "app.sock"
    staged = tmp_path / "app.sock.new"
    with launcher("--listen", f"unix:{path}") as first:
        first.wait_for(") ready")
        if takeover == "unlink":
            path.unlink()  # a deploy script clears the way for the successor
        bound = path if takeover == "unlink" else staged
        with launcher("--listen", f"unix:{bound}") as second:
            pid = second.wait_for("gen 1 pid").split()[3]
            second.wait_for(") ready")
            if takeover == "rename":
                staged.rename(path)  # atomically over the first one's file
            first.send(signal.SIGTERM)
            assert first.finish() == 0
            assert path.is_socket()
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(10)
                conn.connect(str(path))
                assert conn.makefile().readline().strip() == f"gen 1 pid {pid}"
            second.send(signal.SIGTERM)
            assert second.finish() == 0
    assert path.exists() == (takeover == "rename")  # the second's own file is gone
    assert not staged.exists()


# -- inherited sockets (LISTEN_FDS): one parser for the launcher and systemd.py ----

# Exec the launcher with the variables given (LISTEN_PID "self": its own pid) and
# fd 3 a listening socket, a file, or not open ("none").
INHERITING = """
import json, os, socket, sys
environment, fd3 = json.loads(sys.argv[1]), sys.argv[2]
if fd3 == "socket":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    os.dup2(sock.fileno(), 3)
elif fd3 == "file":
    os.dup2(os.open(os.devnull, os.O_RDONLY), 3)
if fd3 == "none":
    os.closerange(3, 4)
else:
    os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
os.environ.update(environment)
if os.environ.get("LISTEN_PID") == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "shutdown_scope", "run", "--",
         sys.executable, "-c", "pass"])
"""


def inheriting(environment: dict[str, str], fd3: str) -> Launcher:
    return Launcher("-c", INHERITING, json.dumps(environment), fd3)


SAME_ERRORS = [
    ({"LISTEN_FDS": str(10**11)}, "LISTEN_FDS must be a decimal integer <= 2147483644"),
    ({"LISTEN_FDS": str(10**20)}, "LISTEN_FDS must be a decimal integer <= 2147483644"),
    ({"LISTEN_FDS": "1" * 5000}, "LISTEN_FDS must be a decimal integer <= 2147483644"),
    ({"LISTEN_FDS": "\u0663"}, "LISTEN_FDS must be a decimal integer >= 0"),
    ({"LISTEN_FDS": "+1"}, "LISTEN_FDS must be a decimal integer >= 0, not '+1'"),
    ({"LISTEN_FDS": " 1"}, "LISTEN_FDS must be a decimal integer >= 0, not ' 1'"),
    ({"LISTEN_FDS": "1", "LISTEN_PID": "\u00b2"}, "LISTEN_PID must be a decimal"),
    ({"LISTEN_FDS": "1", "LISTEN_PID": "\u0661"}, "LISTEN_PID must be a decimal"),
    (
        {"LISTEN_FDS": "1", "LISTEN_FDNAMES": ""},
        "LISTEN_FDNAMES must hold 1 non-empty name(s)",
    ),
    (
        {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:"},
        "LISTEN_FDNAMES must hold 2 non-empty name(s)",
    ),
]


def _for_us(environment: dict[str, str], pid: str) -> dict[str, str]:
    return {"LISTEN_PID": pid, **environment}


@pytest.mark.parametrize(("environment", "message"), SAME_ERRORS)
def test_both_parsers_refuse_the_same_variables_alike(
    environment: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _for_us(environment, str(os.getpid())).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        systemd.listen_fds()
    with inheriting(_for_us(environment, "self"), "socket") as child:
        assert child.finish() == 1
    errors = [x for x in child.lines if x.startswith("shutdown-scope: ")]
    assert errors == [f"shutdown-scope: {caught.value}"]


@pytest.mark.parametrize(
    ("count", "fd3", "message"),
    [
        (str(10**9), "socket", "LISTEN_FDS: fd 4 (unknown) is not open"),
        ("1", "none", "LISTEN_FDS: fd 3 (unknown) is not open: Bad file descriptor"),
        ("1", "file", "LISTEN_FDS: fd 3 (unknown) is not a socket"),
    ],
)
def test_fds_that_are_not_open_sockets_are_one_line_errors(
    count: str, fd3: str, message: str
) -> None:
    environment = {"LISTEN_FDS": count, "LISTEN_PID": "self"}
    with inheriting(environment, fd3) as child:
        assert child.finish() == 1
    errors = [x for x in child.lines if x.startswith("shutdown-scope: ")]
    assert len(errors) == 1
    assert message in errors[0]


# -- RLIMIT_NOFILE ---------------------------------------------------------------

# The generation: prints where each of its sockets listens, by fd, as JSON; ready;
# exits 0 on SIGTERM.
REPORTER = """
import json, os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
places = {}
for fd in range(3, 3 + int(os.environ["LISTEN_FDS"])):
    with socket.socket(fileno=os.dup(fd)) as sock:
        name = sock.getsockname()
    places[fd] = name if isinstance(name, str) else list(name[:2])
names = os.environ["LISTEN_FDNAMES"].split(":")
print("sockets", json.dumps({"places": places, "names": names}), flush=True)
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
    notify.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(60)
"""

# Exec the launcher with RLIMIT_NOFILE 64 and a listening socket at fd 3 passed
# to it (LISTEN_FDS=1, named "web"): its own sockets then sit among 3, 4, 5.
LIMITED = """
import os, resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print("inherited port", sock.getsockname()[1], flush=True)
os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
os.execv(sys.executable, [sys.executable, "-m", "shutdown_scope", "run", *sys.argv[1:]])
"""


def test_under_rlimit_nofile_64_every_generation_gets_its_sockets_in_place(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "app.sock")
    options = ("--listen", "127.0.0.1:0", "--listen", f"unix:{path}")
    command = ("--", sys.executable, "-c", REPORTER)
    with Launcher(
        "-c", LIMITED, *options, "--control", str(tmp_path / "c"), *command
    ) as child:
        inherited = int(child.wait_for("inherited port").split()[2])
        child.wait_for(f"listening on 127.0.0.1:{inherited} (fd 3 in the child)")
        line = child.wait_for("listening on 127.0.0.1:")
        assert line.endswith("(fd 4 in the child)")
        port = int(line.split("127.0.0.1:")[1].split()[0])
        child.wait_for(f"listening on unix:{path} (fd 5 in the child)")
        expected = {
            "places": {
                "3": ["127.0.0.1", inherited],
                "4": ["127.0.0.1", port],
                "5": path,
            },
            "names": ["web", "127.0.0.1_0", f"unix_{path}"],
        }
        first = json.loads(child.wait_for("sockets ").split(" ", 1)[1])
        child.wait_for(") ready")
        child.send(signal.SIGHUP)
        second = json.loads(child.wait_for("sockets ").split(" ", 1)[1])
        child.wait_for("reload 1: done")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert first == expected
    assert second == expected
