"""A small JSON-over-HTTP getter for the read backends: bounded time, bounded retries, one error.

stdlib urllib only, so ``tracekit trace --tempo`` adds no import cost and no dependency. Header
values (tenant ids, tokens) and URL credentials are secrets: they are sent, never repeated in an
error, and never sent on to another host by a redirect. The connections under it (kept between
requests, shut at a request's deadline) live in ``backends._connections``, the checks of the
URL and headers given in ``backends._urls``; this module decides what to ask, when to try again,
and how to say what went wrong.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import html as html_text
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from typing import Any

from tracekit._utf8 import clean_text, without_terminal_sequences
from tracekit.backends import _deep_json as deep_json
from tracekit.backends._connections import (
    CaFileThatWaits,
    KeepAlive,
    Sockets,
    TrackedHTTPHandler,
    TrackedHTTPSHandler,
    TrackedSSLSocket,
    connections,
)
from tracekit.backends._urls import proxy_for, secrets_of, split_url
from tracekit.records import BackendError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# OpenSSL's verify codes (X509_V_ERR_*) of a certificate whose signer is not trusted here
# (unable to get issuer certificate, self-signed, self-signed in chain, unable to get local
# issuer, unable to verify leaf), and of one issued for another host (hostname, IP mismatch)
_UNKNOWN_SIGNER = frozenset({2, 18, 19, 20, 21})
_OTHER_HOST = frozenset({62, 64})
# read of an error answer (and of it once unzipped): a gateway's JSON error can carry a stack
# trace beside its message, which is what is shown, in at most 200 characters
MAX_ERROR_BYTES = 64 * 1024
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# What this client reads, whatever a caller's headers say (in any case: "accept" too): an Accept
# of protobuf (Tempo answers it so) or an encoding it cannot undo made every answer unreadable.
# gzip: a search answer of whole traces is tens of MB of JSON, a tenth of that gzipped
_OWN_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
REDACTED = "[redacted]"
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")  # an unclosed tag too: the body may be cut at MAX_ERROR_BYTES
_NO_PROXY = "NO_PROXY lists the hosts to reach without it"
_GRAFANA_PROXY = "/api/datasources/proxy/"  # Grafana's path to a data source's own API
_TUNNEL_REFUSED = "Tunnel connection failed: "  # http.client's words for a CONNECT refused


class NotFound(Exception):
    """The backend answered 404; ``body`` (short, printable) and ``document`` (the body decoded
    as JSON, None when it is not JSON) tell a missing thing from a missing endpoint (Go servers
    answer ``404 page not found`` for a route they do not have, a proxy with a page of its own)."""

    def __init__(self, body: str, document: Any = None) -> None:
        super().__init__(body)
        self.body = body
        self.document = document

    @property
    def no_such_endpoint(self) -> bool:
        """True for the router's own 404 (the API is not there), not the API's "not found"."""
        return self.body == "404 page not found"


class AnswerTooLarge(BackendError):
    """The answer is over ``MAX_RESPONSE_BYTES`` (once unzipped), or more than there is memory
    to decode: a smaller question may fit. ``what`` says how large, for a message of the
    caller's (``58 MiB of JSON, more than there is memory to read``)."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"{name} answered {what}")
        self.what = what


