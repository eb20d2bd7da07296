"""tracekit's benchmarks: plain scripts that print tables, never timed unit tests.

Run one with ``python -m bench.<module>`` or all of them with ``python -m bench`` (arguments such
as ``--quick`` are passed to every module). Every module not starting with ``_`` is a benchmark
runnable with ``python -m``; ``_name.py`` modules are shared helpers (``_report`` prints tables and
rewrites one section of docs/benchmarks.md).
"""
