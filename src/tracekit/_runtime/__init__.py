"""What ``tracekit.init()`` starts and what keeps it harmless to the host.

- ``setup``: ``init`` and ``shutdown``, wiring the SDK, logs, metrics and instrumentation;
- ``state``: the one ``Runtime`` that owns what ``init`` started, and the process's pointer to it;
- ``lifecycle``: flushing on every way a process ends (atexit, lifespan, Celery, SIGTERM);
- ``guard``: never break the host (report once, guarded hooks, marking a span failed, the
  suppression check);
- ``limits``: span and log record limits from ``OTEL_*_LIMIT``, a value the SDK refuses left out;
- ``ratelimit``: warnings about untrusted input, at most one a minute;
- ``export_watch``: one warning when the OTLP endpoint takes nothing, one line when it takes
  again.
"""
