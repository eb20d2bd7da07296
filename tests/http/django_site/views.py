"""Views that answer, and views that raise what Django turns into 4xx and 5xx responses."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse

import tracekit


def show(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse(f"{tracekit.correlation_id()} {args} {sorted(kwargs.items())}")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    cid = tracekit.correlation_id()
    return StreamingHttpResponse(f"{cid}\n" for _ in range(3))


def missing(request: HttpRequest, item_id: int) -> HttpResponse:
    raise Http404(f"no item {item_id}")  # what get_object_or_404 raises


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("not your order")


def suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("tampered signature")


def crash(request: HttpRequest) -> HttpResponse:
    raise LookupError("card service said: \x1b[31mdeclined\x1b[0m " + "x" * 600)
