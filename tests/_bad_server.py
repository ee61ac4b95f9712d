"""A server with no graceful shutdown: SIGTERM ends it with requests in flight.

``python tests/_bad_server.py PORT [OPTIONS]``: a stdlib threading HTTP server;
each request takes 50 to 150 ms (spread, so that some are always being worked
on). It answers with ``Connection: close`` unless ``--keep-alive``. SIGTERM's
default action ends the process at once, losing what it was working on. Options:

* ``--ignore-sigterm``: only SIGKILL stops it;
* ``--exit-after``: it exits by itself (code 4) 0.3 s after its first answer;
* ``--hang-after-first``: it answers one request, then never again.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if "--keep-alive" in sys.argv else "HTTP/1.0"

    answered = 0

    def do_GET(self) -> None:
        if Handler.answered and "--hang-after-first" in sys.argv:
            time.sleep(3600)
        if not Handler.answered and "--exit-after" in sys.argv:
            threading.Timer(0.3, os._exit, (4,)).start()
        Handler.answered += 1
        time.sleep(random.uniform(0.05, 0.15))  # noqa: S311 -- not for security
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """No access log."""


if __name__ == "__main__":
    if "--ignore-sigterm" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ThreadingHTTPServer.request_queue_size = 64  # every client gets in at once
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"listening http://127.0.0.1:{server.server_port}", flush=True)  # noqa: T201
    server.serve_forever()