class HTTPStatusError(BackendError):
    """The backend refused the request with an HTTP status; ``detail`` is its short reason."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class JsonClient:
    """GET JSON documents from one base URL (which may carry a path prefix) with fixed headers.

    ``timeout``: seconds for one request, its whole answer; ``total_timeout``: seconds for every
    request and retry from the first request on (the CLI's ``--timeout``, which bounds the
    command): a request gets what is left, and no retry starts once it is spent."""

    def __init__(
        self, base_url: str, *, name: str, timeout: float = 10.0, retries: int = 2,
        headers: Mapping[str, str] | None = None, total_timeout: float | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.base_url, credentials = split_url(base_url, name)
        given = {**credentials, **(headers or {})}
        sent = {k: v for k, v in given.items() if k.title() not in _OWN_HEADERS}
        self.headers = {**sent, **_OWN_HEADERS}
        self._secrets = secrets_of(sent.values())
        self.timeout = timeout
        self.total_timeout = total_timeout
        self._deadline: float | None = None  # time.monotonic() when total_timeout ends
        self._tries = 0  # requests sent, retries too
        self.retries = retries
        self._proxy = proxy_for(self.base_url)
        self._keep_alive = KeepAlive()
        self._opener = urllib.request.build_opener(
            _SameHostRedirects(),
            TrackedHTTPHandler(self._keep_alive),
            TrackedHTTPSHandler(self._keep_alive),
        )

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON at ``path``; raises NotFound on 404 and BackendError otherwise."""
        url = self.base_url + path
        if params:
            # a name or ID read from an answer may hold a lone surrogate (JSON's "\ud800"), which
            # UTF-8 cannot: sent as U+FFFD, as the store keeps such text, not a UnicodeEncodeError
            url += "?" + urllib.parse.urlencode({k: clean_text(v) for k, v in params.items()})
        if self.total_timeout is not None and self._deadline is None:
            self._deadline = time.monotonic() + self.total_timeout
        for attempt in range(self.retries + 1):
            self._tries += 1
            try:
                return self._get_within_timeout(url, self._time_left())
            except _Retryable as error:
                if self._tries > 1 and not self._has_time_for(0):  # cut short by the deadline
                    raise self._out_of_time() from None
                wait = max(min(0.2 * 2**attempt, 1.0), error.retry_after or 0)
                asked = error.retry_after
                if asked is not None and (asked > self.timeout or not self._has_time_for(asked)):
                    asks = f" (it asks to retry after {error.retry_after:.0f} s)"
                    raise BackendError(f"{self.where}: {error}{asks}") from None
                if attempt == self.retries or not self._has_time_for(wait):
                    raise BackendError(f"{self.where}: {error}") from None
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _time_left(self) -> float:
        """How long the next try may take: ``timeout``, or what is left of ``total_timeout``;
        BackendError once that is spent (the requests still to make are not made)."""
        if self._deadline is None:
            return self.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._out_of_time()
        return min(self.timeout, left)

    def _out_of_time(self) -> BackendError:
        return BackendError(
            f"{self.where}: its answers took longer than the {self.total_timeout:g} s given to "
            "the whole command (--timeout): a longer timeout may let it finish"
        )

    def _has_time_for(self, wait: float) -> bool:
        """Whether a retry after ``wait`` seconds starts within ``total_timeout``."""
        return self._deadline is None or time.monotonic() + wait < self._deadline

    @property
    def where(self) -> str:
        """The backend as its errors name it: its kind and base URL (without credentials)."""
        return f"{self.name} at {self.base_url}"

    def redact(self, text: str) -> str:
        """``text`` with every header value this client sends replaced (a server may echo one)."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _get_within_timeout(self, url: str, limit: float) -> Any:
        """``_get_once`` bounded by ``limit`` seconds as a whole. The socket's timeout bounds each
        read, so a server sending its answer (head or body) a byte at a time would hold the
        call for hours: the request runs in a thread, and at the deadline its connections are
        shut, which ends its reads at once."""
        outcome: list[tuple[bool, Any]] = []
        opened = Sockets()

        def fetch() -> None:
            connections.opened = opened
            try:
                outcome.append((True, self._get_once(url, limit)))
            except BaseException as error:  # handed to the caller as it is
                outcome.append((False, error))

        worker = threading.Thread(target=fetch, name="tracekit-backend-get", daemon=True)
        worker.start()
        worker.join(limit)
        if not outcome:
            opened.abandoned = True  # its connections are not kept, nor tried again
            for sock in list(opened):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            raise self._timed_out(opened, limit)
        succeeded, value = outcome.pop()
        try:
            if not succeeded:
                raise value
            return value
        finally:
            del value  # no cycle through the re-raised exception's traceback

    def _get_once(self, url: str, limit: float) -> Any:
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=limit) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
                # read(n) returns what came before the connection closed, without a word
                cut_short = bool(response.length) and len(body) <= MAX_RESPONSE_BYTES
                encoding = _content_encoding(response.headers)
        except urllib.error.HTTPError as error:
            raise self._http_error(error) from None
        except ssl.SSLError as error:  # as the answer is read: TLS 1.3 refuses after handshaking
            raise BackendError(self._tls_failure(error)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ssl.SSLError):  # the server answered: no retry will change it
                raise BackendError(self._tls_failure(reason)) from None
            if isinstance(reason, TimeoutError):
                raise self._timed_out(connections.opened or [], limit) from None
            if self._proxy and str(reason).startswith(_TUNNEL_REFUSED):  # the proxy answered
                raise BackendError(self._tunnel_refused(str(reason))) from None
            raise self._unreachable(self.printable(str(reason))) from None
        except CaFileThatWaits as error:  # nothing was sent: SSL_CERT_FILE is the problem
            shown = self.printable(error.path, 120)
            raise BackendError(
                f"{self.where}: SSL_CERT_FILE names {shown}, which is {error.kind}, not a "
                "regular file: name the PEM file of the CAs to trust"
            ) from None
        except http.client.InvalidURL as error:  # nothing was sent: the URL is the problem
            url_of = f"the proxy {self._proxy}," if self._proxy else f"{self.name} URL"
            raise BackendError(f"{url_of} is not valid: {self.printable(str(error))}") from None
        except http.client.HTTPException as error:  # not HTTP, or cut short
            raise self._broken_answer(type(error).__name__) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise self._too_large()
        if cut_short:
            raise self._broken_answer("cut short")
        return self._decode(self._decompressed(body, encoding))

    def _decompressed(self, body: bytes, encoding: str) -> bytes:
        """The body as it was before the server gzipped it, bounded as any answer (a few KB of
        gzip can hold gigabytes)."""
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise BackendError(f"{self.where} answered in an encoding tracekit did not ask for "
                               f"({self.printable(encoding, 40)})")  # fmt: skip
        try:
            plain = _gunzip(body, MAX_RESPONSE_BYTES + 1)
        except (zlib.error, EOFError):
            raise self._broken_answer("gzip") from None
        if len(plain) > MAX_RESPONSE_BYTES:
            raise self._too_large()
        return plain

    def _timed_out(self, opened: list[socket.socket], limit: float) -> _Retryable:
        """A request that ran out of time: before a connection, the server is unreachable;
        after, it is there but slow (a search over days of traces), which a longer timeout
        may answer: "unreachable" sent users looking at the network. In between, a server
        that took the connection and never finished the TLS handshake (a port that is not
        HTTPS and waits, a proxy holding the connection) is neither."""
        if not opened:
            return self._unreachable("timed out")
        if any(isinstance(s, TrackedSSLSocket) and not s.handshaken for s in opened):
            return _Retryable(f"took the connection but finished no TLS handshake within "
                              f"{limit:.3g} s (timed out): does it serve HTTPS on that "
                              "port?")  # fmt: skip
        return _Retryable(f"no whole answer within {limit:.3g} s (timed out: a slow "
                          "search may need a longer timeout)")  # fmt: skip

    def _unreachable(self, why: str) -> _Retryable:
        """No connection made, to the backend or to the proxy the environment sends it through:
        "unreachable" alone sent users to look at a backend that was up, when the proxy in
        ``HTTPS_PROXY`` was down or refused the connection."""
        if self._proxy is None:
            return _Retryable(f"unreachable ({why})")
        return _Retryable(f"unreachable through the proxy {self._proxy} ({why}; {_NO_PROXY})")

    def _tunnel_refused(self, reason: str) -> str:
        """The proxy's refusal of a tunnel to an https:// backend (``CONNECT``), its status and
        reason as http.client words them (``Tunnel connection failed: 407 Proxy Authentication
        Required``): an answer, which a retry would get again, not an unreachable backend."""
        status = self.printable(reason.removeprefix(_TUNNEL_REFUSED), 80)
        hint = " (give its user and password in that variable)" if status[:4] == "407 " else ""
        return f"{self.where}: the proxy {self._proxy} refused a connection to it ({status}){hint}"

    def _broken_answer(self, why: str) -> BackendError:
        return BackendError(f"{self.where} sent a broken HTTP answer ({why})")

    def _too_large(self) -> AnswerTooLarge:
        return AnswerTooLarge(self.name, f"more than {MAX_RESPONSE_BYTES} bytes")

    def _tls_failure(self, error: ssl.SSLError) -> str:
        """What went wrong in the TLS handshake, and what the user can do about it."""
        if isinstance(error, ssl.SSLCertVerificationError):
            return self._untrusted(error)
        if error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":  # mutual TLS
            return (f"{self.where}: it asks for a TLS client certificate, which tracekit does "
                    "not send (tlsv13 alert certificate required); reach it through a proxy "
                    "that holds one")  # fmt: skip
        why = self.printable(error.reason or type(error).__name__)
        return f"{self.where}: the TLS handshake failed ({why}); does it serve HTTPS on that port?"

    def _untrusted(self, error: ssl.SSLCertVerificationError) -> str:
        """A certificate that failed verification. Naming a CA in SSL_CERT_FILE mends only an
        unknown signer: said of a certificate for another host, or an expired one, it sent users
        to trust a CA they trusted already."""
        why = self.printable(error.verify_message or error.reason or "not verified")
        if error.verify_code in _OTHER_HOST:
            return (f"{self.where}: its TLS certificate is for another host ({why}); the URL "
                    "must name a host the certificate was issued for")  # fmt: skip
        if error.verify_code not in _UNKNOWN_SIGNER:
            return f"{self.where}: its TLS certificate is not valid ({why})"
        return f"{self.where}: its TLS certificate is not trusted ({why}); {self._ca_file()}"

    def _ca_file(self) -> str:
        """What to do about a certificate whose signer is not trusted, given SSL_CERT_FILE: a
        path OpenSSL cannot read, or a file with no certificate in it, is passed over without a
        word, and "name that CA's PEM file in SSL_CERT_FILE" was told to a user who had."""
        named = os.environ.get("SSL_CERT_FILE")
        if not named:
            return "if a private CA signed it, name that CA's PEM file in SSL_CERT_FILE"
        shown = self.printable(named, 120)
        try:
            ssl.create_default_context(cafile=named)
        except OSError as error:  # ssl.SSLError too: a file without a PEM certificate
            why = error.strerror if not isinstance(error, ssl.SSLError) else None
            what = f"cannot be read ({why.lower()})" if why else "holds no PEM certificate"
            return f"SSL_CERT_FILE names {shown}, which {what}: name the private CA's PEM file"
        return (f"SSL_CERT_FILE names {shown}, whose CAs did not sign it: name the PEM file of "
                "the CA that did")  # fmt: skip

    def _http_error(self, error: urllib.error.HTTPError) -> Exception:
        body = _error_body(error)
        error.close()  # its connection is kept for the next request when the body was all read
        document = _json_or_none(body)
        detail = self.printable(_reason(body, document))
        if error.code == 404:
            return NotFound(detail, document)
        message = f"HTTP {error.code}" + (f": {detail}" if detail else "")
        if error.code in RETRYABLE_STATUS:
            return _Retryable(message, _retry_after(error.headers.get("Retry-After")))
        hint = self._refused(document) if error.code in (401, 403) else ""
        if error.code == 407 and self._proxy is not None:  # the proxy's answer, not the backend's
            hint = f" from the proxy {self._proxy} (give its user and password in that variable)"
        if 300 <= error.code < 400:
            hint = self._not_followed(error.url, error.headers.get("Location"))
        return HTTPStatusError(f"{self.where} answered {message}{hint}", error.code, detail)

    def _refused(self, document: Any) -> str:
        """What to check when a request was refused: its tenant and credential headers, unless
        Grafana itself answered (its errors carry a ``messageId``) at a URL without a path: a
        Grafana's own, which no credential makes a Tempo, Jaeger or Prometheus API. Below a path
        (a data-source proxy, a hosted backend's prefix) the credentials are what to check."""
        grafanas = isinstance(document, dict) and "messageId" in document
        if not grafanas or urllib.parse.urlsplit(self.base_url).path.strip("/"):
            return " (check the tenant and credential headers)"
        return (f"; that is Grafana, not {self.name}: give the URL of {self.name} itself, or"
                f" Grafana's data-source proxy for it ({self.base_url}{_GRAFANA_PROXY}uid/UID)"
                " with a token header")  # fmt: skip

    def _not_followed(self, url: str, location: str | None) -> str:
        """Where a redirect tracekit would not follow led (an SSO proxy sending the request to
        its identity provider), by scheme and host: the path and query carry the proxy's state."""
        try:
            target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location or ""))
        except ValueError:  # an unclosed "[" of an IPv6 address
            return (", a redirect to a Location that is not a valid URL: is the URL the API's, "
                    "and are the credential headers right?")  # fmt: skip
        if not location or _followed(url, target.geturl()):  # a loop on one host
            return ""
        shown = self.printable(f"{target.scheme}://{target.netloc.rpartition('@')[2]}", 80)
        return (f", a redirect to {shown} that tracekit does not follow (another host, or https "
                "to http: the headers would go with it): is the URL the API's, and are the "
                "credential headers right?")  # fmt: skip

    def _decode(self, body: bytes) -> Any:
        try:  # an empty body too: neither Tempo nor Jaeger answers 200 with nothing
            # bytes that are no UTF-8 as U+FFFD, as Go's encoding/json writes them: Jaeger's
            # pdata marshaler copies a string's bytes raw, and one bad attribute sank the answer
            return deep_json.loads(body.decode("utf-8-sig", "replace"), _int_or_float)
        except ValueError:
            raise BackendError(self._not_json(body)) from None
        except MemoryError:  # as Python objects, JSON takes several times its size
            what = f"{len(body) // 2**20} MiB of JSON, more than there is memory to read"
            raise AnswerTooLarge(self.where, what) from None

    def _not_json(self, body: bytes) -> str:
        """Why the answer is no JSON; a page (a login page the request was sent on to) by its
        title: the URL is not the API's, or the credentials were not taken."""
        start = body[:2000].decode("utf-8", "replace")
        if not start.lstrip().startswith("<"):
            return f"{self.where} answered something not JSON"
        title = self.printable(_page_title(start), 80)
        return (f"{self.where} answered an HTML page ({title}), not JSON: is the URL its API's, "
                "and are the credential headers right?")  # fmt: skip

    def printable(self, text: str, limit: int = 200) -> str:
        """``text`` as one line of printable characters, at most ``limit``, secrets redacted:
        what a server sent, fit for an error or a warning: its terminal sequences taken out (a
        colour code's ``[31m`` is noise in the line), other control characters blanked."""
        text = without_terminal_sequences(text)
        flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        return self.redact(flat)[:limit]


