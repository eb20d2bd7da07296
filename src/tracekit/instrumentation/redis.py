"""redis-py: streams and pub/sub as queue hops.

Streams. ``XADD`` runs inside ``messaging.publish``: the entry gets extra fields ``traceparent``,
``tracestate``, ``baggage``, ``x-correlation-id`` and ``tracekit-publish-time``, and the PRODUCER
span records the entry ID (in a pipeline, the span ends when ``execute`` sends it, or, still
queued when tracekit is uninstrumented, is recorded then, outcome unknown). With
``idmpauto=`` (Redis derives an idempotent ID from the fields) the fields are left alone: the
span is recorded, no context is carried. On asyncio clients
(``XADD`` and ``PUBLISH``) that block runs when the command's coroutine is awaited, in the task
that awaits it. ``XREAD``/``XREADGROUP`` return raw data and the handler runs after the call, so
tracekit cannot know where handling an entry ends; consumers say so themselves::

    for stream, entry_id, fields in tracekit.instrumentation.redis.entries(response):
        with tracekit.instrumentation.redis.consume_entry(stream, entry_id, fields):
            handle(fields)

(``consume_entries`` gives one span linked to every entry of a batch; an XRANGE, XCLAIM or
XAUTOCLAIM reply names no stream, so ``entries(reply, stream=...)`` is told it.)

Pub/sub. A published message has no headers, so tracekit can only carry context inside the
payload: ``\\x1etracekit1\\x1e<headers>\\x1e<original payload>``. A subscriber without tracekit
would see that envelope, and tracekit cannot know who subscribes, so publishing is left alone
except on the channels the user names (option ``redis_pubsub_channels``, names or globs), and
never when kombu or Celery publish (their subscribers parse the raw payload). Subscribers with
tracekit (``get_message``, ``listen``, channel handlers of the sync and the asyncio ``PubSub``)
strip an envelope on any channel. A message's CONSUMER span covers a registered channel handler;
for messages returned by ``get_message``/``listen`` it stays open until the ``PubSub`` reads
again (the next ``get_message``, or ``listen`` going on, before either waits) or closes (or
resets). Subscribers look for the end of the headers within the first ``MAX_ENVELOPE_HEADERS``
characters, so the publisher leaves out ``tracestate``, then ``baggage``, when the headers
would be longer, and publishes the bare payload if they still are: a payload never reaches a
subscriber altered.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import inspect
import re
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from types import ModuleType
from typing import Any, AnyStr
from urllib.parse import parse_qsl, urlencode

from tracekit import messaging, propagation, semconv
from tracekit._messaging.headers import callers_own
from tracekit._runtime import state as _state
from tracekit._runtime.guard import guarded
from tracekit.instrumentation._base import Instrumentor

__all__ = [
    "ENVELOPE_MARK",
    "MAX_ENVELOPE_HEADERS",
    "SEPARATOR",
    "SYSTEM",
    "RedisInstrumentor",
    "consume_entries",
    "consume_entry",
    "entries",
]

SYSTEM = "redis"
ENVELOPE_MARK = "\x1etracekit1\x1e"
SEPARATOR = "\x1e"
MAX_ENVELOPE_HEADERS = 16384
# Callers whose pub/sub subscribers parse the raw payload themselves (kombu's fanout exchanges,
# Celery's remote control and events, Celery's Redis result backend).
_HOST_PUBLISHERS = ("kombu.", "celery.")
_OWN_FRAMES = ("tracekit.", "wrapt.")
_JUSTID_REPLY = "a JUSTID reply holds entry IDs alone, no fields: claim without JUSTID"

_held = messaging.HeldDeliveries()
# Pipelines' queued publishes, with each one's place among the pipeline's commands.
_Queued = tuple[messaging.Publishing, messaging.Publication, int]
_queued: weakref.WeakKeyDictionary[Any, list[_Queued]] = weakref.WeakKeyDictionary()
# While a pipeline with traced publishes executes: every reply, as redis-py's raise_first_error
# sees them before raising the first error (the exception alone does not say what was written).
_replies_seen: ContextVar[list[Any] | None] = ContextVar("tracekit_redis_replies", default=None)


class RedisInstrumentor(Instrumentor):
    """Traces ``XADD``, ``PUBLISH`` and the ``PubSub`` message handling of redis-py (sync and
    asyncio)."""

    held = _held

    target = "redis"

    def uninstrument(self) -> None:
        """Undo the patches; the spans of XADDs and PUBLISHes still queued in pipelines, whose
        ``execute`` is no longer traced, are recorded now, outcome unknown."""
        super().uninstrument()
        _end_all_queued()

    def patch(self, module: ModuleType) -> None:
        commands = module.commands.core
        xadd = commands.StreamCommands.xadd
        idmpauto_at = _position_of(xadd, "idmpauto")
        self.wrap(commands.StreamCommands, "xadd", functools.partial(_traced_xadd, idmpauto_at))
        self.wrap(commands.PubSubCommands, "publish", _traced_publish)
        self.wrap(module.client.PubSub, "handle_message", _traced_handle_message)
        # get_message() and listen() read through it, before waiting for the next message:
        # the message read last is handled. Ended there, its span does not cover the wait for
        # the next one, nor its ID stay current through polls that find nothing.
        self.wrap(module.client.PubSub, "parse_response", _held.release_then_call)
        # reset(), which close(), leaving a ``with`` block and collection all call.
        self.wrap(module.client.PubSub, "reset", _held.release_then_call)
        for pipeline in (
            module.client.Pipeline,
            module.asyncio.client.Pipeline,
            module.cluster.ClusterPipeline,
            module.asyncio.cluster.ClusterPipeline,
        ):
            self.wrap(pipeline, "execute", _traced_execute)
            if "reset" in vars(pipeline):  # (the asyncio cluster one has none before redis-py 6.2)
                self.wrap(pipeline, "reset", _traced_reset)
        for pipeline in (module.client.Pipeline, module.asyncio.client.Pipeline):
            if "raise_first_error" in vars(pipeline):  # (redis-py's own; cluster ones differ)
                self.wrap(pipeline, "raise_first_error", _noting_replies)
        for strategy in _cluster_transaction_strategies(module):
            self.wrap(strategy, "_raise_first_error", _noting_transaction_replies)
        asyncio_pubsub = module.asyncio.client.PubSub
        self.wrap(asyncio_pubsub, "handle_message", _traced_async_handle_message)
        self.wrap(asyncio_pubsub, "parse_response", _release_then_read_async)
        # aclose() since redis-py 5.0.1, where close() and reset() call it; reset() before that.
        closing = "aclose" if "aclose" in vars(asyncio_pubsub) else "reset"
        self.wrap(asyncio_pubsub, closing, _held.release_then_call)


def entries(
    response: object, stream: object = None
) -> Iterator[tuple[str, str, Mapping[Any, Any]]]:
    """``(stream, entry_id, fields)`` of every entry in an XREAD/XREADGROUP reply (RESP2 or 3),
    or, given the ``stream`` it came from, in a reply that names none: XRANGE, XREVRANGE and
    XCLAIM (``[(id, fields), ...]``) and XAUTOCLAIM (``[next id, [(id, fields), ...], ...]``)."""
    if stream is not None:
        for entry_id, fields in _claimed(response):
            yield _text(stream), _text(entry_id), fields or {}
        return
    if _names_no_stream(response):
        _claimed(response)  # a JUSTID reply is refused for what it is, stream or not
        raise TypeError(
            "an XRANGE, XCLAIM or XAUTOCLAIM reply names no stream: entries(reply, stream=...)"
        )
    streams: Any = response.items() if isinstance(response, Mapping) else (response or ())
    for stream_and_entries in streams:
        stream, stream_entries = stream_and_entries
        for item in stream_entries[0] if _is_resp3_nesting(stream_entries) else stream_entries:
            entry_id, fields = item
            yield _text(stream), _text(entry_id), fields or {}


def consume_entry(
    stream: object, entry_id: object, fields: Mapping[Any, Any]
) -> messaging.Delivery:
    """The CONSUMER span of one stream entry: ``with consume_entry(...)`` around its handler."""
    return messaging.consume(
        fields,
        system=SYSTEM,
        destination=_text(stream),
        message_id=_text(entry_id),
        correlation_property=messaging.correlation_property_of(fields),
    )


def consume_entries(
    stream: object, stream_entries: Sequence[tuple[Any, Mapping[Any, Any]]]
) -> messaging.Delivery:
    """One CONSUMER span linked to every entry of a batch read from ``stream``: its entries as
    a reply holds them, RESP2 (``[(id, fields), ...]``, as XCLAIM's too) or RESP3 (one list
    deeper), or an XAUTOCLAIM reply."""
    nested = _is_resp3_nesting(stream_entries)
    batch: Sequence[Any] = stream_entries[0] if nested else _claimed(stream_entries)
    return messaging.consume_batch(
        [fields for _, fields in batch],
        system=SYSTEM,
        destination=_text(stream),
        correlation_properties=[messaging.correlation_property_of(f) for _, f in batch],
    )


def _traced_xadd(
    idmpauto_at: int | None,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    name = args[0] if args else kwargs.get("name")
    fields = args[1] if len(args) > 1 else kwargs.get("fields")
    # redis-py refuses anything but a non-empty dict: an entry of tracekit's fields alone must
    # not turn that error into a write.
    if not isinstance(fields, dict) or not fields or messaging.publishing():
        return wrapped(*args, **kwargs)
    if _idempotent_by_fields(idmpauto_at, args, kwargs):
        return _published(instance, _text(name), lambda _headers: wrapped(*args, **kwargs), fields)

    def send(headers: Mapping[str, Any]) -> Any:
        # No headers: tracekit could not start this publish (reported once): the caller's entry
        traced_fields = {**callers_own(fields, headers), **headers} if headers else fields
        if len(args) > 1:
            return wrapped(args[0], traced_fields, *args[2:], **kwargs)
        return wrapped(*args, **{**kwargs, "fields": traced_fields})

    return _published(instance, _text(name), send, fields)


def _idempotent_by_fields(
    idmpauto_at: int | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """``XADD ... IDMPAUTO`` (Redis 8.6+): the server derives the entry's idempotent ID from its
    fields, so fields of tracekit's, new on every call, would make every retry a new entry."""
    if kwargs.get("idmpauto") is not None:
        return True
    return idmpauto_at is not None and len(args) > idmpauto_at and args[idmpauto_at] is not None


