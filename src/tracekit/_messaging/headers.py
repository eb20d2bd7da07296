"""Reading tracekit's fields out of untrusted message headers, safely.

Brokers hand consumers whatever a producer put in a message: keys and values as ``str`` or
``bytes`` (Kafka, AMQP tables, Redis stream fields), repeated keys (Kafka), numbers, nested tables,
binary blobs. ``read`` keeps only the few fields tracekit understands, each bounded in size, valid
UTF-8 and printable ASCII; anything else is dropped and counted in a rate-limited warning that
names the field and the reason, never the value.

``reading_for`` says which fields those are under one set of options: the correlation headers,
the propagator ``OTEL_PROPAGATORS`` names, and each field's size limit.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterable, KeysView, Mapping, MutableMapping
from typing import Any, NamedTuple

from tracekit import config, propagation
from tracekit._runtime.ratelimit import RateLimitedWarning

_log = logging.getLogger("tracekit")

PUBLISH_TIME_HEADER = "tracekit-publish-time"

# W3C limits: traceparent is 55 characters; tracestate 32 members of at most 256+256 characters
# (vendors must propagate at least 512). Baggage is read member by member (_propagation.baggage,
# which reads its first 8192 bytes): only an absurd size refuses it whole here.
_LIMITS = {
    propagation.TRACEPARENT: 128,
    propagation.TRACESTATE: 8192,
    propagation.BAGGAGE: 65536,
    PUBLISH_TIME_HEADER: 20,
}
_READ_BY_MEMBER = frozenset((propagation.BAGGAGE,))
OTHER_TRACE_LIMIT = 512
CORRELATION_LIMIT = 256  # longer than any valid ID so that correlation.is_valid says why not
MAX_KEY_LENGTH = 256
WARNING_INTERVAL_S = 60.0

Headers = Mapping[Any, Any] | Iterable[tuple[Any, Any]]
Fields = dict[str, list[str]]


bad_header = RateLimitedWarning(
    WARNING_INTERVAL_S,
    "tracekit: ignored message header %s (%s)",
)


context_left_out = RateLimitedWarning(
    WARNING_INTERVAL_S,
    "tracekit: sent a %s without trace context (%s)",
)


def read(headers: Headers | None, limits: Mapping[str, int]) -> Fields:
    """The fields of ``headers`` (mapping or ``(key, value)`` pairs) that ``limits`` names, keyed
    by lower-case name (``field_limits`` gives the limits).

    Values are lists because a key may repeat (Kafka); callers decide what a repeat means.
    """
    fields: Fields = {}
    # Once per header of every message: the usual case (text keys and values) is checked inline.
    for raw_key, raw_value in _pairs(headers):
        if type(raw_key) is str and len(raw_key) <= MAX_KEY_LENGTH:
            key = raw_key.lower()
        else:
            other = _key(raw_key)
            if other is None:
                continue
            key = other
        limit = limits.get(key)
        if limit is None:
            continue  # not a field tracekit reads: silently not ours
        if (
            type(raw_value) is str
            and len(raw_value) <= limit
            and raw_value.isascii()
            and raw_value.isprintable()
        ):
            value: str | None = raw_value
        else:
            value = _text(key, raw_value, limit)
        if value is not None:
            fields.setdefault(key, []).append(value)
    return fields


def _text(key: str, raw: object, limit: int) -> str | None:
    """The value as text, or None after a warning naming the field and the reason."""
    value, reason = _value(raw, limit, key in _READ_BY_MEMBER)
    if value is None:
        bad_header.warn(key, reason)
    return value


@functools.lru_cache(maxsize=16)
def field_limits(
    correlation_names: tuple[str, ...], trace_fields: tuple[str, ...]
) -> dict[str, int]:
    """Size limit of every field tracekit reads (correlation and trace headers are configurable).

    B3, Jaeger and X-Ray values are shorter than ``OTHER_TRACE_LIMIT`` when valid.
    """
    limits = {field.lower(): OTHER_TRACE_LIMIT for field in trace_fields}
    limits.update(_LIMITS)
    limits.update((name.lower(), CORRELATION_LIMIT) for name in correlation_names)
    return limits


def _pairs(headers: Headers | None) -> Iterable[tuple[Any, Any]]:
    if headers is None:
        return ()
    if type(headers) is dict or isinstance(headers, Mapping):
        return headers.items()
    if isinstance(headers, list | tuple):
        return (pair for pair in headers if isinstance(pair, tuple) and len(pair) == 2)
    return ()


def _key(raw: object) -> str | None:
    """The lower-case key as text, else None (not a key tracekit could read: not ours)."""
    if isinstance(raw, bytes | bytearray):
        if len(raw) > MAX_KEY_LENGTH or not raw.isascii():
            return None
        raw = raw.decode("ascii")
    if not isinstance(raw, str) or len(raw) > MAX_KEY_LENGTH:
        return None
    return raw.lower()


def _value(raw: object, limit: int, by_member: bool = False) -> tuple[str | None, str]:
    """The value as text, or None and the reason it was refused.

    ``by_member``: the field's own reader drops bad members one by one, so bad characters do
    not refuse the whole value here.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw)
        if len(raw) > limit:
            return None, "oversized"
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not UTF-8"
    if not isinstance(raw, str):
        return None, "not text"
    if len(raw) > limit:
        return None, "oversized"
    if not by_member and not (raw.isascii() and raw.isprintable()):
        return None, "non-printable or non-ASCII characters"
    return raw, ""


