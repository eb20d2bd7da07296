"""The one reader and writer of W3C baggage: bounded, silent about values, never all-or-nothing.

Every path that reads a ``baggage`` header (ASGI, WSGI, Django, Flask, queue consumers, the
global propagator that OpenTelemetry's own instrumentations call) goes through ``extract``.
OpenTelemetry's ``W3CBaggagePropagator.extract`` is never given untrusted input: it writes
rejected members verbatim into its warnings.

Rules (W3C Baggage): only the first ``MAX_BYTES`` characters of the combined header are read,
at most ``MAX_EXAMINED`` list members of them looked at, and at most ``MAX_MEMBERS`` kept (the
spec asks to propagate at least 64 members and 8,192 bytes); a member cut by the byte limit, a
member beyond the counts and an invalid member are dropped one by one, the valid ones kept.
Percent-escapes that are not UTF-8 are read as U+FFFD, as the spec requires, not dropped. Keys
are percent-decoded like values: OpenTelemetry's SDKs, and ``header``, encode a key that is not
a token (``user%20id``), so that it reads back as it was set.
A member's properties (``;ttl=60;pii``) go on with it while its value is the one they came with
(OpenTelemetry Python's API has no place for them: they are kept beside the baggage); invalid
properties are dropped, their member kept. Dropped members are counted in a rate-limited warning
that names the header, never a value. Whatever its size or content, a header costs what 180
short members cost.

``header`` writes the outgoing header: W3C percent-encoding (OpenTelemetry Python's own writer
sends a space as ``+``, which a W3C reader keeps as a plus, and logs keys of members it drops),
within ``MAX_WRITTEN_MEMBERS`` and ``MAX_BYTES``, so that what this reader kept goes on whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from urllib.parse import quote, unquote

from opentelemetry import baggage
from opentelemetry.context import Context, create_key, get_current

from tracekit import correlation
from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit.semconv import CORRELATION_ID

BAGGAGE = "baggage"
MAX_MEMBERS = 64
MAX_BYTES = 8192
# At most this many list members (valid, invalid or empty) are looked at: the W3C's former limit
# of 180 members, so that a header of tiny invalid members costs no more than a valid one.
MAX_EXAMINED = 180
WARNING_INTERVAL_S = 60.0

# key: an RFC 7230 token; value: baggage-octets (anything else arrives percent-encoded).
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# property = key OWS "=" OWS value / key; a value as written (percent-encoded), never decoded.
# Matched after the outer whitespace is stripped: with "[ \t]*" on both sides of the optional
# "= value", a property of a key and thousands of spaces took quadratic time (0.1 s a header).
_PROPERTY = re.compile(rf"({_KEY.pattern})(?:[ \t]*=[ \t]*({_VALUE.pattern}))?")
_OWS = " \t"
# A list of members that ``_member`` would keep exactly as written: a key and a value without
# "%" (nothing to decode), "=", no whitespace or properties.
_PLAIN_MEMBER = r"[!#$&'*+\-.^_`|~0-9A-Za-z]+=[\x21\x23\x24\x26-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_PLAIN_LIST = re.compile(rf"{_PLAIN_MEMBER}(?:,{_PLAIN_MEMBER})*")
# Written: keys and values sent as they are (quote() keeps letters, digits and "_.-~" too);
# "+" and "%" are always encoded, since OpenTelemetry Python's reader decodes "+" as a space.
_KEY_SAFE = "!#$&'*^`|"
_VALUE_SAFE = "!#$&'()*/:<=>?@[]^`{|}"
_PLAIN_KEY = re.compile(r"[!#$&'*\-.^_`|~0-9A-Za-z]+")
_PLAIN_VALUE = re.compile(r"[!#$&'()*\-./0-9:<=>?@A-Z\[\]^_`a-z{|}~]*")
# At most this many members are written: what every W3C reader must accept, and this one keeps.
MAX_WRITTEN_MEMBERS = MAX_MEMBERS
# OpenTelemetry's key for the baggage in a Context (the public API sets it member by member).
_BAGGAGE_CONTEXT_KEY = next(iter(baggage.set_baggage("k", "v", Context())))
# Beside it, tracekit's: the properties of members read, by key, with the value they came with.
_PROPERTIES_KEY = create_key("tracekit-baggage-properties")
_NO_ENTRIES: Mapping[str, object] = MappingProxyType({})
_NO_PROPERTIES: Mapping[str, tuple[str, str]] = MappingProxyType({})

dropped_members = RateLimitedWarning(
    WARNING_INTERVAL_S,
    "tracekit: dropped members of the %s header (%s)",
)


def parse(values: Iterable[str]) -> tuple[list[tuple[str, str]], str]:
    """The kept ``(key, decoded value)`` members of baggage header values, and why any were
    dropped ("" when none was)."""
    members, _, dropped = parse_with_properties(values)
    return members, dropped


def parse_with_properties(
    values: Iterable[str],
) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str]], str]:
    """``parse``, and the properties of the kept members that have any, by key, with their
    decoded value: ``{key: (value, "p=v;flag")}``."""
    combined = ",".join(values)
    if len(combined) <= MAX_BYTES and _PLAIN_LIST.fullmatch(combined) is not None:
        # The usual header: no whitespace, properties or escapes; every member valid as it is.
        members = [_split(member) for member in combined.split(",")]
        if len(members) <= MAX_MEMBERS:
            return members, {}, ""
    return _parse_each(combined)


def parse_member_by_member(combined: str) -> tuple[list[tuple[str, str]], str]:
    """``parse`` of the combined header value without the shortcut for plain lists."""
    members, _, dropped = _parse_each(combined)
    return members, dropped


def _parse_each(
    combined: str,
) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str]], str]:
    """``parse_with_properties`` member by member."""
    window = combined[:MAX_BYTES]
    over_limits = len(combined) > MAX_BYTES
    if over_limits and combined[MAX_BYTES] != ",":
        window = window.rpartition(",")[0]  # the member cut by the byte limit: never half-read
    pieces = window.split(",", MAX_EXAMINED)
    if len(pieces) > MAX_EXAMINED:
        pieces.pop()  # the unsplit rest: a bound on the work, whatever the members are like
        over_limits = True
    members: list[tuple[str, str]] = []
    properties: dict[str, tuple[str, str]] = {}
    invalid = 0
    for raw in pieces:
        member = _member(raw)
        if member is None:
            invalid += raw.strip(_OWS) != ""  # empty members are allowed, not dropped
        elif len(members) < MAX_MEMBERS:
            members.append(member)
            written = _properties(raw)
            if written:  # a later member of the key wins, as its value does
                properties[member[0]] = (member[1], written)
            else:
                properties.pop(member[0], None)
        else:
            over_limits = True
    return members, properties, _reason(invalid, over_limits)


def _split(member: str) -> tuple[str, str]:
    key, _, value = member.partition("=")
    return key, value


def _reason(invalid: int, over_limits: bool) -> str:
    reasons = [f"{invalid} invalid"] if invalid else []
    if over_limits:
        reasons.append(f"beyond {MAX_MEMBERS} members or {MAX_BYTES} bytes")
    return ", ".join(reasons)


def _properties(raw: str) -> str:
    """The properties of a valid member, as they will be written ("" for none, or invalid)."""
    _, separator, written = raw.partition(";")
    if not separator:
        return ""
    kept = []
    for item in written.split(";"):
        match = _PROPERTY.fullmatch(item.strip(_OWS))
        if match is None:
            return ""
        key, value = match.groups()
        kept.append(key if value is None else f"{key}={value}")
    return ";".join(kept)


def _member(raw: str) -> tuple[str, str] | None:
    """One ``key=value[;properties]`` member, or None when it is invalid (or empty)."""
    key, separator, rest = raw.partition("=")
    key = key.strip(_OWS)
    value = rest.partition(";")[0].strip(_OWS)
    if not separator or _KEY.fullmatch(key) is None or _VALUE.fullmatch(value) is None:
        return None
    # Escapes that are not UTF-8 read as U+FFFD, as W3C Baggage requires (unquote's default).
    # A key is decoded too, as OpenTelemetry's SDKs (and ``header``) encode one that is not a
    # token: read raw, "user%20id" went on as "user%2520id", one more "%25" every hop.
    return _decoded(key), _decoded(value)


def _decoded(text: str) -> str:
    return unquote(text) if "%" in text else text


def extract(values: Iterable[str], context: Context, header: str = BAGGAGE) -> Context:
    """``context`` with the kept members of ``values`` as its baggage (replacing none of it)."""
    members, properties, dropped = parse_with_properties(values)
    if dropped:
        dropped_members.warn(header, dropped)
    if not members:
        return context
    # What set_baggage member by member gives (a later key wins), in one new Context.
    current = context.get(_BAGGAGE_CONTEXT_KEY)
    entries = {**current, **dict(members)} if isinstance(current, dict) else dict(members)
    if not properties:
        return Context({**context, _BAGGAGE_CONTEXT_KEY: entries})
    earlier = context.get(_PROPERTIES_KEY)
    properties = {**earlier, **properties} if isinstance(earlier, dict) else properties
    return Context({**context, _BAGGAGE_CONTEXT_KEY: entries, _PROPERTIES_KEY: properties})


def carried_in(
    context: Context | None,
) -> tuple[Mapping[str, object], Mapping[str, tuple[str, str]]]:
    """The baggage of ``context`` (the current one when None), and the properties of the
    members ``extract`` read into it, by key, with the value they came with; in one look (every
    published message and outgoing request asks for both). The baggage is what
    ``baggage.get_all`` returns, without its read-only copy: callers never change either."""
    ctx = context if context is not None else get_current()
    entries, properties = ctx.get(_BAGGAGE_CONTEXT_KEY), ctx.get(_PROPERTIES_KEY)
    return (
        entries if isinstance(entries, dict) else _NO_ENTRIES,
        properties if isinstance(properties, dict) else _NO_PROPERTIES,
    )


def header(
    entries: Mapping[str, object], properties: Mapping[str, tuple[str, str]] = _NO_PROPERTIES
) -> str | None:
    """The ``baggage`` header of ``entries`` (None when there are none), within the W3C limits.

    Values are percent-encoded where W3C Baggage asks (a space is ``%20``, never ``+``), and
    ``+`` and ``%`` too, so that OpenTelemetry Python's reader (``unquote_plus``) reads each value
    as this module's reader does. When the members do not fit in ``MAX_WRITTEN_MEMBERS`` and
    ``MAX_BYTES``, the last ones are left out, never the correlation member, and a rate-limited
    warning counts them (never naming one).
    """
    members = [f"{_key_text(key)}={_value_text(value)}" for key, value in entries.items()]
    if properties:  # members read with properties (rare): each keeps them with its value
        members = [
            member + _properties_of(key, value, properties)
            for member, (key, value) in zip(members, entries.items(), strict=True)
        ]
    if not members:
        return None
    text = ",".join(members)
    if len(text) <= MAX_BYTES and len(members) <= MAX_WRITTEN_MEMBERS:
        return text
    return _within_limits(members, list(entries))


def correlation_member(cid: str) -> str | None:
    """``header({CORRELATION_ID: cid})``, what nearly every message and outgoing request sends
    (no baggage of the caller's): the one member written straight, without the lists and
    limits ``header`` builds for many."""
    global _last_member
    last = _last_member
    if last is not None and last[0] == cid:  # (a job's messages, a request's calls: one ID)
        return last[1]
    member = _CORRELATION_MEMBER_KEY + _value_text(cid)
    written = member if len(member) <= MAX_BYTES else header({CORRELATION_ID: cid})
    _last_member = (cid, written)
    return written


# The ID written last and its member (one tuple: threads read and replace it whole).
_last_member: tuple[str, str | None] | None = None


_CORRELATION_MEMBER_KEY = f"{CORRELATION_ID}="  # (a token: written as it is)


def _within_limits(members: list[str], keys: list[object]) -> str | None:
    """The members that fit, in order, the correlation member first to be given room."""
    kept = [False] * len(members)
    size, count = -1, 0  # (n members have n - 1 commas)
    first = [i for i, key in enumerate(keys) if key == CORRELATION_ID]
    for i in first + [i for i in range(len(members)) if i not in first]:
        if count < MAX_WRITTEN_MEMBERS and size + 1 + len(members[i]) <= MAX_BYTES:
            kept[i] = True
            size, count = size + 1 + len(members[i]), count + 1
    left_out = len(members) - count
    if left_out:
        dropped_members.warn(BAGGAGE, f"{left_out} left out of what is sent: over the limits")
    return ",".join(m for m, keep in zip(members, kept, strict=True) if keep) or None


def _properties_of(key: str, value: object, properties: Mapping[str, tuple[str, str]]) -> str:
    """``;properties`` the member brought, while it keeps the value it came with."""
    found = properties.get(key)
    return f";{found[1]}" if found is not None and found[0] == value else ""


def _key_text(key: object) -> str:
    """A key as sent: a token as it is; anything else percent-encoded into one."""
    text = key if type(key) is str else str(key)
    return text if _PLAIN_KEY.fullmatch(text) is not None else quote(text, safe=_KEY_SAFE)


def _value_text(value: object) -> str:
    """A value as sent: baggage-octets as they are, but for ``%`` and ``+``; the rest encoded."""
    text = value if type(value) is str else str(value)
    return text if _PLAIN_VALUE.fullmatch(text) is not None else quote(text, safe=_VALUE_SAFE)


def value_of(values: Iterable[str], key: str) -> str | None:
    """The decoded value of member ``key`` (the first one), without building a context."""
    for name, value in parse(values)[0]:
        if name == key:
            return value
    return None


def correlation_id_of(values: Iterable[str] | None) -> str | None:
    """The valid correlation ID the ``correlation.id`` member names (the first of a repeated
    one), else None: how the middleware, queue consumers and ``extract`` read it alike."""
    value = value_of(values, CORRELATION_ID) if values else None
    return value if correlation.is_valid(value) else None
