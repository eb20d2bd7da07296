"""Views that answer, and views that raise what Django turns into 4xx and 5xx responses."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.core.signals import request_finished, request_started
from django.dispatch import receiver
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.utils import translation
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import tracekit


def show(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse(f"{tracekit.correlation_id()} {args} {sorted(kwargs.items())}")


def trace_seen(request: HttpRequest) -> HttpResponse:
    """The trace the view runs in, and whether the sampler kept it."""
    span_context = trace.get_current_span().get_span_context()
    return HttpResponse(f"{span_context.trace_id:032x} {span_context.trace_flags.sampled}")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    cid = tracekit.correlation_id()
    return StreamingHttpResponse(f"{cid}\n" for _ in range(3))


def in_flight(request: HttpRequest) -> HttpResponse:
    """The process's metrics as a scrape shows them while this request is in flight."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def missing(request: HttpRequest, item_id: int) -> HttpResponse:
    raise Http404(f"no item {item_id}")  # what get_object_or_404 raises


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("not your order")


def suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("tampered signature")


def refused(request: HttpRequest) -> HttpResponse:
    return HttpResponseBadRequest("no")  # no exception: Django logs "Bad Request: /refused"


async def slow(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(1)  # under ASGI Django cancels this when the client disconnects
    return HttpResponse("finally")


# Correlation IDs of the requests whose view ``hold`` is running or ran (a few kept).
_held: list[str] = []


async def hold(request: HttpRequest) -> HttpResponse:
    """A view that waits until its client gives up (Django cancels it under ASGI)."""
    _held.append(str(tracekit.correlation_id()))
    del _held[:-16]
    await asyncio.sleep(30)
    return HttpResponse("finally")


def held(request: HttpRequest) -> HttpResponse:
    """Whose requests ``hold`` has been running for, one per line."""
    return HttpResponse("\n".join(_held))


def crash(request: HttpRequest) -> HttpResponse:
    raise LookupError("card service said: \x1b[31mdeclined\x1b[0m " + "x" * 600)


def health(request: HttpRequest) -> HttpResponse:
    """Excluded from tracing: whatever request context is current here was left behind."""
    span_context = trace.get_current_span().get_span_context()
    return HttpResponse(f"{tracekit.correlation_id()} {span_context.is_valid}")


def health_deep(request: HttpRequest) -> HttpResponse:
    """A health check that checks a dependency under a span of its own."""
    with trace.get_tracer("django_site").start_as_current_span("check database"):
        return HttpResponse(str(tracekit.correlation_id()))


@receiver(request_started)
def note_whose_request_started(sender: Any, **named: Any) -> None:
    """A project's receiver of ``request_started`` (connected when the URLconf is first loaded):
    it runs before any middleware; what it sees is what its log lines and database tags get."""
    where = named.get("scope", named.get("environ"))
    if isinstance(where, dict):
        where["started_with"] = str(tracekit.correlation_id())


def started_with(request: HttpRequest) -> HttpResponse:
    """The correlation ID ``request_started``'s receivers saw for this request."""
    return HttpResponse(getattr(request, "scope", request.META).get("started_with", "unseen"))


# What the receiver of ``request_finished`` saw, most recent last (a few kept).
_finished_with: list[str] = []


@receiver(request_finished)
def note_whose_request_finished(sender: Any, **named: Any) -> None:
    """A project's receiver of ``request_finished`` (Django sends it when the server closes
    the response): the correlation ID and whether a span is current, as its log lines get."""
    span_context = trace.get_current_span().get_span_context()
    _finished_with.append(f"{tracekit.correlation_id()} {span_context.is_valid}")
    del _finished_with[:-16]


def finished_with(request: HttpRequest) -> HttpResponse:
    """What ``request_finished``'s receiver saw for the latest requests, one per line."""
    return HttpResponse("\n".join(_finished_with))


# One response answering every request, as a project's health check may keep it.
_SHARED = HttpResponse("ok")


def shared(request: HttpRequest) -> HttpResponse:
    return _SHARED


def in_english(request: HttpRequest) -> HttpResponse:
    """A view that makes English the active language (a user's saved preference), whatever
    language the URL's prefix chose."""
    translation.activate("en")
    return HttpResponse("in English")
