"""tracekit's benchmarks: plain scripts that print tables, never timed unit tests.

Run one with ``python -m bench.<module>`` or all of them with ``python -m bench``. Each benchmark
module is named ``<area>_bench.py`` and defines ``main(argv: list[str] | None = None) -> int``.
"""
