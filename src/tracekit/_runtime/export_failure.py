"""What an OTLP export's failure was, read from the SDK's own lines about it.

The exporter tells its caller only that an export failed; its log lines say why: an HTTP
status (``Failed to export spans batch code: 401, reason: …``), the HTTP client's error
(``Transient error <exception> …``), or a gRPC status (``error code: StatusCode.…``).
``ExportWatch`` sees those lines (it filters the
exporter's loggers) and hands each to ``failure_of``; the outage's warning then says what
happened instead of "unreachable": a 401 sent users to start a collector that was running.

Nothing the server chose reaches the line: a status is named by its number and the standard
phrase (not the server's reason phrase), a TLS error by OpenSSL's words, bounded and escaped.
"""

from __future__ import annotations

import http
import http.client
import logging
import re
import ssl

from tracekit._utf8 import escaped_line

_UNKNOWN_SIGNER = frozenset({18, 19, 20, 21})  # X509_V_ERR_* of a CA no one here trusts
_CHAIN_LIMIT = 8  # exceptions followed from the HTTP client's error to its cause
_REASON_LIMIT = 80


def failure_of(record: logging.LogRecord, endpoint: str) -> str | None:
    """What the SDK's line ``record`` says went wrong sending to ``endpoint`` (a URL), as
    ``<what happened>; they are dropped until <what mends it>``; ``""`` when it says nothing
    more than "unreachable" (a refused connection, a timeout, a 5xx); None when it names no
    cause (the SDK's last line after its retries: "…due to timeout, max retries…")."""
    args = record.args if isinstance(record.args, tuple) else ()
    status = args[1] if "code: %s" in str(record.msg) and len(args) > 1 else None
    if type(status) is int:
        return _status_failure(status) if 400 <= status < 500 else ""
    grpc_status = next(
        (getattr(a, "name", None) for a in args if type(a).__name__ == "StatusCode"), None
    )
    if isinstance(grpc_status, str):
        return _grpc_failure(grpc_status, args[-1], endpoint)
    error = next((a for a in args if isinstance(a, BaseException)), None)
    return None if error is None else _connection_failure(error, endpoint)


def refused(record: logging.LogRecord) -> bool:
    """Whether the SDK's line ``record`` says the endpoint refused the connection: nothing
    listens there (the HTTP client's ``ConnectionRefusedError``, or gRPC core's words)."""
    args = record.args if isinstance(record.args, tuple) else ()
    errors = [e for a in args if isinstance(a, BaseException) for e in _chain(a)]
    if any(isinstance(e, ConnectionRefusedError) for e in errors):
        return True
    return any(isinstance(a, str) and "Connection refused" in a for a in args)


_CREDENTIALS = "Set the credentials it wants in OTEL_EXPORTER_OTLP_HEADERS (name=value)."
# The gRPC exporter's final line names the call's status code (``StatusCode.UNAUTHENTICATED``);
# its details, which the server chose, are left out.
_GRPC_FAILURES = {
    code: f"it answered {code}; they are dropped until it takes them. {advice}"
    for code, advice in {
        "UNAUTHENTICATED": _CREDENTIALS,
        "PERMISSION_DENIED": _CREDENTIALS,
        "UNIMPLEMENTED": "Is it an OTLP/gRPC endpoint (4317; OTLP/HTTP's is 4318)?",
    }.items()
}


# A channel that could not connect: gRPC core's own words (the call never reached a server),
# then the last address's error, OpenSSL's reason among them for a failed handshake:
# "...: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL
# routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate" (grpcio before
# 1.60 wrote "Ssl handshake failed"; one built on OpenSSL, "SSL routines::certificate verify
# failed").
_GRPC_NOT_CONNECTED = "failed to connect to all addresses;"
# gRPC core's words for a server that answered, but not in HTTP/2 (an HTTP/1.1 server, such as
# an OTLP/HTTP port: "...: Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got
# frame type 80) (Trying to connect an http1.x server (HTTP status 505))").
_GRPC_NOT_HTTP2 = "Expected SETTINGS frame as the first frame"
# An exporter at the other OTLP protocol's port: the collector is there, on another port.
_HTTP_AT_GRPC_PORT = (
    "it answered in HTTP/2, as an OTLP/gRPC port (4317) does, not in OTLP/HTTP; they are"
    " dropped until it takes them. Send to its OTLP/HTTP port (4318), or set"
    " OTEL_EXPORTER_OTLP_PROTOCOL=grpc."
)
_GRPC_AT_HTTP_PORT = (
    "it answered, but not in HTTP/2 as OTLP/gRPC does (an OTLP/HTTP port, 4318, answers in"
    " HTTP/1.1); they are dropped until it takes them. Send to its OTLP/gRPC port (4317), or"
    " unset OTEL_EXPORTER_OTLP_PROTOCOL for OTLP/HTTP."
)
_GRPC_HANDSHAKE = re.compile(
    r"handshake failed\b.*?SSL routines:[^:]*:([^:]+)(?::\s*([^:]*))?", re.I
)
_GRPC_WRONG_HOST = "Hostname Verification Check failed"
_GRPC_UNKNOWN_SIGNER = ("self signed", "self-signed", "local issuer", "the first certificate")


