"""Graceful shutdown and zero-downtime restarts for anyio services.

``async with graceful_scope() as scope:`` turns SIGTERM/SIGINT (or a call) into
staged cancel scopes: stop accepting, drain in-flight work with a deadline,
cancel what remains, and as a last resort exit hard from a watchdog thread.
"""

from ._version import __version__ as __version__  # imports nothing

# Each public name is imported from its module on first use (PEP 562): the
# launcher, ``python -m shutdown_scope run``, loads neither anyio nor asyncio and
# installs its signal handlers within milliseconds of its start. Type checkers
# read the imports below instead.
TYPE_CHECKING = False  # typing itself costs milliseconds
if TYPE_CHECKING:
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

_MODULES = {
    "Phase": "_phases",
    "PhaseRecord": "_report",
    "ServiceNotStartedError": "_errors",
    "ServiceOutcome": "_report",
    "ServiceRecord": "_report",
    "ShutdownPlanWarning": "_phases",
    "ShutdownReport": "_report",
    "ShutdownScope": "_scope",
    "ShutdownScopeError": "_errors",
    "ShutdownToken": "_token",
    "TriggerKind": "_report",
    "graceful_scope": "_scope",
    "run": "_run",
}


# Hidden from type checkers: for them, a module __getattr__ would make every
# misspelt name valid.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """A public name, imported from its module now (PEP 562)."""
        module_name = _MODULES.get(name)
        if module_name is None:
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib import import_module  # only when first needed

        value = getattr(import_module(f"{__name__}.{module_name}"), name)
        globals()[name] = value  # found directly from now on
        return value


def __dir__() -> list[str]:
    """The public names too, before their first use."""
    return sorted({*globals(), *__all__})
