"""OpenTelemetry's current context for the per-request paths: read, attach and detach.

``opentelemetry.context``'s functions reach the context variable through its runtime-context
object, two calls deep each; a request attaches and detaches several times (its span, the context
its last message goes out in). Where that runtime is the default one (a context variable), its
variable is used directly; another runtime (``OTEL_PYTHON_CONTEXT``) is used through the API.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

from opentelemetry import context as otel_context
from opentelemetry.context import Context

__all__ = ["attach", "detach", "get_current"]


def _runtime_variable() -> ContextVar[Context] | None:
    """The default runtime's context variable, else None."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:
        return None
    variable = getattr(runtime, "_current_context", None)
    return variable if isinstance(variable, ContextVar) else None


_variable = _runtime_variable()
get_current: Callable[[], Context]
attach: Callable[[Context], Token[Context]]
detach: Callable[[Token[Context]], None]

if _variable is None:
    get_current = otel_context.get_current
    attach = otel_context.attach
    detach = otel_context.detach
else:
    get_current = _variable.get
    attach = _variable.set

    def _detach(token: Token[Context]) -> None:
        """Restore the context current before ``attach``; a token from another context is
        reported as the API reports it (logged, never raised)."""
        try:
            _variable.reset(token)  # type: ignore[union-attr]
        except Exception:  # (ValueError, RuntimeError: used already)
            otel_context.detach(token)

    detach = _detach
