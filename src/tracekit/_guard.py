"""Never break the host application: tracekit's own failures are caught and logged once."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

_log = logging.getLogger("tracekit")
_reported: set[str] = set()

T = TypeVar("T")


def report_once(where: str, error: BaseException) -> None:
    """Log tracekit's own failure at ``where`` the first time it happens, then stay quiet."""
    if where in _reported:
        return
    _reported.add(where)
    _log.warning(
        "tracekit: %s failed (%s); continuing without it",
        where,
        type(error).__name__,
        exc_info=error,
    )


def guarded(default: T) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a tracekit hook so that any exception it raises returns ``default`` instead."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        where = f"{function.__module__}.{function.__qualname__}"

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                report_once(where, error)
                return default

        return wrapper

    return decorate
