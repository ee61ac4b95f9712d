"""Real shutdowns for the docs: run them, keep their reports, draw them.

``python docs/_ext/real_shutdowns.py OUTDIR`` (the docs build runs it through
``shutdown_pictures``) starts real processes, stops them with real signals and
writes, for each scenario NAME, ``NAME.json`` (the ShutdownReport's
``as_dict()``, as the program printed it) and ``NAME.svg`` (its timeline).

The budgets each ran with are given to ``render_svg`` for the deadline lines.

* ``clean``: the demo's server (``examples/hypercorn_app.py``) under keep-alive
  load, SIGTERM: everything in flight is answered;
* ``cancelled``: the same with slow requests and a drain deadline they miss;
* ``escalated``: slow requests, SIGTERM, then a second SIGTERM that skips the
  rest of the drain;
* ``worker``: ``examples/worker.py`` (the tutorial's program) stopped while a
  message is in flight; also ``worker.log``, its log.

Each scenario checks that it showed what it is named for, so the docs never
show a "clean" shutdown that was not. The scenarios run in parallel: about two
seconds in all.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shutdown_scope.timeline import render_svg

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "hypercorn_app.py"
WORKER = ROOT / "examples" / "worker.py"
TIMEOUT = 60.0
SLOW_MS = 5000


@dataclass
class Child:
    """A process whose output lines are collected by a thread."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(cls, *argv: str) -> Child:
        """Start ``python ARGV``, reading stdout and stderr together."""
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        child = cls(proc)
        threading.Thread(target=child.read, daemon=True).start()
        return child

    def read(self) -> None:
        """Collect lines until the output ends."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, wanted: Callable[[list[str]], bool]) -> None:
        """Wait until ``wanted(lines)``; raise if the process ends first."""
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while not wanted(self.lines):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    output = "\n".join(self.lines)
                    msg = f"{self.proc.args!r}: gave up waiting:\n{output}"
                    raise RuntimeError(msg)
                self.changed.wait(0.05)

    def finish(self) -> list[str]:
        """Wait for the exit and the last line of output."""
        self.proc.wait(TIMEOUT)
        time.sleep(0.05)  # the reader thread takes the last lines
        with self.changed:
            return list(self.lines)


def _load(url: str, path: str, running: Callable[[], bool]) -> None:
    """One keep-alive client asking for ``path`` until the server is gone."""
    parts = urlsplit(url)
    while running():
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT
        )
        try:
            while running():
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.will_close:
                    break
        except (OSError, http.client.HTTPException):
            return  # the listener closed: the server is stopping
        finally:
            connection.close()


def _report(lines: list[str]) -> dict[str, object]:
    last = next(line for line in reversed(lines) if line.startswith("{"))
    data = json.loads(last)
    assert isinstance(data, dict)
    return data


Shutdown = tuple[dict[str, object], dict[str, float]]  # a report and its plan


def _serve(plan: dict[str, float], *, fast: int, slow: int, signals: int) -> Shutdown:
    """The demo server under load: ``fast`` clients of 20 ms requests and
    ``slow`` ones of SLOW_MS; ``signals`` SIGTERMs, 0.4 s apart."""
    budgets = [
        f"--{name.replace('_', '-')}={value}" for name, value in sorted(plan.items())
    ]
    child = Child.start(
        str(SERVER), "--bind", "127.0.0.1:0", "--json", "--verbose", *budgets
    )
    child.wait_for(lambda lines: any(x.startswith("listening ") for x in lines))
    url = next(x for x in child.lines if x.startswith("listening ")).split()[-1]
    clients = [f"/work?ms={SLOW_MS}"] * slow + ["/work?ms=20"] * fast
    threads = [
        threading.Thread(
            target=_load, args=(url, path, lambda: child.proc.poll() is None)
        )
        for path in clients
    ]
    for thread in threads:
        thread.start()
    # Every client has a request in the app before the signal.
    child.wait_for(lambda lines: sum("work: read" in x for x in lines) >= len(clients))
    time.sleep(0.2)
    for n in range(signals):
        if n:
            time.sleep(0.4)  # past the debounce window: a second signal
        child.proc.send_signal(signal.SIGTERM)
    lines = child.finish()
    for thread in threads:
        thread.join(TIMEOUT)
    return _report(lines), plan


def clean() -> Shutdown:
    """SIGTERM under load: the drain answers everything in flight."""
    plan = {"announce_delay": 0.1, "drain_timeout": 10.0, "cancel_timeout": 2.0}
    shutdown = _serve(plan, fast=8, slow=0, signals=1)
    _expect(shutdown[0], clean=True, signals=1)
    return shutdown


def cancelled() -> Shutdown:
    """Slow requests miss the drain deadline: they are cancelled."""
    plan = {"announce_delay": 0.0, "drain_timeout": 0.3, "cancel_timeout": 1.0}
    shutdown = _serve(plan, fast=4, slow=3, signals=1)
    _expect(shutdown[0], clean=False, signals=1)
    return shutdown


def escalated() -> Shutdown:
    """A second SIGTERM 0.4 s into the drain skips to CANCELLING."""
    plan = {"announce_delay": 0.0, "drain_timeout": 10.0, "cancel_timeout": 0.5}
    shutdown = _serve(plan, fast=4, slow=3, signals=2)
    _expect(shutdown[0], clean=False, signals=2)
    return shutdown


def worker(out: Path) -> Shutdown:
    """The tutorial's worker, SIGTERM while a message is in flight."""
    plan = {"drain_timeout": 5.0, "cancel_timeout": 1.0}
    child = Child.start(
        str(WORKER), "--json", "--work-time", "0.5", "--interval", "0.2"
    )
    child.wait_for(lambda lines: any(": in flight" in x for x in lines))
    time.sleep(0.2)
    child.proc.send_signal(signal.SIGTERM)
    lines = child.finish()
    log = [x for x in lines if not x.startswith(("{", "ready pid="))]
    (out / "worker.log").write_text("\n".join(log) + "\n", encoding="utf-8")
    report = _report(lines)
    _expect(report, clean=True, signals=1)
    return report, plan


def _expect(report: dict[str, object], *, clean: bool, signals: int) -> None:
    if report["clean"] != clean or report["signals_received"] != signals:
        msg = f"this shutdown did not show what the docs say:\n{report}"
        raise RuntimeError(msg)


def generate(out: Path) -> list[Path]:
    """Run every scenario; write NAME.json and NAME.svg into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    scenarios: dict[str, Callable[[], Shutdown]] = {
        "clean": clean,
        "cancelled": cancelled,
        "escalated": escalated,
        "worker": lambda: worker(out),
    }
    with ThreadPoolExecutor(len(scenarios)) as pool:
        futures = {name: pool.submit(run) for name, run in scenarios.items()}
        shutdowns = {name: future.result() for name, future in futures.items()}
    written = []
    for name, (report, plan) in shutdowns.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        svg = out / f"{name}.svg"
        svg.write_text(render_svg(report, **plan), encoding="utf-8")
        written += [path, svg]
    return written


if __name__ == "__main__":
    for written in generate(Path(sys.argv[1])):
        print(written)
