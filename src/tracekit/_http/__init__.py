"""What tracekit's HTTP servers and clients share, behind the public middleware modules.

- ``server``: one request's correlation ID, SERVER span and metrics, for every framework;
- ``client``: the CLIENT span, headers and metrics of one outgoing call, for every HTTP library;
- ``wsgi_environ``, ``asgi_types``: reading a WSGI environ; the ASGI interface's types;
- ``server_errors``: the correlation header on Starlette's 500 page;
- ``django_routes``: Django's matched URL pattern as a ``{name}`` route template;
- ``django_settings``: a Django project's ``TRACEKIT`` setting, for the layer around Django.
"""
