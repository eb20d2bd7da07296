"""Helpers behind ``tracekit.metrics``.

- ``local``: single-process metric families that count under one lock and format only when
  scraped, exposed exactly as prometheus-client's own classes would be.
"""
