"""SHUTDOWN_SCOPE_REPORT_FILE: ``run()`` leaves its report as JSON for another process.

A test harness (``shutdown_scope.testing.rehearse``), a supervisor or a CI job
sets the variable to a path; when ``run()`` ends, it writes the report that
decided its exit code there, as the JSON of ``ShutdownReport.as_dict()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Final

from ._report import ShutdownReport

__all__ = ["REPORT_FILE_VARIABLE", "ReportFile"]

REPORT_FILE_VARIABLE: Final = "SHUTDOWN_SCOPE_REPORT_FILE"

logger = logging.getLogger("shutdown_scope")


class ReportFile:
    """Where ``run()`` writes its report, if anywhere."""

    __slots__ = ("path",)

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def take(cls, environ: MutableMapping[str, str]) -> ReportFile:
        """Take the variable out of ``environ``: processes this one starts (a
        pool of workers, a subprocess that also calls ``run()``) must not
        overwrite this process's report. Relative paths are resolved now, in
        case ``main`` changes the working directory."""
        path = environ.pop(REPORT_FILE_VARIABLE, "")
        return cls(Path(path).absolute() if path else None)

    def write(self, report: ShutdownReport | None) -> None:
        """Write ``report`` atomically with mode 0600; nothing if there is none.

        The JSON goes to a new file beside the path (created exclusively, never
        through a symlink), which then replaces the path: a reader never sees
        half a report, and a symlink planted at the path is replaced, not
        followed. A failure is logged: the exit code still comes from the
        report.
        """
        if self.path is None or report is None:
            return
        text = json.dumps(report.as_dict()) + "\n"
        try:
            fd, name = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            temporary = Path(name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
                temporary.replace(self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
        except OSError as error:
            logger.error(  # noqa: TRY400 -- one line; the traceback says nothing more
                "shutdown_scope: cannot write the report to %s=%s: %s",
                REPORT_FILE_VARIABLE,
                self.path,
                error.strerror or error,
            )
