"""The ``tracekit`` command line: thin click commands over the tracekit library."""
