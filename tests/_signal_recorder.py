"""A child for the launcher's tests that records every signal it gets.

``python _signal_recorder.py``: catches each signal the launcher passes on (and
SIGTERM), prints ``got N`` for each, sends READY=1, and exits 0 on SIGTERM. It
also prints ``stderr blocking True|False``: whether its fd 2 is in blocking mode.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time

# Every signal the tests send that a bare child would die of.
RECORDED = (
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGXCPU,
    signal.Signals["SIGSTKFLT"],  # not in typeshed
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGPIPE,
    signal.SIGXFSZ,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
stopping: list[int] = []


def on_signal(signum: int, frame: object) -> None:
    os.write(1, f"got {signum}\n".encode())  # one write: handlers may nest
    if signum == signal.SIGTERM:
        stopping.append(signum)


for sig in (*RECORDED, signal.SIGTERM):
    signal.signal(sig, on_signal)
blocking = not fcntl.fcntl(2, fcntl.F_GETFL) & os.O_NONBLOCK
print(f"stderr blocking {blocking}", flush=True)  # noqa: T201
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
print("ready", flush=True)  # noqa: T201
while not stopping:
    time.sleep(0.02)
print("exiting", flush=True)  # noqa: T201
