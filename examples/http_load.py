"""Keep-alive HTTP/1.1 load from the command line, with an account of every request.

``python examples/http_load.py http://127.0.0.1:8000/work?ms=5 --clients 32
--seconds 2`` runs real clients against a server and prints what happened to
their requests: answered, lost, refused, closed idle (see
``shutdown_scope.testing.http_load``, which implements it, for what each means).
``examples/demo.py``, the tests and ``bench/`` import ``LoadStats`` and
``run_load`` from here or from there: it is the one implementation.
"""

from __future__ import annotations

import argparse

import anyio

from shutdown_scope.testing.http_load import LoadStats, run_load

__all__ = ["LoadStats", "run_load"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    result = anyio.run(
        lambda: run_load(args.url, clients=args.clients, seconds=args.seconds)
    )
    print(result.summary())