class _Retryable(Exception):
    """A failure worth another try (connection refused, timeout, 502/503/504, 429), and how
    long the server asked to wait first (``Retry-After``), when it did."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²" is a digit to isdigit, not to float
        return float(text[:12])  # bounded: a thousand-digit number is still "too long"
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT
        moment = moment.replace(tzinfo=datetime.UTC)
    return max(0.0, moment.timestamp() - time.time())


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same host: the headers are secrets. Within one scheme the
    port stays too; from http to https (a proxy moving plain HTTP to TLS, usually to another
    port) it may change; from https to http, never."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if not _followed(req.full_url, newurl):
            return None  # urllib then raises the 3xx as an HTTPError
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def http_error_302(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> Any:
        """urllib's redirect, except that a Location it cannot parse (an unclosed "[", which an
        escape sequence in the host also makes) is not followed, as another host's is: urllib
        raised ValueError."""
        location = headers.get("Location") or headers.get("URI") or ""
        try:
            urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, location))
        except ValueError:
            return None  # urllib then raises the 3xx as an HTTPError
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _followed(old_url: str, new_url: str) -> bool:
    """Whether ``_SameHostRedirects`` follows a redirect from ``old_url`` to ``new_url``."""
    old, new = urllib.parse.urlsplit(old_url), urllib.parse.urlsplit(new_url)
    upgrade = (old.scheme, new.scheme) == ("http", "https") and old.hostname == new.hostname
    return upgrade or (old.scheme, old.netloc) == (new.scheme, new.netloc)


def _content_encoding(headers: Any) -> str:
    return str(headers.get("Content-Encoding") or "").strip().lower()


def _gunzip(data: bytes, most: int) -> bytes:
    """At most ``most`` bytes of the gzip stream ``data``; EOFError when it is cut short."""
    inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer around the data
    plain = inflater.decompress(data, most)
    if len(plain) < most and not inflater.eof:
        raise EOFError("gzip stream cut short")
    return plain


def _error_body(error: urllib.error.HTTPError) -> str:
    """The start of an error answer's body; "" when even that arrives broken."""
    gzipped = _content_encoding(error.headers) == "gzip"
    try:
        raw = error.read(MAX_ERROR_BYTES)
        if gzipped:
            raw = zlib.decompressobj(wbits=31).decompress(raw, MAX_ERROR_BYTES)
        return raw.decode("utf-8", "replace")
    except (OSError, http.client.HTTPException, zlib.error):
        return ""


