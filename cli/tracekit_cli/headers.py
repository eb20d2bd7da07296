"""Headers for a remote read backend: ``--header NAME=VALUE`` and ``TRACEKIT_BACKEND_HEADERS``.

``--header`` also takes curl's ``NAME: VALUE``. The variable uses the format of
``OTEL_EXPORTER_OTLP_HEADERS``: ``name=value`` pairs separated by
commas, values percent-encoded (``Authorization=Basic%20dXNlcjp0b2tlbg==``). ``--header`` values
are taken as typed and win over the variable's for the same name. Values are secrets (tokens,
tenant ids): an error names the header, never its value.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

HEADERS_ENV = "TRACEKIT_BACKEND_HEADERS"
MAX_HEADERS = 32
MAX_VALUE_CHARS = 8192
# RFC 9110 token characters
_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# what urllib would send as the request line and framing: never set by hand
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "accept",
             "accept-encoding"}  # fmt: skip


def parse_headers(typed: Iterable[str], environment: str | None) -> dict[str, str]:
    """The headers to send: the variable's, then ``--header``'s; ValueError names a bad one."""
    headers: dict[str, str] = {}
    for name, value in _from_environment(environment) + [_pair(t, "--header") for t in typed]:
        for known in [k for k in headers if k.lower() == name.lower()]:
            del headers[known]
        headers[name] = value
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} backend headers")
    return headers


def _separator(item: str) -> str:
    """``=``, or ``:`` where one comes before any ``=`` (curl's ``NAME: VALUE``)."""
    colon, equals = item.find(":"), item.find("=")
    return ":" if colon != -1 and (equals == -1 or colon < equals) else "="


def _from_environment(text: str | None) -> list[tuple[str, str]]:
    items = [item for item in (text or "").split(",") if item.strip()]
    return [_pair(item, HEADERS_ENV, decode=True) for item in items]


def _pair(item: str, origin: str, *, decode: bool = False) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE), checked; the error never repeats the value. ``--header``
    also takes ``NAME: VALUE`` as curl's ``-H`` does (no header name holds ``=`` or ``:``, so the
    first of them ends it): typed so, every header was refused as no ``NAME=VALUE``."""
    name, equals, value = item.partition("=" if decode else _separator(item))
    name, value = name.strip(), value.strip()
    if not equals or not _NAME.match(name):
        shown = repr(name[:40]) if _NAME.match(name[:40] or "-") else "a header"
        form = "NAME=VALUE" if decode else "NAME=VALUE or NAME: VALUE"
        raise ValueError(f"{origin}: {shown} is not {form} with a valid header name")
    if name.lower() in _RESERVED:
        raise ValueError(f"{origin}: {name} is set by tracekit itself")
    value = urllib.parse.unquote(value) if decode else value
    unsendable = [char for char in value if not _sendable(char)]
    if len(value) > MAX_VALUE_CHARS or any(char <= "\xff" for char in unsendable):
        raise ValueError(f"{origin}: the value of {name} is too long or has control characters")
    if unsendable:
        raise ValueError(
            f"{origin}: the value of {name} has a character no HTTP header carries (only"
            " Latin-1: a typographic quote or a symbol pasted with it?)"
        )
    return name, value


def _sendable(char: str) -> bool:
    """Visible Latin-1 text, spaces and tabs: no line break can split the request."""
    return char == "\t" or (" " <= char <= "~") or ("\xa0" <= char <= "\xff")