def _grpc_failure(code: str, details: object, endpoint: str) -> str:
    """The gRPC exporter's line: a status the server answered (its details, the server's
    choice, left out), or, for a channel that could not connect, a server that answered, but
    not in HTTP/2, or a TLS handshake that failed, as gRPC core tells it in the details."""
    if code != "UNAVAILABLE" or not str(details).startswith(_GRPC_NOT_CONNECTED):
        return _GRPC_FAILURES.get(code, "")
    if _GRPC_NOT_HTTP2 in str(details):
        return _GRPC_AT_HTTP_PORT
    if _GRPC_WRONG_HOST in str(details):
        return _certificate_refused("hostname mismatch", unknown_signer=False)
    handshake = _GRPC_HANDSHAKE.search(str(details))
    if handshake is None:
        return ""
    reason, message = handshake.group(1).strip(), handshake.group(2) or ""
    if reason.replace("_", " ").lower() == "certificate verify failed":  # BoringSSL's, OpenSSL's
        unknown = any(words in message for words in _GRPC_UNKNOWN_SIGNER)
        return _certificate_refused(_reason(message or reason), unknown_signer=unknown)
    question = "Does it serve gRPC over TLS on that port?"
    if "://" not in endpoint:  # OTEL_EXPORTER_OTLP_ENDPOINT=collector:4317, a common form
        question += f" Without http:// the exporter uses TLS: for plaintext, http://{endpoint}."
    return _handshake_failed(_reason(reason), question)


def _certificate_refused(why: str, unknown_signer: bool) -> str:
    dropped = f"its TLS certificate was not accepted ({why}); they are dropped until it is."
    if unknown_signer:
        return f"{dropped} Name the CA that signed it in OTEL_EXPORTER_OTLP_CERTIFICATE."
    return f"{dropped} The endpoint must name a host it was issued for, and it must be valid."


def _handshake_failed(why: str, question: str) -> str:
    return f"the TLS handshake failed ({why}); they are dropped until it succeeds. {question}"


def _status_failure(status: int) -> str:
    try:
        answer = f"it answered {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        answer = f"it answered {status}"
    dropped = f"{answer}; they are dropped until it takes them."
    if status in (401, 403):
        return f"{dropped} {_CREDENTIALS}"
    if status == 404:
        return (
            f"{dropped} Is the path OTLP/HTTP's? OTEL_EXPORTER_OTLP_ENDPOINT takes the base URL"
            " (http://host:4318), to which /v1/<signal> is added."
        )
    return dropped


def _connection_failure(error: BaseException, endpoint: str) -> str:
    causes = _chain(error)
    tls = next((e for e in causes if isinstance(e, ssl.SSLError)), None)
    if isinstance(tls, ssl.SSLCertVerificationError):
        why = _reason(tls.verify_message or tls.reason or "not verified")
        return _certificate_refused(why, tls.verify_code in _UNKNOWN_SIGNER)
    if tls is not None:
        why = _reason(tls.reason or type(tls).__name__)
        return _handshake_failed(why, "Does it serve HTTPS on that port?")
    if any(_http2_settings(e) for e in causes):
        return _HTTP_AT_GRPC_PORT
    closed = (ConnectionResetError, http.client.RemoteDisconnected)
    if endpoint.startswith("http://") and any(isinstance(e, closed) for e in causes):
        return (
            "it took the connection and closed it without an answer; they are dropped until it"
            " answers. If it serves HTTPS, the endpoint must start with https://."
        )
    return ""


def _http2_settings(error: BaseException) -> bool:
    """Whether ``error`` is the HTTP client reading, where a status line belongs, the SETTINGS
    frame an HTTP/2 server (every gRPC server) sends first: a 9-byte frame header of type 4 on
    stream 0."""
    if not isinstance(error, http.client.BadStatusLine) or not error.args:
        return False
    line = str(error.args[0])  # what came where the status line belongs
    return len(line) >= 9 and line[3] == "\x04" and line[5:9] == "\x00" * 4


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it: the HTTP client wraps its causes in its own errors (in
    ``args``, ``reason``, ``__cause__``), a few deep."""
    seen: list[BaseException] = []
    pending = [error]
    while pending and len(seen) < _CHAIN_LIMIT:
        current = pending.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        inner = [*current.args, getattr(current, "reason", None), current.__cause__]
        pending += [e for e in inner if isinstance(e, BaseException)]
    return seen


def _reason(text: object) -> str:
    return escaped_line(text, _REASON_LIMIT)