def of_another_api(document: Any, keys: frozenset[str]) -> bool:
    """Whether ``document`` is a JSON object none of whose keys the expected answer has: another
    API's (``{"data": null}`` of Jaeger's UI API, a gateway's ``{"errors": [...]}``), whose
    absent fields read as "nothing found". An empty object is the expected answer with nothing
    in it: protobuf's JSON leaves empty fields out."""
    return isinstance(document, dict) and bool(document) and not keys & document.keys()


def _int_or_float(digits: str) -> int | float:
    """A JSON integer; one longer than any 64-bit number (20 characters) as a float, which its
    field then refuses as out of range. Python refuses to read an integer of over 4,300 digits:
    one such number made the whole answer "not JSON"."""
    return int(digits) if len(digits) <= 20 else float(digits)


def _json_or_none(body: str) -> Any:
    """``body`` decoded as JSON; None when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        return None


def _reason(body: str, document: Any) -> str:
    """The message of a JSON error body (Jaeger: ``{"error": {"message": ...}}``; a gateway such
    as Grafana's data-source proxy: ``{"message": ...}``; Prometheus-style: ``{"error": ...}``),
    the title of an HTML page (a proxy's ``502 Bad Gateway``, a login page), else the body."""
    found = document if isinstance(document, dict) else {}
    error = found.get("error")
    for message in (error.get("message") if isinstance(error, dict) else None,
                    found.get("message"), error):  # fmt: skip
        if isinstance(message, str) and message:
            return message
    return _page_title(body) if body.lstrip().startswith("<") else body


def _page_title(html: str) -> str:
    """An HTML page's title, else its text without tags: a terminal line, not markup."""
    title = _TITLE.search(html)
    return html_text.unescape(title.group(1) if title else _TAG.sub(" ", html))
