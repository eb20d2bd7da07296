"""The machinery behind ``tracekit.messaging``, shared by every queue integration.

- ``consumer``: ``Delivery``, the CONSUMER span around one handler, and the span helpers the
  producer side shares;
- ``headers``: reading a received message's headers, bounded and validated.
"""
