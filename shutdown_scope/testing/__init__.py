"""A test kit: rehearse a real shutdown of your server, or drive a scope in-process.

* ``rehearse(argv, url=...)`` starts your server, loads it with keep-alive HTTP
  clients, sends it SIGTERM (or reloads it under ``shutdown-scope run``) and
  returns a ``Rehearsal``: ``assert rehearsal.lost == 0 and
  rehearsal.report.clean``. The pytest plugin (``shutdown_scope.testing.
  pytest_plugin``, registered when this package is installed) gives it as the
  ``shutdown_rehearsal`` fixture.
* ``graceful_test_scope()``, ``drive_to(scope, Phase.DRAINING)`` and
  ``virtual_clock_backend()``: test a service inside the test process, on
  virtual time on asyncio and on Trio.
* ``shutdown_scope.testing.http_load``: the keep-alive load itself.

Importing this package loads no optional dependency: the load (h11, the
``testing`` extra) is imported when a rehearsal runs, trio only for its clock.
"""

from ._rehearsal import rehearse as rehearse
from ._report_data import ReportedError as ReportedError
from ._report_data import read_report as read_report
from ._report_data import report_from_dict as report_from_dict
from ._result import Rehearsal as Rehearsal
from ._result import RehearsalError as RehearsalError
from ._scopes import drive_to as drive_to
from ._scopes import graceful_test_scope as graceful_test_scope
from ._virtual_time import VirtualClockLoop as VirtualClockLoop
from ._virtual_time import virtual_clock_backend as virtual_clock_backend

__all__ = [
    "Rehearsal",
    "RehearsalError",
    "ReportedError",
    "VirtualClockLoop",
    "drive_to",
    "graceful_test_scope",
    "read_report",
    "rehearse",
    "report_from_dict",
    "virtual_clock_backend",
]
