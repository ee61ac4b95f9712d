"""examples/deploy: the Dockerfile, the Kubernetes manifest and the systemd units.

Two kinds of checks. The numbers: each file's stop plan (announce + drain +
cancel, given to the app) fits inside the launcher's --grace-period, which fits
inside the orchestrator's window, and every option the files name exists. And
the command lines themselves, run here as real processes: they serve /readyz
and /work, stop cleanly on SIGTERM, and the systemd unit's ExecStart, run under
``systemd-socket-activate`` with a NOTIFY_SOCKET, reports READY=1, reloads
through its ExecReload and reports STOPPING=1.

No PyYAML (not a test dependency): the manifest keeps its command lines as
JSON-style lists, read with ``json``; a full YAML parse runs only where PyYAML
happens to be installed. Docker itself is not run here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _spawn import TIMEOUT, Child

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "examples" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes.yaml"
SERVICE = DEPLOY / "app.service"
SOCKET = DEPLOY / "app.socket"
ACTIVATE = "/usr/bin/systemd-socket-activate"
# `docker stop` waits this long before SIGKILL unless told otherwise.
DOCKER_STOP_TIMEOUT = 10.0
PLAN_OPTIONS = ("--announce-delay", "--drain-timeout", "--cancel-timeout")


# -- reading the files ----------------------------------------------------------


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON array of the Dockerfile's one ``instruction`` (exec form)."""
    found = re.findall(rf"^{instruction} (.*)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert len(found) == 1, f"one {instruction} expected, found {found}"
    words = json.loads(found[0])  # the shell form is not JSON: this fails
    assert isinstance(words, list)
    assert all(isinstance(word, str) for word in words)
    return words


def manifest() -> str:
    """The Kubernetes manifest without its comments."""
    return re.sub(r"^\s*#.*\n", "", KUBERNETES.read_text(), flags=re.MULTILINE)


def manifest_value(key: str) -> str:
    found = re.findall(rf"^\s*{key}: (.*)$", manifest(), re.MULTILINE)
    assert len(found) == 1, f"one {key} expected in {KUBERNETES.name}: {found}"
    return str(found[0]).strip()


def manifest_list(key: str) -> list[str]:
    words = json.loads(manifest_value(key))
    assert isinstance(words, list)
    return [str(word) for word in words]


def unit(path: Path) -> dict[str, str]:
    """``Key=value`` settings of a unit file (each key once), comments skipped."""
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not Key=value: {line!r}"
        assert key not in settings, f"{path.name}: {key} given twice"
        settings[key] = value
    return settings


def command_lines() -> dict[str, list[str]]:
    """Each deployment's full command line: launcher, ``--``, the app."""
    service = unit(SERVICE)
    return {
        "docker": dockerfile_exec_form("ENTRYPOINT") + dockerfile_exec_form("CMD"),
        "kubernetes": manifest_list("command") + manifest_list("args"),
        "systemd": shlex.split(service["ExecStart"]),
    }


def split_at_dashes(argv: list[str]) -> tuple[list[str], list[str]]:
    """(``shutdown-scope run`` and its options, the app's command line)."""
    assert "--" in argv, argv
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} once expected in {argv}"
    return argv[argv.index(name) + 1]


def plan(app_argv: list[str]) -> float:
    """The plan: announce + drain + cancel, the scope's whole budget after SIGTERM."""
    return sum(float(option(app_argv, name)) for name in PLAN_OPTIONS)


def window(deployment: str) -> float:
    """How long the orchestrator waits after SIGTERM before it SIGKILLs."""
    if deployment == "docker":
        return DOCKER_STOP_TIMEOUT
    if deployment == "kubernetes":
        return float(manifest_value("terminationGracePeriodSeconds"))
    return float(unit(SERVICE)["TimeoutStopSec"])


def help_options(*argv: str) -> set[str]:
    """The ``--options`` a command's ``--help`` lists."""
    result = subprocess.run(
        [sys.executable, *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.stdout))


def readiness_path_of_the_app() -> str:
    """The ``--readiness-path`` of the app's command line, the same in every file."""
    found = {
        option(split_at_dashes(argv)[1], "--readiness-path")
        for argv in command_lines().values()
    }
    assert len(found) == 1, found
    return found.pop()


# -- the numbers ------------------------------------------------------------------

