"""Route templates from Django's resolver: ``/orders/{order_id}`` whatever the URL pattern kind.

The resolver records the chain of patterns that matched (``ResolverMatch.tried[-1]``), from the
root URLconf down to the view. Each contributes its part of the template:

- ``path()``: ``orders/<int:order_id>`` -> ``orders/{order_id}``;
- ``re_path()``: ``^legacy/(?P<slug>[a-z]+)/$`` -> ``legacy/{slug}/``; unnamed groups become
  ``{0}``, ``{1}``... numbered from the left of the whole route (Django passes them to the view
  positionally); escaped punctuation loses its backslash, anchors go, anything else stays;
- ``i18n_patterns()``: the language prefix (``fr/``) -> ``{language}/``, so one view is one route
  in every language (no prefix for the default language when ``prefix_default_language=False``:
  told by the language ``LocaleMiddleware`` made active as the request was resolved, not by the
  one active as the route is read, which a view may have changed).

Without that chain (a resolver match someone built by hand) the route string is read the same way.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

from tracekit._http.server import braced_route

_NAMED_GROUP = re.compile(r"\(\?P<([^>]+)>")
_QUANTIFIER = re.compile(r"[?*+]|\{\d*,?\d*\}")


def route_of(request: Any) -> str | None:
    """The route template of the view that handled ``request``; None if it was not resolved."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    chain = getattr(match, "tried", None)
    numbers = itertools.count()
    if chain and isinstance(chain[-1], list | tuple):
        parts = [_part(getattr(p, "pattern", None), numbers, request) for p in chain[-1]]
        if None not in parts:
            return "/" + "".join(str(part) for part in parts)
    return "/" + braced_route(_regex_template(route, numbers))


def _part(pattern: object, numbers: Iterator[int], request: Any) -> str | None:
    kind = type(pattern).__name__
    if kind == "RoutePattern":
        return braced_route(str(pattern))
    if kind == "RegexPattern":
        return _regex_template(str(pattern), numbers)
    if kind == "LocalePrefixPattern":
        return "{language}/" if _language_prefixed(pattern, request) else ""
    return None  # a pattern class tracekit does not know: use the resolver's route string


def _language_prefixed(pattern: object, request: Any) -> bool:
    """Whether the resolver matched a language prefix: as ``LocalePrefixPattern`` tells it, for
    the language ``LocaleMiddleware`` made active before resolving (``request.LANGUAGE_CODE``),
    which the view may have changed since (``translation.activate`` of a user's preference).
    Not by the path: ``/en/news/`` in an unprefixed default language (English) is an English
    page whose first part is a parameter. Without that middleware, the language active now."""
    from django.conf import settings

    language = getattr(request, "LANGUAGE_CODE", None)
    if not isinstance(language, str):
        return bool(str(pattern))
    prefixes_default = getattr(pattern, "prefix_default_language", True)
    return bool(prefixes_default) or language != settings.LANGUAGE_CODE


def _regex_template(regex: str, numbers: Iterator[int]) -> str:
    """``^files/(?P<name>[\\w.-]+)\\.json$`` -> ``files/{name}.json``."""
    regex = regex.removeprefix("^").removesuffix("$").removesuffix("\\Z")
    out: list[str] = []
    i = 0
    while i < len(regex):
        char = regex[i]
        if char == "\\" and i + 1 < len(regex):
            escaped = regex[i + 1]
            out.append(regex[i : i + 2] if escaped.isalnum() else escaped)
            i += 2
        elif _is_capturing_group(regex, i):
            named = _NAMED_GROUP.match(regex, i)
            out.append(f"{{{named.group(1) if named else next(numbers)}}}")
            i = _after_quantifier(regex, _group_end(regex, i) + 1)
        elif char == "[":
            end = _class_end(regex, i)
            out.append(regex[i:end])
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _is_capturing_group(regex: str, i: int) -> bool:
    """``(`` alone or ``(?P<name>``; not ``(?:``, look-arounds or inline flags."""
    if not regex.startswith("(", i):
        return False
    return not regex.startswith("(?", i) or _NAMED_GROUP.match(regex, i) is not None


def _group_end(regex: str, start: int) -> int:
    """Index of the ``)`` closing the group opened at ``start`` (or the end of the string)."""
    depth = 0
    i = start
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(regex, i)
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return i
        i += 1
    return len(regex)


def _class_end(regex: str, start: int) -> int:
    """Index just past the ``]`` closing the character class opened at ``start``."""
    i = start + 1
    if regex.startswith("^", i):
        i += 1
    if regex.startswith("]", i):
        i += 1  # a leading ] is a literal
    while i < len(regex) and regex[i] != "]":
        i += 2 if regex[i] == "\\" else 1
    return i + 1


def _after_quantifier(regex: str, i: int) -> int:
    """Skip a quantifier (``?``, ``+``, ``{2,3}``, lazy or not) right after a group."""
    quantifier = _QUANTIFIER.match(regex, i)
    if quantifier is None:
        return i
    end = quantifier.end()
    return end + 1 if regex.startswith("?", end) else end
