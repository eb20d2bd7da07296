"""The machinery behind ``tracekit.messaging``, shared by every queue integration.

- ``producer``: ``Publishing``, the PRODUCER span around one broker call, and the headers it
  writes;
- ``consumer``: ``Delivery``, the CONSUMER span around one handler;
- ``held``: ``HeldDeliveries``, the deliveries of pull APIs kept open between their calls;
- ``received``: what one received message's headers say (its producer's context, correlation ID
  and publish time), read once as its consumer takes it;
- ``headers``: which fields a hop carries under the options in force (``reading_for``), and
  reading a received message's headers, bounded and validated;
- ``spans``: what both sides' spans are built from (attributes, message ID, tracer);
- ``amqp``: RabbitMQ's naming, shared by the pika and aio-pika instrumentations.
"""