class Reading(NamedTuple):
    """How messages are written and read under one set of options and ``OTEL_PROPAGATORS``."""

    names: tuple[str, ...]  # correlation headers, lower case, in the order they are trusted
    propagator: propagation.TracekitPropagator
    limits: dict[str, int]
    w3c_only: bool  # the only trace headers are W3C's: a parent found means a usable traceparent
    # the headers a publish writes, by lower-case name: other spellings of them are the caller's
    written: dict[str, str]
    # two of those differ only in case (a correlation header named like a trace header): then
    # a publish drops one of its own (see drop_other_spellings), even among no caller's headers
    written_twice: bool
    # of those, the ones that are always the new message's (trace headers, publish time): a
    # value already there is a previous message's, in a headers dict used again
    replaced: dict[str, str]
    # the rest of them as written (correlation ID, baggage): a publish may write none of those,
    # and one used again may hold the previous message's (see drop_left_by_last_publish)
    left: tuple[str, ...]


_last_reading: tuple[config.Options, Reading] | None = None


def byte_length(part: object) -> int | None:
    """``part``'s bytes as a client sends them (str as UTF-8, None as nothing); None for a type
    no client takes. What tracekit estimates message sizes by (Kafka records, SQS messages)."""
    if part is None:
        return 0
    if isinstance(part, (bytes, bytearray)):  # a tuple: faster than a union, once per header
        return len(part)
    if isinstance(part, str):
        return len(part) if part.isascii() else len(part.encode("utf-8", "surrogatepass"))
    if isinstance(part, memoryview):
        return part.nbytes
    return None


def lower_name(key: object) -> str | None:
    """A header key (``str``, or ASCII ``bytes``) in lower case; None for anything else."""
    if isinstance(key, bytes):
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            return None
    return key.lower() if isinstance(key, str) else None


def callers_own(fields: Mapping[Any, Any], ours: Iterable[str]) -> dict[Any, Any]:
    """``fields`` without the keys named like ``ours``, in any capitals or as bytes: tracekit's
    values replace them (a consumer reading both would see one header twice and trust neither);
    nor any trace header or publish time, always the new message's (``replaced_names``).
    """
    names = {name.lower() for name in ours} | replaced_names()
    return {key: value for key, value in fields.items() if lower_name(key) not in names}


def replaced_names() -> KeysView[str]:
    """The header names, lower case, that are always the new message's: its trace headers and
    publish time. One already among a caller's fields is another message's (an entry relayed,
    a dict used again), and a ``tracestate`` beside a new ``traceparent`` would describe
    another trace."""
    from tracekit._runtime.state import current_options

    return reading_for(current_options()).replaced.keys()


def drop_replaced(headers: MutableMapping[Any, Any], replaced: dict[str, str]) -> None:
    """Before a publish writes its trace headers: remove those already in ``headers``, in any
    spelling. They can only be a previous message's (a dict used again), and a ``tracestate``
    or B3 header left beside the new ``traceparent`` would describe another trace. The
    correlation ID and baggage stay: there the caller may have set its own."""
    if not headers:
        return
    stale = [key for key in headers if replaced.get(lower_name(key) or "") is not None]
    for key in stale:
        del headers[key]


