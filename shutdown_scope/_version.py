"""The package's version: the one source for the wheel's metadata and ``--version``.

Imports nothing, so the launcher can print it without loading anyio.
"""

__version__ = "0.2.0.dev0"
