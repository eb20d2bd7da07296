"""A middleware that runs only synchronously, as a function-style middleware does (Django's docs'
first example; many third-party ones are written so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def sync_only(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def middleware(request: Any) -> Any:
        return get_response(request)

    return middleware
