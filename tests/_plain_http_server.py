"""A plain HTTP server given the socket at fd 3: the standard library only.

No LISTEN_FDS parsing, no READY=1: ``http.server`` (``socketserver``, which
waits in ``poll``) on ``socket.socket(fileno=3)``. ``/work?ms=N`` sleeps N ms and
answers ``done N``. SIGTERM: stop accepting, finish the requests in flight (one
thread each), exit 0.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        ms = int(query.get("ms", ["0"])[0])
        time.sleep(ms / 1000)
        body = f"done {ms}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the tests read the launcher's log."""


server = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
server.daemon_threads = False  # server_close() waits for the requests in flight


def on_sigterm(signum: int, frame: object) -> None:
    threading.Thread(target=server.shutdown).start()  # not from serve_forever's thread


signal.signal(signal.SIGTERM, on_sigterm)
server.serve_forever(poll_interval=0.5)
server.server_close()
print("plain server: stopped", flush=True)  # noqa: T201
