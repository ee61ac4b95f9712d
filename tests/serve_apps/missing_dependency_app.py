"""A module whose own import fails: a package it needs is not installed."""

from __future__ import annotations

import not_installed_package_for_tests  # type: ignore[import-not-found]  # noqa: F401

app = None
