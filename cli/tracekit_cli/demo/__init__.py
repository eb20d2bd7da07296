"""tracekit demo: a small multi-service topology that runs on one machine."""