DEPLOYMENTS = ["docker", "kubernetes", "systemd"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_plan_fits_the_launchers_grace_period_which_fits_the_window(
    deployment: str,
) -> None:
    launcher, app = split_at_dashes(command_lines()[deployment])
    grace = float(option(launcher, "--grace-period"))
    # The scope's watchdog exits at the end of its plan; the launcher's SIGKILL
    # is the backstop, and it must come before the orchestrator's, which
    # would leave no log line.
    assert plan(app) < grace < window(deployment)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_launcher_runs_the_example_app(deployment: str) -> None:
    launcher, app = split_at_dashes(command_lines()[deployment])
    assert Path(launcher[0]).name == "shutdown-scope"
    assert launcher[1] == "run"
    # `shutdown-scope serve`, with the example's App as the app factory.
    assert Path(app[0]).name == "shutdown-scope"
    assert app[1] == "serve"
    assert option(app, "--app-dir") == "examples"
    assert "--factory" in app
    assert "hypercorn_app:App" in app
    assert (ROOT / option(app, "--app-dir") / "hypercorn_app.py").is_file()
    assert "--bind" not in app  # it serves the socket the launcher hands it


@pytest.mark.subprocess
def test_every_option_the_files_name_exists() -> None:
    run_options = help_options("-m", "shutdown_scope", "run")
    reload_options = help_options("-m", "shutdown_scope", "reload")
    app_options = help_options("-m", "shutdown_scope", "serve")
    for argv in command_lines().values():
        launcher, app = split_at_dashes(argv)
        named = {word for word in launcher if word.startswith("--")}
        assert named <= run_options, named - run_options
        named = {word for word in app if word.startswith("--")}
        assert named <= app_options, named - app_options
        assert {*PLAN_OPTIONS} <= named  # the whole plan, written out
    reload = shlex.split(unit(SERVICE)["ExecReload"])
    named = {word for word in reload if word.startswith("--")}
    assert named <= reload_options, named - reload_options


def test_the_dockerfile_runs_the_launcher_as_pid_1() -> None:
    # Exec form (json.loads fails on the shell form): the launcher is PID 1.
    entrypoint = dockerfile_exec_form("ENTRYPOINT")
    assert entrypoint[:2] == ["shutdown-scope", "run"]
    assert entrypoint[-1] == "--"
    assert option(entrypoint, "--listen") == "0.0.0.0:8000"
    dockerfile_exec_form("CMD")
    text = DOCKERFILE.read_text()
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users, "the container must not run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE)


def test_what_the_dockerfile_copies_exists() -> None:
    for line in re.findall(r"^COPY (.*)$", DOCKERFILE.read_text(), re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert re.search(
        r"^RUN pip install \"\.\[hypercorn\]\"$", DOCKERFILE.read_text(), re.MULTILINE
    )


def test_the_dockerfile_copies_what_the_build_needs_before_pip_install() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {
        project["project"]["readme"],
        *project["project"]["license-files"],
        project["tool"]["hatch"]["version"]["path"],
    }
    text = DOCKERFILE.read_text()
    before_install = text[: text.index('RUN pip install ".[hypercorn]"')]
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (.*)$", before_install, re.MULTILINE)
        for source in line.split()[:-1]
    }
    missing = {
        path
        for path in needed
        if not any(path == c or path.startswith(f"{c}/") for c in copied)
    }
    assert not missing, f"COPY these before pip install: {sorted(missing)}"


def test_kubernetes_readiness_fails_within_the_announce_delay() -> None:
    assert manifest_value("path") == readiness_path_of_the_app()
    period = float(manifest_value("periodSeconds"))
    failures = float(manifest_value("failureThreshold"))
    timeout = float(manifest_value("timeoutSeconds"))
    _, app = split_at_dashes(command_lines()["kubernetes"])
    announce = float(option(app, "--announce-delay"))
    # The kubelet sees the pod unready within half the announce delay; the
    # other half is for kube-proxy and load balancers to act on it.
    assert period * failures + timeout <= announce / 2


def test_kubernetes_has_no_prestop_sleep_and_rolls_without_unavailability() -> None:
    text = manifest()
    assert "preStop" not in text
    assert "lifecycle" not in text
    assert "sleep" not in text
    assert manifest_value("maxUnavailable") == "0"
    assert "livenessProbe" not in text
    # The port the launcher listens on is the one the probe and Service use.
    launcher, _ = split_at_dashes(command_lines()["kubernetes"])
    assert option(launcher, "--listen").endswith(":8000")
    assert manifest_value("containerPort") == "8000"
    # runAsNonRoot needs a numeric USER in the image; the pod runs as it.
    users = re.findall(r"^USER (\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert [manifest_value("runAsUser")] == users


def test_kubernetes_manifest_parses_as_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    deployment, service = yaml.safe_load_all(KUBERNETES.read_text())
    assert deployment["kind"] == "Deployment"
    assert service["kind"] == "Service"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == manifest_list("command")
    assert container["args"] == manifest_list("args")
    assert "lifecycle" not in container
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == readiness_path_of_the_app()
    assert pod["terminationGracePeriodSeconds"] == window("kubernetes")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_systemd_units_hand_over_the_socket_and_notify_through_the_launcher() -> (
    None
):
    socket_unit = unit(SOCKET)
    assert socket_unit["ListenStream"] == "8000"
    service = unit(SERVICE)
    assert service["Type"] == "notify"
    # The launcher is the main process and relays its child's READY=1.
    assert service["NotifyAccess"] == "main"
    assert service["KillMode"] == "mixed"
    launcher, _ = split_at_dashes(shlex.split(service["ExecStart"]))
    # Sockets come from app.socket: the launcher adopts them, binds nothing.
    assert "--listen" not in launcher
    reload = shlex.split(service["ExecReload"])
    assert Path(reload[0]).name == "shutdown-scope"
    assert reload[1] == "reload"
    assert option(reload, "--control") == option(launcher, "--control")
    control = option(launcher, "--control")
    assert control.startswith("%t/" + service["RuntimeDirectory"] + "/")
    # systemd bounds ExecReload by TimeoutStartSec; the reload waits for the
    # successor's READY=1 at most --ready-timeout.
    ready_timeout = float(option(launcher, "--ready-timeout"))
    reload_timeout = float(option(reload, "--timeout"))
    assert ready_timeout < reload_timeout < float(service["TimeoutStartSec"])


# -- the command lines, run ---------------------------------------------------------


def local(argv: list[str], runtime_dir: Path | None = None) -> list[str]:
    """``argv`` as it runs here: this Python, the repository's examples."""
    words: list[str] = []
    for word in argv:
        name = Path(word).name
        if name == "shutdown-scope":
            words += [sys.executable, "-m", "shutdown_scope"]
        elif name == "python":
            words.append(sys.executable)
        elif word == "examples" or word.startswith("examples/"):
            words.append(str(ROOT / word))
        elif runtime_dir is not None and word.startswith("%t/"):
            words.append(str(runtime_dir / word[len("%t/") :]))
        else:
            words.append(word)
    assert not any(re.search(r"%[a-zA-Z]|\$", word) for word in words), words
    return words


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of one ``GET`` (HTTP/1.0: no chunks, then closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b"".join(iter(lambda: conn.recv(4096), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


class Launched(Child):
    """A launcher child; on exit its generations are killed too, so that a
    failed test does not leave them holding the output pipe open."""

    def __exit__(self, *exc_info: object) -> None:
        pids = re.findall(r"generation \d+ \(pid (\d+)\)", self.output)
        with contextlib.suppress(ProcessLookupError):
            for pid in set(pids):
                os.killpg(int(pid), signal.SIGKILL)
        super().__exit__(*exc_info)  # type: ignore[arg-type]


def port_of(child: Child) -> int:
    line = child.wait_for("shutdown-scope: listening on 127.0.0.1:")
    found = re.search(r"127\.0\.0\.1:(\d+) \(fd 3", line)
    assert found is not None, line
    return int(found.group(1))


@pytest.mark.subprocess
@pytest.mark.parametrize("deployment", ["docker", "kubernetes"])
def test_the_container_command_serves_and_stops_cleanly(deployment: str) -> None:
    argv = command_lines()[deployment]
    _, app = split_at_dashes(argv)
    announce = float(option(app, "--announce-delay"))
    here = local(argv)
    here[here.index("0.0.0.0:8000")] = "127.0.0.1:0"  # any free port
    if announce > 1:  # its length is not what is tested here: the phases are
        here[here.index("--announce-delay") + 1] = "1"
        announce = 1.0
    with Launched(*here[1:]) as child:
        port = port_of(child)
        child.wait_for("generation 1 (pid")
        child.wait_for(") ready")  # READY=1 from graceful_scope, to the launcher
        assert http_get(port, "/readyz") == (200, "ready\n")
        assert http_get(port, "/work?ms=1") == (200, "done 1\n")
        child.send(signal.SIGTERM)
        child.wait_for("shutdown_scope: STOPPING")
        if announce > 0:
            # The announce delay: readiness fails at once, requests are served.
            assert http_get(port, "/readyz")[0] == 503
            assert http_get(port, "/work?ms=1") == (200, "done 1\n")
        assert child.finish() == 0, child.output
    assert "shutdown clean (exit code 0)" in child.output
    assert "SIGKILL" not in child.output


def new_pid_namespace() -> list[str]:
    """``unshare`` arguments that run a command as PID 1 of a new PID namespace."""
    # --kill-child: if unshare dies (the test failed), what it runs dies too.
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    try:
        probe = subprocess.run(
            [*prefix, "true"], capture_output=True, timeout=TIMEOUT, check=False
        )
    except FileNotFoundError:
        pytest.skip("unshare (util-linux) is not installed")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace: {probe.stderr.decode().strip()}")
    return prefix


@pytest.mark.subprocess
def test_the_dockerfile_command_as_pid_1_stops_on_a_sigterm_from_outside() -> None:
    """As in a container: the launcher is PID 1, the SIGTERM comes from the
    parent namespace (the kernel drops it unless PID 1 has a handler)."""
    prefix = new_pid_namespace()
    here = local(command_lines()["docker"])
    here[here.index("0.0.0.0:8000")] = "127.0.0.1:0"
    with Launched(
        "-c", "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])", *prefix, *here
    ) as child:
        port = port_of(child)
        child.wait_for("generation 1 (pid 2) started")  # the launcher is PID 1
        child.wait_for(") ready")
        assert http_get(port, "/readyz") == (200, "ready\n")
        # unshare's forked child exec'd the launcher: PID 1 inside, seen from here.
        (launcher,) = Path(f"/proc/{child.proc.pid}/task").glob("*/children")
        os.kill(int(launcher.read_text()), signal.SIGTERM)
        assert child.finish() == 0, child.output
    assert "shutdown clean (exit code 0)" in child.output


@pytest.mark.subprocess
def test_the_systemd_unit_serves_reloads_and_stops(tmp_path: Path) -> None:
    """ExecStart under socket activation and a NOTIFY_SOCKET, then ExecReload."""
    if not Path(ACTIVATE).exists():
        pytest.skip("systemd-socket-activate (Debian package systemd) is not installed")
    service = unit(SERVICE)
    (tmp_path / service["RuntimeDirectory"]).mkdir()
    start = local(shlex.split(service["ExecStart"]), tmp_path)
    reload = local(shlex.split(service["ExecReload"]), tmp_path)
    notify_path = str(tmp_path / "notify")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    heard: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.settimeout(TIMEOUT)

        def hear(state: str, times: int = 1) -> None:
            while heard.count(state) < times:
                heard.extend(manager.recv(4096).decode().splitlines())

        with Launched(
            "-c",
            "import os, sys; os.execv(sys.argv[1], sys.argv[1:])",
            ACTIVATE,
            "-l",
            f"127.0.0.1:{port}",
            f"--fdname={unit(SOCKET)['FileDescriptorName']}",
            "-E",
            f"NOTIFY_SOCKET={notify_path}",
            *start,
        ) as child:
            child.wait_for(f"Listening on 127.0.0.1:{port}")
            # The first connection starts the service, and is served.
            assert http_get(port, "/readyz") == (200, "ready\n")
            hear("READY=1")
            assert http_get(port, "/work?ms=1") == (200, "done 1\n")
            result = subprocess.run(
                reload, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
            assert result.returncode == 0, result.stderr
            assert "generation 2" in result.stderr
            hear("RELOADING=1")
            hear("READY=1", times=2)  # the new generation took over
            assert http_get(port, "/readyz") == (200, "ready\n")
            child.send(signal.SIGTERM)
            assert child.finish() == 0, child.output
            hear("STOPPING=1")
    events = [x for x in heard if x in {"READY=1", "RELOADING=1", "STOPPING=1"}]
    assert events == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], heard
    assert "SIGKILL" not in child.output
