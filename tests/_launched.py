"""A child for the launcher's tests: plain sockets and signals, no shutdown_scope.

``python _launched.py BEHAVIOUR[,BEHAVIOUR...]``: generation N (from
SHUTDOWN_SCOPE_GENERATION) takes the N-th behaviour, or the last one. Under
``run --workers``, a behaviour ``A/B`` gives worker 0 (SHUTDOWN_SCOPE_WORKER) A and
worker 1 and later B, and the child's tag is ``gen N worker I``:

- ``serve``: answer each connection on fd 3 with ``gen N pid P``, send READY=1,
  and on SIGTERM/SIGINT print ``gen N got SIGx`` and exit 0 (SIGINT: exit 130);
  on SIGUSR1 print ``gen N got SIGUSR1`` and go on.
- ``crash``: exit 3 at once, never ready.
- ``deaf``: like serve, but never waits for connections on its socket (it only
  sleeps): ready by READY=1, never by ``--ready accepting``.
- ``hang``: never send READY=1; otherwise like serve.
- ``ignore``: like serve, but print and ignore SIGTERM.
- ``orphan``: like serve, after leaving an orphan that exits at once (a zombie
  unless something reaps it); prints ``orphan P``.
- ``orphans``: like serve, after leaving 200 orphans that exit at once; prints
  ``made 200 orphans``.
- ``exit:N``: print the signals it gets for a moment, then exit with code N.
- ``drain``: like serve, but on SIGTERM close the listener, print ``gen N closed
  its listener`` and exit 1.5 s later (a drain).
- ``worker``: like serve, after starting a worker in its process group that
  ignores SIGTERM; prints ``worker P``.
- ``slowready``: send READY=1 1 s after the start, whatever happens; stop on
  SIGTERM only after that.
- ``readycrash``: send READY=1, then exit 1 after 0.3 s.
- ``helperready``: a helper process of its group sends READY=1 (and prints
  ``helper P``), then the main process exits 3: an app that fails after a helper
  said it was ready.
- ``mainpid``: the main process names a worker of its group with ``MAINPID=``,
  then the worker sends READY=1 (and prints ``worker P``); otherwise like serve.
- ``launchermainpid``: MAINPID= names the launcher; the worker sends READY=1,
  then the main process exits 3.
- ``readyexit``: with the launcher stopped (SIGSTOP), send READY=1 and
  STATUS=last words, and exit 4 at once: the launcher learns both at the same
  time (the test sends SIGCONT).
- ``bigstatus``: with the launcher stopped (SIGSTOP, so that it reads them all
  at once), send two 2.5 KB STATUS=, a STATUS= of 3000 bytes that are not
  UTF-8 and a datagram with a NUL inside, then READY=1; otherwise like serve.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time

generation = int(os.environ.get("SHUTDOWN_SCOPE_GENERATION", "1"))
behaviours = sys.argv[1].split(",")
behaviour = behaviours[min(generation, len(behaviours)) - 1]
tag = f"gen {generation}"
if (worker_index := os.environ.get("SHUTDOWN_SCOPE_WORKER")) is not None:
    tag += f" worker {worker_index}"
    by_worker = behaviour.split("/")
    behaviour = by_worker[min(int(worker_index), len(by_worker) - 1)]


def say(text: str) -> None:
    print(f"{tag} {text}", flush=True)  # noqa: T201 -- the markers tests wait for


def notify(data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, os.environ["NOTIFY_SOCKET"])


def in_a_helper(send: bytes, *, wait: bool = False, name: str = "helper") -> int:
    """Fork a process of our group that sends ``send``, once told to with
    ``go()`` if ``wait``; ``sent()`` returns once it has."""
    helper = os.fork()
    if helper == 0:
        if wait:
            os.read(go_read, 1)
        notify(send)
        print(f"{name} {os.getpid()}", flush=True)  # noqa: T201
        os.write(sent_write, b"x")
        time.sleep(60)  # stopped with the group
        os._exit(0)
    return helper


go_read, go_write = os.pipe()
sent_read, sent_write = os.pipe()


def go() -> None:
    os.write(go_write, b"x")


def sent() -> None:
    os.read(sent_read, 1)


if behaviour == "crash":
    say("crashing")
    sys.exit(3)
if behaviour == "readyexit":
    say(f"pid {os.getpid()} ready, then exiting")
    os.kill(os.getppid(), signal.SIGSTOP)
    notify(b"READY=1\nSTATUS=last words")
    sys.exit(4)
if behaviour == "readycrash":
    say("ready, then crashing")
    notify(b"READY=1")
    time.sleep(0.3)
    sys.exit(1)


if behaviour == "helperready":
    in_a_helper(b"READY=1")
    sent()
    say("failing after its helper said ready")
    sys.exit(3)
if behaviour in {"mainpid", "launchermainpid"}:
    worker = in_a_helper(b"READY=1", wait=True, name="worker")
    named = worker if behaviour == "mainpid" else os.getppid()
    notify(f"MAINPID={named}".encode())
    go()  # the worker's READY=1 comes after MAINPID=
    if behaviour == "launchermainpid":
        sent()
        say("failing after its worker said ready")
        sys.exit(3)
if behaviour == "bigstatus":
    os.kill(os.getppid(), signal.SIGSTOP)
    try:
        notify(b"STATUS=" + b"a" * 2500)
        notify(b"STATUS=" + b"b" * 2500)
        notify(b"STATUS=" + b"\xff" * 3000)
        notify(b"READY=1\nSTATUS=nul\0inside")
    finally:
        os.kill(os.getppid(), signal.SIGCONT)
if behaviour.startswith("exit:"):
    say(f"will exit {behaviour[5:]}")
    time.sleep(0.3)
    sys.exit(int(behaviour[5:]))

stopping: list[int] = []


def on_signal(signum: int, frame: object) -> None:
    say(f"got {signal.Signals(signum).name}")
    if signum == signal.SIGUSR1:
        return  # noted only: a SIGTERM that follows must find it still running
    if behaviour == "ignore" and signum == signal.SIGTERM:
        return
    stopping.append(signum)


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
    signal.signal(sig, on_signal)

if behaviour == "worker":
    worker = os.fork()
    if worker == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
        os._exit(0)
    print(f"worker {worker}", flush=True)  # noqa: T201

if behaviour == "orphan":
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            time.sleep(0.2)  # outlive its parent: reparented, then a zombie
            os._exit(0)
        print(f"orphan {orphan}", flush=True)  # noqa: T201
        os._exit(0)
    os.waitpid(middle, 0)

if behaviour == "orphans":
    for _ in range(200):
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:
                os._exit(0)
            os._exit(0)
        os.waitpid(middle, 0)
    say("made 200 orphans")

listener = socket.socket(fileno=3) if os.environ.get("LISTEN_FDS") else None
if listener is not None:
    listener.settimeout(0.05)
own = os.environ.get("LISTEN_PID") == str(os.getpid())
say(f"pid {os.getpid()} listening {listener is not None} own LISTEN_PID {own}")
if behaviour == "slowready":
    time.sleep(1)
if behaviour not in {"hang", "mainpid"}:
    notify(b"READY=1\nSTATUS=serving")
    if os.environ.get("WATCHDOG_USEC"):
        notify(b"WATCHDOG=1")
while not stopping:
    if listener is None or behaviour == "deaf":
        time.sleep(0.05)
        continue
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        continue
    with conn, contextlib.suppress(OSError):  # a client may leave at once
        conn.sendall(f"{tag} pid {os.getpid()}\n".encode())
if behaviour == "drain" and listener is not None:
    listener.close()
    say("closed its listener")
    time.sleep(1.5)
say("exiting")
sys.exit(130 if stopping[0] == signal.SIGINT else 0)
