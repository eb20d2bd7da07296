"""Trace headers other than W3C's, both ways: B3 (single and multi), Jaeger and AWS X-Ray.

Service meshes speak these (Envoy, Istio and Zipkin-era services B3; AWS App Mesh, ALB, API
Gateway and Lambda X-Ray). Each format reads lower-case header names mapped to their values (the
shape the server middleware and the message-header reader collect) and writes through a
``put(name, value)`` callable. The wire formats follow OpenTelemetry's reference propagators
(``opentelemetry-propagator-b3``, ``-jaeger``, ``-aws-xray``), which tests compare against in
both directions; unlike them, parsing here is bounded and silent (an untrusted value is never
logged), and a repeated header is ambiguous and ignored, as for ``traceparent``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, NamedTuple, Protocol
from urllib.parse import unquote

Headers = Mapping[str, Sequence[str]]
Put = Callable[[str, str], None]

SAMPLED = 0x01
_MAX_VALUE = 512  # longer than any valid value of these formats
_HEX16_32 = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_HEX_UP_TO_32 = re.compile(r"[0-9a-fA-F]{1,32}")
_HEX_UP_TO_16 = re.compile(r"[0-9a-fA-F]{1,16}")


class Remote(NamedTuple):
    """A caller's span read from trace headers: ids, W3C trace-flags bits, the fields of the
    header that the next hop gets unchanged (X-Ray's ``Lineage`` and the like; "" for none),
    whether the caller left the sampling decision to this hop (its flags then say none), and
    whether the caller sent a decision alone (the ids are made up here)."""

    trace_id: int
    span_id: int
    flags: int
    forwarded: str = ""
    deferred: bool = False
    decision_only: bool = False


class TraceFormat(Protocol):
    """One trace-header format: the headers it uses, how to read and write them."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The header names of its set: those it writes, and any it leaves out (a caller's own
        gives way to the set written); it reads them in lower case (as every reader keys them)."""
        ...

    def extract(self, headers: Headers) -> Remote | None:
        """The caller's span, or None when the headers are absent, repeated or invalid."""
        ...

    def inject(
        self, trace_id: int, span_id: int, sampled: bool, put: Put, forwarded: str = ""
    ) -> None:
        """Write the headers naming this span as the parent, with the ``forwarded`` fields
        its ``extract`` read from the caller in this trace."""
        ...


def one(headers: Headers, name: str) -> str | None:
    """The single, bounded value of header ``name``; None if absent, repeated or oversized."""
    values = headers.get(name)
    if not values or len(values) != 1 or len(values[0]) > _MAX_VALUE:
        return None
    return values[0].strip(" \t")


def _remote(
    trace_id: int, span_id: int, sampled: bool, forwarded: str = "", deferred: bool = False
) -> Remote | None:
    if trace_id == 0 or span_id == 0:
        return None
    return Remote(trace_id, span_id, SAMPLED if sampled else 0, forwarded, deferred)


def _not_sampled_new_trace() -> Remote:
    """A caller's decision not to sample, sent without ids (B3's ``b3: 0``): this hop starts a
    new trace under a parent of made-up ids, not sampled, so neither it nor the next hops record
    it, as a Zipkin tracer does with such a request. (The parent is never recorded: where this
    hop's sampler records the span all the same, ``propagation.decide_deferred`` leaves the
    parent out, so no trace shows it missing.) The trace id starts with the time, in seconds,
    as X-Ray asks of the ids it is sent."""
    trace_id = int(time.time()) << 96 | random.getrandbits(96)
    return Remote(trace_id, random.getrandbits(64) or 1, 0, decision_only=True)


