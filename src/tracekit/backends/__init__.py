"""Read backends beyond the embedded store: Grafana Tempo and Jaeger over their HTTP APIs.

Each implements ``tracekit.records.SpanSource`` so the path engine and the CLI treat them like the
store. Import the submodule you need (``tracekit.backends.tempo``, ``tracekit.backends.jaeger``).
"""

__all__ = []
