"""``python -m shutdown_scope``: the ``shutdown-scope`` command."""

from ._launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
