"""A small JSON-over-HTTP getter for the read backends: bounded time, bounded retries, one error.

stdlib urllib only, so ``tracekit trace --tempo`` adds no import cost and no dependency.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tracekit.records import BackendError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class NotFound(Exception):
    """The backend answered 404: the thing asked for does not exist (not an error)."""


class JsonClient:
    """GET JSON documents from one base URL."""

    def __init__(self, base_url: str, *, name: str, timeout: float = 10.0, retries: int = 2):
        parsed = urllib.parse.urlsplit(base_url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BackendError(f"{name} URL must be http(s)://host[:port], got {base_url[:80]!r}")
        self.base_url = base_url.strip().rstrip("/")
        self.name = name
        self.timeout = timeout
        self.retries = retries

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON at ``path``; raises NotFound on 404 and BackendError otherwise."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        for attempt in range(self.retries + 1):
            try:
                return self._get_once(url)
            except _Retryable as error:
                if attempt == self.retries:
                    raise BackendError(f"{self.name} at {self.base_url}: {error}") from None
                time.sleep(min(0.2 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    def _get_once(self, url: str) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise self._http_error(error) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise _Retryable(f"unreachable ({_short(str(reason))})") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise BackendError(f"{self.name} answered more than {MAX_RESPONSE_BYTES} bytes")
        return self._decode(body)

    def _http_error(self, error: urllib.error.HTTPError) -> Exception:
        if error.code == 404:
            return NotFound()
        detail = _short(error.read(300).decode("utf-8", "replace"))
        message = f"HTTP {error.code}" + (f": {detail}" if detail else "")
        if error.code in RETRYABLE_STATUS:
            return _Retryable(message)
        return BackendError(f"{self.name} at {self.base_url} answered {message}")

    def _decode(self, body: bytes) -> Any:
        """One JSON document, or a list of them for a streamed (newline-delimited) answer."""
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError:
            pass
        try:
            return [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError:
            raise BackendError(
                f"{self.name} at {self.base_url} answered something not JSON"
            ) from None


class _Retryable(Exception):
    """A failure worth another try (connection refused, timeout, 502/503/504, 429)."""


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:limit]
