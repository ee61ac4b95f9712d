"""Graceful shutdown and zero-downtime restarts for anyio services.

``async with graceful_scope() as scope:`` turns SIGTERM/SIGINT (or a call) into
staged cancel scopes: stop accepting, drain in-flight work with a deadline,
cancel what remains, and as a last resort exit hard from a watchdog thread.
"""

from ._errors import ServiceNotStartedError as ServiceNotStartedError
from ._errors import ShutdownScopeError as ShutdownScopeError
from ._phases import Phase as Phase
from ._phases import ShutdownPlanWarning as ShutdownPlanWarning
from ._report import PhaseRecord as PhaseRecord
from ._report import ServiceOutcome as ServiceOutcome
from ._report import ServiceRecord as ServiceRecord
from ._report import ShutdownReport as ShutdownReport
from ._report import TriggerKind as TriggerKind
from ._run import run as run
from ._scope import ShutdownScope as ShutdownScope
from ._scope import graceful_scope as graceful_scope
from ._token import ShutdownToken as ShutdownToken

__all__ = [
    "Phase",
    "PhaseRecord",
    "ServiceNotStartedError",
    "ServiceOutcome",
    "ServiceRecord",
    "ShutdownPlanWarning",
    "ShutdownReport",
    "ShutdownScope",
    "ShutdownScopeError",
    "ShutdownToken",
    "TriggerKind",
    "graceful_scope",
    "run",
]