# What the last publish into each headers dict left there that the next publish into the same
# dict may not write (the correlation ID and baggage, outside any request): the publish time it
# was stamped with and the values themselves, by the dict's id, oldest first. Bounded: a dict
# used again after that many publishes into other dicts keeps what was left in it.
_left_by_publish: dict[int, tuple[str, tuple[object, ...]]] = {}
_LEFT_KEPT = 512


def remember_left(
    headers: MutableMapping[Any, Any],
    stamp: str,
    names: tuple[str, ...],
    callers: tuple[object, ...] = (),
) -> None:
    """Note the values of ``names`` (``Reading.left``) this publish wrote into ``headers``.
    ``callers`` are their values before it: one it left as it was is the caller's own (a job's
    correlation ID outside any request), to go with the next message too, not to be taken out."""
    left = tuple(map(headers.get, names))
    if callers.count(None) != len(callers):  # the caller had some of its own (seldom)
        left = tuple(None if now is then else now for now, then in zip(left, callers, strict=True))
    _left_by_publish[id(headers)] = (stamp, left)
    if len(_left_by_publish) > _LEFT_KEPT:
        _forget_oldest_half()


def _forget_oldest_half() -> None:
    """Half at once: a publish pays for forgetting once in ``_LEFT_KEPT // 2``."""
    try:
        for key in list(itertools.islice(_left_by_publish, _LEFT_KEPT // 2)):
            _left_by_publish.pop(key, None)
    except RuntimeError:  # another thread's publish changed the dict while it was read
        pass


def drop_left_by_last_publish(headers: MutableMapping[Any, Any], names: tuple[str, ...]) -> None:
    """Before a publish into a headers dict used again: remove the correlation ID and baggage
    the previous publish left there, still the very values it wrote. Left, they went out with
    a message that has none of its own (published outside any request). A value the caller
    has set since is the caller's, and stays."""
    stamp = headers.get(PUBLISH_TIME_HEADER)
    left = _left_by_publish.pop(id(headers), None)
    if left is None or type(stamp) is not str or left[0] != stamp:
        return
    # strict=False: options read anew since (no init) may name other headers
    for name, value in zip(names, left[1], strict=False):
        if value is not None and headers.get(name) is value:
            del headers[name]


def drop_other_spellings(headers: MutableMapping[Any, Any], written: dict[str, str]) -> None:
    """Remove a caller's ``X-Correlation-ID`` (or ``b"baggage"``) once tracekit's own is in
    ``headers``: a consumer would read the two as one header sent twice, and trust neither.
    ``written``: tracekit's header names by their lower-case form."""
    others = [
        (key, ours)
        for key in headers
        if not (type(key) is str and written.get(key) == key)  # tracekit's own, as written
        and (ours := written.get(lower_name(key) or "")) is not None
        and (type(key) is not str or ours != key)  # (bytes never compared with str: -bb)
    ]
    if not others:
        return
    # The keys as they are, not ``ours in headers``: a case-insensitive mapping (requests',
    # multidict's) answers that with the caller's own header, which tracekit then dropped.
    keys = {key for key in headers if type(key) is str}
    for key, ours in others:
        if ours in keys:
            del headers[key]


def reading_for(options: config.Options) -> Reading:
    """The ``Reading`` of ``options``, with ``OTEL_PROPAGATORS`` as it was when these options were
    first used: the options ``tracekit.init()`` resolved are one object for the process's life
    (read once, as the server middleware does); without ``init`` every call resolves options
    anew, so every message reads the environment again."""
    global _last_reading
    last = _last_reading
    if last is not None and last[0] is options:
        return last[1]
    propagator = propagation.configured(options.response_header)
    names = tuple(n.lower() for n in (*options.correlation_headers, options.response_header))
    limits = field_limits(names, propagator.carried_fields)
    w3c_only = propagator.trace_fields == (propagation.TRACEPARENT, propagation.TRACESTATE)
    written_names = {*propagator.fields, PUBLISH_TIME_HEADER}
    written = {name.lower(): name for name in written_names}
    written_twice = len(written) < len(written_names)
    replaced = {name.lower(): name for name in (*propagator.trace_fields, PUBLISH_TIME_HEADER)}
    left = tuple(name for lower, name in written.items() if lower not in replaced)
    reading = Reading(names, propagator, limits, w3c_only, written, written_twice, replaced, left)
    _last_reading = (options, reading)
    return reading
