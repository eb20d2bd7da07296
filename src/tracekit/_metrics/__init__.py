"""Helpers behind ``tracekit.metrics``.

- ``families``: one family per metric name in a registry, whose series every service's
  collectors add to.
- ``local``: single-process metric families that count under one lock and format only when
  scraped, exposed exactly as prometheus-client's own classes would be.
- ``server``: the metrics port's HTTP server, its connections bounded in number and time.
"""
