"""Machine-readable logs: one JSON object per record.

The scope's records carry an ``event`` field and the event's own fields (given
with ``extra=``), so a log pipeline or a test reads what happened, not a
sentence::

    import logging
    from shutdown_scope.logging import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("shutdown_scope").addHandler(handler)

A line: ``{"time": 1767225600.5, "level": "INFO", "logger": "shutdown_scope",
"message": "shutdown_scope: DRAINING; in flight: ['http: GET /work']", "event":
"phase", "phase": "DRAINING", "in_flight": ["http: GET /work"]}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["JsonFormatter"]

# Every attribute a plain LogRecord has: anything else came in through extra=.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON.

    Keys: ``time`` (seconds since the epoch), ``level``, ``logger``, ``message``
    (the formatted sentence), every field passed with ``extra=`` (``event`` and the
    event's fields), and ``exception`` (the traceback) when there is one. A value
    JSON cannot hold is written as its ``repr()``. Non-ASCII is escaped, so a line
    never breaks a log pipeline that expects ASCII.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=repr)
