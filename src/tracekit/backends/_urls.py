"""The URL and headers a user gives a read backend: checked before anything is sent.

``split_url`` refuses a URL that cannot be what the user meant (with a reason that never
repeats a password) and turns its ``user:password@`` into an Authorization header;
``secrets_of`` lists what an error must never repeat of the headers sent; ``proxy_for`` names the
proxy the environment sends the requests through, for errors to mention.
"""

from __future__ import annotations

import base64
import contextlib
import os
import urllib.parse
import urllib.request
from collections.abc import Iterable

from tracekit.records import BackendError

_ASCII = "".join(map(chr, range(0x80)))


def proxy_for(url: str) -> str | None:
    """The proxy urllib sends requests for ``url`` through, as the environment names it
    (``http_proxy``, ``HTTPS_PROXY``; not for the hosts ``no_proxy`` lists), shown as
    ``http://host:port that HTTPS_PROXY names``, without its user and password; None for none."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    # urllib prefers the lower-case variable, takes any case (Http_Proxy), and on macOS and
    # Windows reads the system's proxy settings where no variable names one
    spellings = sorted(
        (n for n in os.environ if n.lower() == f"{parts.scheme}_proxy"), reverse=True
    )
    named = next((n for n in spellings if os.environ[n]), "the system's proxy setting")
    try:
        where = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        shown = f"{where.scheme}://{where.netloc.rpartition('@')[2]}"
    except ValueError:  # an unclosed "[": urllib fails on it too, as it connects
        shown = "(not a valid URL)"
    text = " ".join("".join(c if c.isprintable() else " " for c in shown).split())
    return f"{text[:80]} that {named[:40]} names"


def split_url(raw: str, name: str) -> tuple[str, dict[str, str]]:
    """The URL without credentials, and the Authorization header its ``user:password@`` gives."""
    try:
        parsed = urllib.parse.urlsplit(raw.strip())
    except ValueError as error:  # an unclosed "[" of an IPv6 address, and others below
        raise BackendError(f"{name} URL is not valid: {_unsplit(str(error))}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        shown = raw.strip().rpartition("@")[2].partition("?")[0][:80]  # no userinfo, no query
        raise BackendError(f"{name} URL must look like http(s)://host[:port][/path], got {shown!r}")
    if "@" in parsed.path + parsed.query + parsed.fragment:
        # user:pass/word@host: the "/" ended the host part, leaving the rest of the password in
        # the path every error shows, and the request going to a host named after the user.
        # A path's own '@' (a proxy's) cannot be told from that, but it works written as %40.
        raise BackendError(f"{name} URL has an '@' after its host: a user name or password "
                           "holding '/', '#' or '?' must be percent-encoded (%2F, %23, "
                           "%3F), and an '@' in its path as %40")  # fmt: skip
    if parsed.query:
        raise BackendError(f"{name} URL must not carry a query string (send headers instead)")
    try:
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        shown = parsed.netloc.rpartition("@")[2][:80]  # host:port, no userinfo
        raise BackendError(f"{name} URL has an invalid port: {shown!r}") from None
    try:  # what the resolver would do, failing there as an internal error
        parsed.hostname.encode("idna")
    except UnicodeError:
        raise BackendError(f"{name} URL has an invalid host name: {parsed.hostname[:80]!r} (an "
                           "empty part, or one over 63 characters)") from None  # fmt: skip
    host = parsed.netloc.rpartition("@")[2]
    # a path as a browser shows it (/tëmpo) is sent as a browser sends it, UTF-8 percent-encoded
    # (http.client sends ASCII alone); ASCII is kept as typed, escapes and refused spaces alike
    path = urllib.parse.quote(parsed.path.rstrip("/"), safe=_ASCII)
    url = urllib.parse.urlunsplit((parsed.scheme, host, path, "", ""))
    if parsed.username is None:
        return url, {}
    user = urllib.parse.unquote(parsed.username)
    password = urllib.parse.unquote(parsed.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return url, {"Authorization": f"Basic {token}"}


def _unsplit(why: str) -> str:
    """Why ``urlsplit`` refused a URL, in its words where they repeat none of it ("Invalid IPv6
    URL"); in others where they quote the whole host part, password and all, or the text in
    its brackets, which may be a password's ("user:pa[ss]word@host")."""
    if why.endswith("contains invalid characters under NFKC normalization"):
        return ("a character of its user name, password or host becomes '/', '?', '#', '@' or "
                "':' under NFKC normalization (percent-encode it)")  # fmt: skip
    if why.endswith("does not appear to be an IPv4 or IPv6 address"):
        return "what it holds in brackets is no IP address (percent-encode a password's '[', ']')"
    return why


def secrets_of(values: Iterable[str]) -> list[str]:
    """Each value, its credentials without the scheme (``Bearer``, ``Basic``) and basic auth's
    decoded ``user:password`` and password (a server may repeat what it decoded), longest first.
    Values under three characters are left out: redacting them would garble every message."""
    found: set[str] = set()
    for value in values:
        scheme, _, credentials = value.partition(" ")
        found |= {value, credentials}
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                decoded = base64.b64decode(credentials, validate=True).decode()
                found |= {decoded, decoded.partition(":")[2]}
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)