class B3:
    """Zipkin's B3: one ``b3`` header, or ``x-b3-*`` headers; both are read either way.

    A debug trace (``b3: …-d``, ``X-B3-Flags: 1``) stays one on the next hop of the trace, as
    B3 asks: debug is forwarded as ``DEBUG``, which ``inject`` writes in place of sampled.
    """

    SINGLE = "b3"
    TRACE_ID, SPAN_ID = "x-b3-traceid", "x-b3-spanid"
    SAMPLED_KEY, FLAGS = "x-b3-sampled", "x-b3-flags"
    # Never written (B3 lets a child leave it out), but one of the set: a caller's own, left
    # beside tracekit's ids, would name another span's parent as this one's.
    PARENT_SPAN_ID = "x-b3-parentspanid"
    # The same headers as OpenTelemetry's Java and .NET propagators (and Brave) write them, where
    # its Python, JS and Go ones write lower case, as tracekit does: where names are matched
    # case-sensitively (SQS returns the message attributes asked for by name), both are asked for.
    CAPITALISED: ClassVar[Mapping[str, str]] = {
        TRACE_ID: "X-B3-TraceId", SPAN_ID: "X-B3-SpanId", SAMPLED_KEY: "X-B3-Sampled",
        FLAGS: "X-B3-Flags", PARENT_SPAN_ID: "X-B3-ParentSpanId",
    }  # fmt: skip
    DEBUG = "d"
    _SAMPLED_VALUES = frozenset(("1", "d", "true", "True"))
    _DENIED_VALUES = frozenset(("0", "false", "False"))

    def __init__(self, *, single: bool) -> None:
        self.single = single
        # The span's own id before the trace's: an HTTP client tells a call's lower layers
        # (urllib3 under requests, a retry) from another call of the same trace by the first
        # of these it wrote, which must be this call's alone.
        self.fields: tuple[str, ...] = (
            self.SINGLE, self.SPAN_ID, self.TRACE_ID, self.SAMPLED_KEY, self.FLAGS,
            self.PARENT_SPAN_ID,
        )  # fmt: skip

    def extract(self, headers: Headers) -> Remote | None:
        value = one(headers, self.SINGLE)
        if value is not None:
            return self._single(value)
        if not headers.get(self.TRACE_ID) and not headers.get(self.SPAN_ID):
            denied = one(headers, self.SAMPLED_KEY) in self._DENIED_VALUES
            return _not_sampled_new_trace() if denied else None
        trace_id, span_id = one(headers, self.TRACE_ID), one(headers, self.SPAN_ID)
        if trace_id is None or span_id is None:
            return None
        debug = one(headers, self.FLAGS) == "1"
        # No sampling state (not one unreadable): deferred, as a single header without one is
        # (OpenTelemetry's reference reads only that one so; Envoy decides for itself on both)
        deferred = not debug and not headers.get(self.SAMPLED_KEY)
        sampled = debug or one(headers, self.SAMPLED_KEY) in self._SAMPLED_VALUES
        return self._ids(trace_id, span_id, sampled, debug, deferred)

    def _single(self, value: str) -> Remote | None:
        # {trace}-{span}[-{sampling}[-{parent}]]; a sampling state alone carries no parent,
        # but a denial ("0") is still one: the trace it starts here is not sampled.
        if value == "0":
            return _not_sampled_new_trace()
        fields = value.split("-")
        if len(fields) < 2 or len(fields) > 4:
            return None
        deferred = len(fields) == 2  # no sampling state
        sampled = not deferred and fields[2] in self._SAMPLED_VALUES
        debug = not deferred and fields[2] == "d"
        return self._ids(fields[0], fields[1], sampled, debug, deferred)

    @classmethod
    def _ids(
        cls, trace_id: str, span_id: str, sampled: bool, debug: bool, deferred: bool
    ) -> Remote | None:
        if _HEX16_32.fullmatch(trace_id) is None or _HEX16.fullmatch(span_id) is None:
            return None
        forwarded = cls.DEBUG if debug else ""
        return _remote(int(trace_id, 16), int(span_id, 16), sampled, forwarded, deferred)

    def inject(
        self, trace_id: int, span_id: int, sampled: bool, put: Put, forwarded: str = ""
    ) -> None:
        debug = sampled and forwarded == self.DEBUG
        if self.single:
            state = self.DEBUG if debug else int(sampled)
            put(self.SINGLE, f"{trace_id:032x}-{span_id:016x}-{state}")
            return
        put(self.TRACE_ID, f"{trace_id:032x}")
        put(self.SPAN_ID, f"{span_id:016x}")
        if debug:  # debug implies sampled: B3 sends one or the other
            put(self.FLAGS, "1")
        else:
            put(self.SAMPLED_KEY, "1" if sampled else "0")


