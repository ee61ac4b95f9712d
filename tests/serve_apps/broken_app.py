"""A module that raises while it is imported (``shutdown-scope serve`` reports it)."""

from __future__ import annotations

SETTINGS: dict[str, str] = {}
DATABASE_URL = SETTINGS["DATABASE_URL"]
