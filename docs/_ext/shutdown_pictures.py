"""A Sphinx extension: run real shutdowns before the build reads the pages.

The pages show ``_generated/NAME.svg`` timelines, ``NAME.json`` reports and the
worker's log (``real_shutdowns.py`` says which). They are written anew by every
build, from processes stopped with real signals, so they cannot go stale.
"""

from __future__ import annotations

import time
from pathlib import Path

from real_shutdowns import generate
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _run_shutdowns(app: Sphinx) -> None:
    began = time.monotonic()
    written = generate(Path(app.srcdir) / "_generated")
    logger.info(
        "shutdown_pictures: %d files from real shutdowns in %.1f s",
        len(written),
        time.monotonic() - began,
    )


def setup(app: Sphinx) -> dict[str, object]:
    """Register the hook."""
    app.connect("builder-inited", _run_shutdowns)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