class Jaeger:
    """Jaeger's ``uber-trace-id: {trace}:{span}:{parent}:{flags}`` (``uberctx-*`` not carried)."""

    HEADER = "uber-trace-id"
    _DEBUG = 0x02
    fields: tuple[str, ...] = (HEADER,)

    def extract(self, headers: Headers) -> Remote | None:
        value = one(headers, self.HEADER)
        if value is None:
            return None
        fields = unquote(value).split(":")
        if len(fields) != 4:
            return None
        trace_id, span_id, _, flags = fields
        if not (
            _HEX_UP_TO_32.fullmatch(trace_id)
            and _HEX_UP_TO_16.fullmatch(span_id)
            and _HEX_UP_TO_16.fullmatch(flags)
        ):
            return None
        return _remote(int(trace_id, 16), int(span_id, 16), bool(int(flags, 16) & SAMPLED))

    def inject(
        self, trace_id: int, span_id: int, sampled: bool, put: Put, forwarded: str = ""
    ) -> None:
        flags = SAMPLED | self._DEBUG if sampled else 0  # the reference marks sampled as debug too
        put(self.HEADER, f"{trace_id:032x}:{span_id:016x}:{0:016x}:{flags:02x}")


class XRay:
    """AWS X-Ray's ``X-Amzn-Trace-Id: Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1|?}``.

    Written with that capitalisation, as the reference does: a message header or an SQS message
    attribute name is case-sensitive to a consumer that is not tracekit.

    The header's other fields (``Lineage``, which Lambda's recursion detection counts hops in,
    and any a service added) go on to the next hop as AWS's own SDKs forward them: at most
    ``MAX_FORWARDED`` characters of them, as OpenTelemetry Java's X-Ray propagator keeps, each
    a plain ``key=value`` or left out. ``Self`` stays behind: a load balancer's note on its own
    hop.
    """

    HEADER = "x-amzn-trace-id"
    WRITTEN = "X-Amzn-Trace-Id"
    MAX_FORWARDED = 256
    fields: tuple[str, ...] = (WRITTEN,)
    _ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
    _NOT_FORWARDED = frozenset(("Root", "Parent", "Sampled", "Self"))
    # "?": the caller asks this hop to decide, as for B3's deferred state (the parent's ids are
    # kept, and this hop's sampler decides as for a new trace: see propagation.py).
    _SAMPLED: ClassVar[Mapping[str, bool]] = {"1": True, "0": False, "?": False}
    _FORWARDED_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
    # visible ASCII but the separators of the header (";") and of a header list (",")
    _FORWARDED_VALUE = re.compile(r"[\x21-\x2b\x2d-\x3a\x3c-\x7e]*")

    def extract(self, headers: Headers) -> Remote | None:
        value = one(headers, self.HEADER)
        if value is None:
            return None
        pairs = {}
        for pair in value.split(";"):
            if not pair.strip(" \t"):  # a stray separator ("…;Sampled=1;") says nothing
                continue
            key, separator, text = pair.partition("=")
            key = key.strip(" \t")
            if not separator or key in pairs:  # a key twice: two headers joined with ","
                return None
            pairs[key] = text.strip(" \t")
        root = self._ROOT.fullmatch(pairs.get("Root", ""))
        parent = pairs.get("Parent", "")
        sampled = pairs.get("Sampled", "0")
        if root is None or _HEX16.fullmatch(parent) is None or sampled not in self._SAMPLED:
            return None
        trace_id = int(root.group(1) + root.group(2), 16)
        forwarded, deferred = self._forwarded(pairs), sampled == "?"
        return _remote(trace_id, int(parent, 16), self._SAMPLED[sampled], forwarded, deferred)

    def _forwarded(self, pairs: dict[str, str]) -> str:
        """The fields to forward, in order, as far as they fit in ``MAX_FORWARDED``."""
        kept: list[str] = []
        size = -1  # (n fields have n - 1 separators)
        for key, value in pairs.items():
            if (
                key in self._NOT_FORWARDED
                or self._FORWARDED_KEY.fullmatch(key) is None
                or self._FORWARDED_VALUE.fullmatch(value) is None
                or size + 1 + len(key) + 1 + len(value) > self.MAX_FORWARDED
            ):
                continue
            kept.append(f"{key}={value}")
            size += 1 + len(kept[-1])
        return ";".join(kept)

    def inject(
        self, trace_id: int, span_id: int, sampled: bool, put: Put, forwarded: str = ""
    ) -> None:
        hex_id = f"{trace_id:032x}"
        header = f"Root=1-{hex_id[:8]}-{hex_id[8:]};Parent={span_id:016x};Sampled={int(sampled)}"
        put(self.WRITTEN, f"{header};{forwarded}" if forwarded else header)


FORMATS: dict[str, Callable[[], TraceFormat]] = {
    "b3": lambda: B3(single=True),
    "b3multi": lambda: B3(single=False),
    "jaeger": Jaeger,
    "xray": XRay,
}
