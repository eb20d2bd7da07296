"""tracekit's own, bounded readers and writers of the headers ``tracekit.propagation`` carries.

- ``baggage``: the W3C baggage reader (bounded, member by member, silent);
- ``trace_formats``: B3, Jaeger and X-Ray trace headers.
"""
