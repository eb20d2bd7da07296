"""What the WSGI middleware does for a Flask app: route templates and view exceptions.

Spans are named by Flask's url rule (``GET /orders/{id}``). The WSGI middleware reads the rule
while Flask calls ``start_response`` inside its request context (Flask clears the request from
the environ when that context ends, before the server closes the response and the span ends).
Flask also turns a view's exception into a 500 response before the WSGI middleware sees it, so
the ``got_request_exception`` signal leaves the exception in the environ for the middleware to
record (once, on the span and in the metrics, also when Flask then propagates it:
``PROPAGATE_EXCEPTIONS``), and keeps the route for the one case where no response starts in the
request context: an exception Flask propagates.

``tracekit.wsgi`` and ``tracekit.flask`` both use this module; neither imports the other's
internals.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from types import ModuleType
from typing import Any

from tracekit._http.server import braced_route
from tracekit._http.wsgi_environ import (
    CACHE_LIMIT,
    ERROR_KEY,
    HANDLED_ERROR_KEY,
    ROOT_KEY,
    ROUTE_KEY,
    Environ,
)
from tracekit._runtime.guard import guarded, report_once
from tracekit.instrumentation._base import Instrumentor

_TEMPLATES: dict[str, str] = {}
# (id of the app tracekit wraps, id of a Flask app below it) -> weak references to both, and
# the mounts between: an app no longer served (one an app factory made per test) is freed, and
# its entry goes with it
_MOUNTS: dict[tuple[int, int], tuple[weakref.ref[Any], weakref.ref[Any], tuple[str, ...]]] = {}
_MAX_WRAPPERS = 16
_MAX_MOUNTS_OF_AN_APP = 16  # mount paths kept for one Flask app mounted several times


@guarded(False)  # an app whose attributes raise (a __getattr__ of its own) is no Flask app
def connect(app: object) -> bool:
    """Hook up the Flask apps of ``app``: the one it is, whose bound ``wsgi_app`` it is (so that
    ``TracekitMiddleware(flask_app.wsgi_app)`` gets the same route names as ``init_app``), or
    the ones below the wrappers it is made of (``ProxyFix``, ``DispatcherMiddleware``, which
    keep the app they wrap as ``app`` and their mounts as ``mounts``); False for any other
    WSGI app."""
    flask = sys.modules.get("flask")
    if flask is None or not _holds_flask_app(app, flask, 0):
        return False
    _connect_signals(app)
    return True


def _holds_flask_app(app: object, flask: Any, depth: int) -> bool:
    """Whether ``app``, or an app it wraps or mounts, is a Flask app (or its ``wsgi_app``)."""
    for _ in range(_MAX_WRAPPERS):
        if app is None:
            return False
        if isinstance(app, flask.Flask) or isinstance(getattr(app, "__self__", None), flask.Flask):
            return True
        mounts = getattr(app, "mounts", None)
        mounted = mounts.values() if isinstance(mounts, dict) and depth < _MAX_WRAPPERS else ()
        if any(_holds_flask_app(inner, flask, depth + 1) for inner in mounted):
            return True
        app = getattr(app, "app", None)
    return False


def remember_route(environ: Environ) -> None:
    """Keep Flask's matched url rule as the route template, unless an adapter already did.

    Flask calls ``start_response`` inside its request context, while ``werkzeug.request`` in
    the environ is still the request; reading it there costs far less than a signal receiver.
    The exception hook calls it too when a view's exception is about to propagate.
    """
    try:
        if ROUTE_KEY not in environ:
            request = environ.get("werkzeug.request")
            rule = getattr(request, "url_rule", None) or _rule_of_a_405(request)
            template = getattr(rule, "rule", None)
            if isinstance(template, str):
                environ[ROUTE_KEY] = _mount_of(environ) + _template(template)
    except Exception as error:
        report_once("wsgi flask route", error)


def matched_route(environ: Environ) -> str | None:
    """The route template of the url rule Flask matched for this request so far, if any."""
    remember_route(environ)
    route = environ.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


def _rule_of_a_405(request: object) -> object:
    """The url rule whose path a 405 matched (werkzeug's ``MethodNotAllowed``: a rule has the
    path, not the method), which Flask leaves out of ``url_rule``: found again with a method
    the rules allow, the first in order. Only these few methods come from the app's rules; the
    client's path only chooses among the app's own templates."""
    allowed = getattr(getattr(request, "routing_exception", None), "valid_methods", None)
    flask = sys.modules.get("flask")
    if not allowed or flask is None or not flask.has_app_context():
        return None
    adapter = flask.current_app.create_url_adapter(request)
    if adapter is None:
        return None
    shapes = _shape_adapter(adapter)
    for method in sorted(allowed):
        # A method whose rule redirects (strict slashes) raises an HTTPException: the next one.
        with contextlib.suppress(Exception):
            return shapes.match(method=method, return_rule=True)[0]
    return None


# id of an app's url map -> (that map, its number of rules, a copy matching by shape alone)
_SHAPES: dict[int, tuple[object, int, object]] = {}


def _shape_adapter(adapter: Any) -> Any:
    """``adapter`` over a copy of its map whose converters match as the app's do (the same
    patterns) but never convert: Flask's 405 decides by the paths' shapes and runs none of the
    app's converters, and naming it must not run one either (a converter may look a value up
    or count it)."""
    from werkzeug.routing import MapAdapter

    rules = list(adapter.map.iter_rules())
    known = _SHAPES.get(id(adapter.map))
    if known is None or known[0] is not adapter.map or known[1] != len(rules):
        known = (adapter.map, len(rules), _shapes_of(adapter.map, rules))
        if len(_SHAPES) < CACHE_LIMIT:
            _SHAPES[id(adapter.map)] = known
    return MapAdapter(
        known[2],  # type: ignore[arg-type]
        adapter.server_name,
        adapter.script_name,
        adapter.subdomain,
        adapter.url_scheme,
        adapter.path_info,
        adapter.default_method,
    )


def _shapes_of(url_map: Any, rules: list[Any]) -> Any:
    from werkzeug.routing import Map

    return Map(
        [_shape_of(rule) for rule in rules],
        default_subdomain=url_map.default_subdomain,
        strict_slashes=url_map.strict_slashes,
        merge_slashes=url_map.merge_slashes,
        redirect_defaults=url_map.redirect_defaults,
        converters={name: _shape_only(kind) for name, kind in url_map.converters.items()},
        host_matching=url_map.host_matching,
    )


def _shape_of(rule: Any) -> Any:
    """``rule`` made again as werkzeug's own ``Rule``: what decides a match (path, host,
    subdomain, methods, slashes) and nothing of an app's ``url_rule_class``, which may need
    arguments of its own to be made (``rule.empty()`` would fail on them)."""
    from werkzeug.routing import Rule

    return Rule(
        rule.rule,
        defaults=rule.defaults,
        subdomain=rule.subdomain,
        methods=rule.methods,
        build_only=rule.build_only,
        endpoint=rule.endpoint,
        strict_slashes=rule.strict_slashes,
        merge_slashes=rule.merge_slashes,
        redirect_to=rule.redirect_to,
        alias=rule.alias,
        host=rule.host,
        websocket=rule.websocket,
    )


def _shape_only(converter: type) -> type:
    """``converter`` with its pattern, keeping the matched text as it is."""
    return type(converter.__name__, (converter,), {"to_python": _as_matched})


def _as_matched(self: object, value: str) -> str:
    return value


def _mount_of(environ: Environ) -> str:
    """The mount paths (``/shop``) of the ``DispatcherMiddleware`` instances leading from the
    app tracekit wraps to the Flask app handling the request; "" for none. Read from the
    application's own configuration, never from the request's ``SCRIPT_NAME`` (a proxy's
    prefix, or ``X-Forwarded-Prefix`` through ``ProxyFix``, is not part of a route), which
    only tells which of them the request came through when the app is mounted twice."""
    root = environ.get(ROOT_KEY)
    flask = sys.modules.get("flask")
    if root is None or flask is None or _is_flask_own(root, flask) or not flask.has_app_context():
        return ""
    handler = flask.current_app._get_current_object()
    known = _MOUNTS.get((id(root), id(handler)))
    if known is not None and known[0]() is root and known[1]() is handler:
        paths = known[2]
    else:
        found: list[str] = []
        _mount_paths(root, handler, "", 0, found)
        paths = tuple(found) or ("",)
        if len(_MOUNTS) < CACHE_LIMIT:
            _remember_mounts(root, handler, paths)
    return paths[0] if len(paths) == 1 else _mount_taken(paths, environ.get("SCRIPT_NAME"))


def _remember_mounts(root: object, handler: object, paths: tuple[str, ...]) -> None:
    key = (id(root), id(handler))

    def forget(_: object) -> None:  # (called as one of the two is freed: before its id is reused)
        _MOUNTS.pop(key, None)

    with contextlib.suppress(TypeError):  # an app that cannot be weakly referenced: not kept
        _MOUNTS[key] = (weakref.ref(root, forget), weakref.ref(handler, forget), paths)


def _is_flask_own(app: object, flask: Any) -> bool:
    """Whether ``app`` is a Flask app's own ``wsgi_app`` (the usual ``app.wsgi_app =
    TracekitMiddleware(app.wsgi_app)``): that app handles every request, mounted nowhere below,
    which is told without looking up the app handling the request."""
    return getattr(app, "__func__", None) is flask.Flask.wsgi_app and isinstance(
        getattr(app, "__self__", None), flask.Flask
    )


def _mount_paths(app: object, handler: object, prefix: str, depth: int, found: list[str]) -> None:
    """Add to ``found`` the mount paths from ``app`` down to ``handler`` through wrappers that
    keep the app they wrap as ``app`` (``ProxyFix``, ``DispatcherMiddleware``'s default app)."""
    for _ in range(_MAX_WRAPPERS):
        if app is None or len(found) >= _MAX_MOUNTS_OF_AN_APP:
            return
        if app is handler or getattr(app, "__self__", None) is handler:
            found.append(prefix)
            return
        mounts = getattr(app, "mounts", None)
        if isinstance(mounts, dict) and depth < _MAX_WRAPPERS:
            for path, mounted in mounts.items():
                if isinstance(path, str):
                    _mount_paths(mounted, handler, prefix + path, depth + 1, found)
        app = getattr(app, "app", None)


def _mount_taken(paths: tuple[str, ...], script_name: object) -> str:
    """The longest of ``paths`` that ``SCRIPT_NAME`` ends with (the dispatcher appends the
    mount it took to it), else the first: the client's prefix only chooses among them."""
    if not isinstance(script_name, str):
        return paths[0]
    taken = [path for path in paths if script_name.endswith(path)]
    return max(taken, key=len) if taken else paths[0]


def _template(rule: str) -> str:
    """``/orders/<int:order_id>`` -> ``/orders/{order_id}`` (an app has few rules: kept)."""
    template = _TEMPLATES.get(rule)
    if template is None:
        template = braced_route(rule)
        if len(_TEMPLATES) < CACHE_LIMIT:
            _TEMPLATES[rule] = template
    return template


def _connect_signals(app: Any) -> None:
    """Leave the exceptions of views for the middleware to record (idempotent): of ``app`` and
    of the Flask apps mounted below it (``DispatcherMiddleware``), in the requests tracekit's
    middleware handles for a Flask app (``ROOT_KEY`` in their environ); others are left alone.

    Route names need no signal: a receiver of ``request_started`` would run on every request,
    while the middleware reads the url rule for free when the response starts. But for a
    ``BaseException`` that is no ``Exception`` (gunicorn's sync worker stops a request past its
    timeout with ``SystemExit``): Flask sends no ``got_request_exception`` for it and no response
    starts, so the route is read as the request is torn down (a receiver that returns at once
    for every other request).
    """
    import flask

    flask.got_request_exception.connect(_record_exception, weak=False)
    flask.request_tearing_down.connect(_remember_route_of_an_exit, weak=False)
    _handled_exceptions.instrument()


@guarded(None)
def _record_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    import flask

    environ = flask.request.environ
    if ROOT_KEY in environ:
        remember_route(environ)
        environ[ERROR_KEY] = exception


@guarded(None)
def _remember_route_of_an_exit(sender: Any, exc: BaseException | None = None, **extra: Any) -> None:
    if exc is None or isinstance(exc, Exception):
        return
    import flask

    environ = flask.request.environ
    if ROOT_KEY in environ:
        remember_route(environ)


class _HandledExceptions(Instrumentor):
    """The exceptions of views that an application's error handler answers
    (``@app.errorhandler(Exception)`` making an API's JSON 500): Flask sends no
    ``got_request_exception`` for them. ``handle_user_exception`` is where Flask hands an
    exception to its handler; an ``HTTPException`` (``abort(503)``) is an answer, not one."""

    target = "flask.app"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.Flask, "handle_user_exception", _leave_handled_exception)


_handled_exceptions = _HandledExceptions()


def _leave_handled_exception(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    answer = wrapped(*args, **kwargs)  # no handler: raised again, for got_request_exception
    _remember_handled(args[0] if args else kwargs.get("e"))
    return answer


@guarded(None)
def _remember_handled(exception: object) -> None:
    import flask
    from werkzeug.exceptions import HTTPException

    environ = flask.request.environ
    answered = isinstance(exception, Exception) and not isinstance(exception, HTTPException)
    if answered and ROOT_KEY in environ:
        environ[HANDLED_ERROR_KEY] = exception