def _position_of(method: Callable[..., Any], parameter: str) -> int | None:
    """Where ``parameter`` of ``method`` sits among the arguments after ``self``, if it has one."""
    names = list(inspect.signature(method).parameters)
    return names.index(parameter) - 1 if parameter in names else None


def _traced_publish(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    channel = args[0] if args else kwargs.get("channel")
    message = args[1] if len(args) > 1 else kwargs.get("message")
    if (
        not isinstance(message, str | bytes)
        or messaging.publishing()
        or not _envelope_wanted(channel)
    ):
        return wrapped(*args, **kwargs)
    options = {k: v for k, v in kwargs.items() if k not in ("channel", "message")}

    def send(headers: Mapping[str, Any]) -> Any:
        return wrapped(channel, _envelope(headers, message), *args[2:], **options)

    return _published(instance, _text(channel), send)


@guarded(False)  # a broken TRACEKIT_* variable: the message goes out bare, as without tracekit
def _envelope_wanted(channel: object) -> bool:
    """Only channels the user named carry an envelope, and never a publish by kombu or Celery."""
    matcher = _channel_matcher(_state.current_options().redis_pubsub_channels)
    if matcher is None or matcher.fullmatch(_channel_name(channel)) is None:
        return False
    return not _published_by_host_library()


@functools.lru_cache(maxsize=8)
def _channel_matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One expression for the configured names and globs (``*``, ``?``, ``[...]``)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _channel_name(channel: object) -> str:
    if isinstance(channel, bytes | bytearray):
        return bytes(channel).decode("utf-8", "replace")
    return str(channel)


def _published_by_host_library() -> bool:
    """True when the code calling ``publish`` (past tracekit's and wrapt's frames) is kombu's or
    Celery's: the user's globs cannot reach the channels of Celery's own machinery."""
    frame = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith(_OWN_FRAMES):
            return module.startswith(_HOST_PUBLISHERS)
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _published(
    client: Any,
    destination: str,
    send: Callable[[Mapping[str, Any]], Any],
    fields: Mapping[Any, Any] | None = None,
) -> Any:
    """``send(headers)`` inside a publish block: now, or on asyncio clients when awaited.

    An asyncio command runs in whichever task awaits it, so the block is entered there: entered
    at the call, it would stay attached in the caller. (An asyncio pipeline buffers commands and
    returns itself; one under WATCH returns an awaitable from a plain method, and its span ends
    before that await.)
    """
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        return _published_when_awaited(destination, send, fields)
    headers: dict[str, Any] = {}
    publishing = _publish(headers, destination, fields)
    with publishing as sent:
        result = send(headers)
        if result is client:  # a pipeline queued the command: it is sent by execute()
            publishing.keep_open()
            _queued.setdefault(client, []).append((publishing, sent, len(client) - 1))
        else:
            _record_entry_id(sent, result)
    return result


def _traced_execute(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A pipeline's ``execute``: the PRODUCER spans of the XADDs and PUBLISHes it queued end
    with it, each with its own reply (the entry ID, or the error Redis answered)."""
    queued = _queued.pop(instance, None)
    if not queued:
        return wrapped(*args, **kwargs)
    commands = _cluster_commands(instance)
    with _ending_queued_if_raises(queued, commands):
        replies = wrapped(*args, **kwargs)
    if inspect.isawaitable(replies):  # an asyncio pipeline: sent when awaited
        return _executed_when_awaited(queued, commands, replies)
    _end_queued(queued, replies)
    return replies


async def _executed_when_awaited(
    queued: list[_Queued], commands: list[Any] | None, execution: Any
) -> Any:
    with _ending_queued_if_raises(queued, commands):
        replies = await execution
    _end_queued(queued, replies)
    return replies


@contextlib.contextmanager
def _ending_queued_if_raises(queued: list[_Queued], commands: list[Any] | None) -> Iterator[None]:
    """Around a pipeline's execution: the replies ``raise_first_error`` sees are kept (a
    cluster pipeline's, from its ``commands``), so that if it raises, the queued spans end as
    ``_end_queued_after`` reads them."""
    seen: list[Any] = []
    token = _replies_seen.set(seen)
    try:
        yield
    except BaseException as error:
        if commands is not None and not seen:
            seen[:] = [getattr(command, "result", None) for command in commands]
        _end_queued_after(queued, seen, error)
        raise
    finally:
        _replies_seen.reset(token)


def _cluster_commands(pipeline: Any) -> list[Any] | None:
    """A cluster pipeline's queued commands (None for other pipelines). Each command keeps its
    own reply (``result``) and the first error among them is raised, with no
    ``raise_first_error`` to see the replies go by; resetting after ``execute`` replaces the
    list, so this one still holds them once ``execute`` has raised."""
    strategy = getattr(pipeline, "_execution_strategy", None)
    # redis-py 6.1+ (asyncio: 6.2+) queues them in the pipeline's execution strategy; before,
    # in the cluster pipeline itself (asyncio: ``_command_stack``)
    for owner, name in (
        (strategy, "_command_queue"),
        (pipeline, "_command_stack"),
        (pipeline, "command_stack"),
    ):
        commands = getattr(owner, name, None)
        if isinstance(commands, list) and commands and _keep_replies(commands):
            return commands
    return None


def _keep_replies(commands: list[Any]) -> bool:
    """Cluster pipelines queue commands that keep their reply; others queue bare arguments."""
    return all(hasattr(command, "result") for command in commands)


def _noting_replies(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """redis-py's ``raise_first_error(commands, response)``: keep the replies for the spans."""
    seen = _replies_seen.get()
    response = args[1] if len(args) > 1 else kwargs.get("response")
    if seen is not None and isinstance(response, list):
        seen[:] = response
    return wrapped(*args, **kwargs)


def _cluster_transaction_strategies(module: ModuleType) -> list[Any]:
    """How cluster pipelines run MULTI/EXEC (redis-py 6+): the replies, errors among them, go
    to their ``_raise_first_error(responses, stack, start_time)``, and nowhere else before it
    raises."""
    found = []
    for cluster in (module.cluster, module.asyncio.cluster):
        strategy = getattr(cluster, "TransactionStrategy", None)
        if strategy is not None and "_raise_first_error" in vars(strategy):
            found.append(strategy)
    return found


def _noting_transaction_replies(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A cluster transaction's ``_raise_first_error(responses, ...)``: keep the replies."""
    seen = _replies_seen.get()
    responses = args[0] if args else kwargs.get("responses")
    if seen is not None and isinstance(responses, list):
        seen[:] = responses
    return wrapped(*args, **kwargs)


def _end_queued_after(queued: list[_Queued], seen: list[Any], error: BaseException) -> None:
    """End the spans of an ``execute`` that raised. When it raised one command's error among
    replies Redis gave to all, the others were written: each span ends with its own reply.
    Otherwise (connection lost, WATCH, EXECABORT) nothing is known written: all failed."""
    if any(reply is error for reply in seen):
        _end_queued(queued, seen)
    else:
        _end_queued(queued, None, error)


@guarded(None)
def _end_queued(queued: list[_Queued], replies: Any, error: BaseException | None = None) -> None:
    for publishing, sent, index in queued:
        reply = replies[index] if isinstance(replies, list) and index < len(replies) else None
        if error is None and isinstance(reply, Exception):
            publishing.end(reply)
            continue
        if error is None:
            _record_entry_id(sent, reply)
        publishing.end(error)


def _end_all_queued() -> None:
    """Uninstrumented (``tracekit.shutdown()``) while pipelines hold queued publishes: their
    spans would never be recorded, and a pipeline used again once tracekit is back would end
    them with another command's reply."""
    while True:
        try:
            _pipeline, queued = _queued.popitem()
        except KeyError:  # none left (or collected meanwhile)
            return
        for publishing, _sent, _index in queued:
            publishing._end_outcome_unknown()


def _traced_reset(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A pipeline emptied without ``execute``: what it queued was never sent, nor traced."""
    _queued.pop(instance, None)
    return wrapped(*args, **kwargs)


def _publish(
    headers: dict[str, Any], destination: str, fields: Mapping[Any, Any] | None
) -> messaging.Publishing:
    """The publish of a stream entry (``fields``, the caller's: its own correlation ID there,
    or in its ``correlation_id`` field, is the entry's outside a request) or of a message."""
    publishing = messaging.publish(headers, system=SYSTEM, destination=destination)
    if fields is None:
        return publishing
    return publishing._beside(fields, fields)


async def _published_when_awaited(
    destination: str, send: Callable[[Mapping[str, Any]], Any], fields: Mapping[Any, Any] | None
) -> Any:
    headers: dict[str, Any] = {}
    with _publish(headers, destination, fields) as sent:
        result = await send(headers)
        _record_entry_id(sent, result)
    return result


def _record_entry_id(sent: messaging.Publication, result: object) -> None:
    """XADD replies with the new entry's ID (PUBLISH with a count of subscribers)."""
    if isinstance(result, bytes | str):
        sent.set_message_id(_text(result))


def _traced_handle_message(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    _held.release(instance)
    opened = _opened_call(instance, args, kwargs)
    if opened is None:
        return wrapped(*args, **kwargs)
    try:
        message = wrapped(*opened[0], **opened[1])
    except BaseException as error:
        _held.release(instance, error)
        raise
    return _handled(instance, message)


async def _traced_async_handle_message(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The asyncio ``PubSub``'s ``handle_message``, a coroutine: the same as the sync one."""
    _held.release(instance)
    opened = _opened_call(instance, args, kwargs)
    if opened is None:
        return await wrapped(*args, **kwargs)
    try:
        message = await wrapped(*opened[0], **opened[1])
    except BaseException as error:
        _held.release(instance, error)
        raise
    return _handled(instance, message)


async def _release_then_read_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The asyncio ``PubSub``'s ``parse_response``, a coroutine: as ``_held.release_then_call``
    for the sync one, the message read last is handled."""
    _held.release(instance)
    return await wrapped(*args, **kwargs)


def _opened_call(
    instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``handle_message``'s arguments with the envelope removed, the message's delivery started
    and held for ``instance``; None when the response carries no envelope."""
    unwrapped = _opened(args[0] if args else kwargs.get("response"))
    if unwrapped is None:
        return None
    response, headers = unwrapped
    # [kind, channel, data], or [kind, pattern, channel, data] for a pattern subscription's,
    # whose spans are named by the pattern: the channels come from the publishers
    pattern = (
        {semconv.MESSAGING_DESTINATION_TEMPLATE: _text(response[1])} if len(response) == 4 else None
    )
    delivery = messaging.consume(
        headers, system=SYSTEM, destination=_text(response[-2]), attributes=pattern
    )
    _held.hold(instance, delivery)
    return (response, *args[1:]), {k: v for k, v in kwargs.items() if k != "response"}


def _handled(instance: Any, message: Any) -> Any:
    if message is None:  # a channel handler ran (inside the span) or the message was ignored
        _held.release(instance)
    return message


def _opened(response: object) -> tuple[list[Any], dict[str, str]] | None:
    """The response with the envelope removed from its payload, and the envelope's headers."""
    if not isinstance(response, list) or len(response) not in (3, 4):
        return None
    if _text(response[0]) not in ("message", "pmessage"):
        return None
    opened = _open_envelope(response[-1])
    if opened is None:
        return None
    headers, payload = opened
    return [*response[:-1], payload], headers


def _envelope(headers: Mapping[str, Any], message: str | bytes) -> str | bytes:
    """``message`` behind the headers that fit; the bare message when none do."""
    encoded = _fitting_headers(headers)
    if encoded is None:
        return message
    prefix = ENVELOPE_MARK + encoded + SEPARATOR
    return prefix.encode("ascii") + message if isinstance(message, bytes) else prefix + message


def _fitting_headers(headers: Mapping[str, Any]) -> str | None:
    """``headers`` url-encoded, short enough for a subscriber to find the envelope's end: without
    tracestate, then without baggage too, if need be; None if even that is too long."""
    fields = dict(headers)
    encoded = urlencode(fields)
    for optional in (propagation.TRACESTATE, propagation.BAGGAGE):
        if _fits(encoded):
            return encoded
        fields.pop(optional, None)
        encoded = urlencode(fields)
    return encoded if _fits(encoded) else None


def _fits(encoded_headers: str) -> bool:
    """A subscriber looks for the envelope's end this far (``_open_envelope``), no further."""
    return len(ENVELOPE_MARK) + len(encoded_headers) <= MAX_ENVELOPE_HEADERS


def _open_envelope(payload: object) -> tuple[dict[str, str], Any] | None:
    """Split a payload into (headers, original payload), or None if it is not an envelope."""
    if isinstance(payload, bytes):
        end = _envelope_end(payload, ENVELOPE_MARK.encode("ascii"), SEPARATOR.encode("ascii"))
    elif isinstance(payload, str):
        end = _envelope_end(payload, ENVELOPE_MARK, SEPARATOR)
    else:
        return None
    if end < 0:
        return None  # not ours after all (or hostile): hand the payload over untouched
    raw = payload[len(ENVELOPE_MARK) : end]
    try:
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        headers = dict(parse_qsl(text, max_num_fields=16))
    except ValueError:
        headers = {}  # a mangled envelope still yields the original payload, with a new trace
    return headers, payload[end + 1 :]


def _envelope_end(payload: AnyStr, mark: AnyStr, separator: AnyStr) -> int:
    """Where the headers of the envelope ``payload`` begins with end; -1 if it begins with none
    or they would run past ``MAX_ENVELOPE_HEADERS``. Looked for that far only: a payload that
    merely begins with the mark (a hostile one of megabytes) is neither copied nor decoded."""
    if not payload.startswith(mark):
        return -1
    return payload.find(separator, len(mark), MAX_ENVELOPE_HEADERS + 1)


def _claimed(reply: Any) -> Any:
    """The entries of an XCLAIM reply (the entries themselves) or an XAUTOCLAIM one, which
    begins with the ID to scan on from and then lists them. A JUSTID reply (IDs alone, which
    redis-py answers for both) also begins with an ID: it holds no fields to trace from."""
    begins_with_cursor = (
        isinstance(reply, list | tuple)
        and len(reply) > 1
        and isinstance(reply[0], str | bytes)
        and isinstance(reply[1], list | tuple)
    )
    claimed = reply[1] if begins_with_cursor else reply or ()
    if claimed and isinstance(claimed[0], str | bytes):
        raise TypeError(_JUSTID_REPLY)
    return claimed


def _names_no_stream(reply: object) -> bool:
    """Whether ``reply`` names no stream: XAUTOCLAIM's (it begins with an ID), or XRANGE's and
    XCLAIM's (its first item is an entry: an ID and its fields, None for one XCLAIM found
    deleted before Redis 7; XREAD's is a stream and its list of entries)."""
    if not isinstance(reply, list | tuple) or not reply:
        return False
    first = reply[0]
    if isinstance(first, str | bytes):
        return True
    return (
        isinstance(first, list | tuple)
        and len(first) == 2
        and (first[1] is None or isinstance(first[1], Mapping))
    )


def _is_resp3_nesting(stream_entries: Any) -> bool:
    """RESP3 replies nest each stream's entries one list deeper: ``[[entry, ...]]``, and
    ``[[]]`` when a stream has none (XREADGROUP re-reading an empty pending list)."""
    return (
        isinstance(stream_entries, list)
        and len(stream_entries) == 1
        and isinstance(stream_entries[0], list)
        and (not stream_entries[0] or isinstance(stream_entries[0][0], list | tuple))
    )


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value[:256]).decode("utf-8", "replace")
    return str(value)[:256] if value is not None else ""
