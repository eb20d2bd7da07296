"""A store filled through the real OTLP/HTTP receiver, as another language's SDK fills it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store


def received_store(path: Path, documents: Iterable[dict[str, Any]]) -> Path:
    """``path``, a store holding each OTLP/JSON traces document POSTed to a receiver on a free
    loopback port (each answered 200)."""
    receiver = Receiver(Store(path), ReceiverConfig(port=0))
    receiver.start()
    try:
        for document in documents:
            connection = http.client.HTTPConnection(*receiver.address, timeout=30)
            body = json.dumps(document)
            connection.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
            assert connection.getresponse().status == 200
            connection.close()
    finally:
        receiver.stop()
    return path
