"""What ``error.type`` (and the metrics' ``error_type``) says of a confluent-kafka failure."""

from __future__ import annotations

import confluent_kafka

from tracekit._runtime.guard import error_type


def test_a_librdkafka_error_is_named_by_its_code() -> None:
    timed_out = confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT)
    assert error_type(confluent_kafka.KafkaException(timed_out)) == "_MSG_TIMED_OUT"


class KafkaError:
    """Another library's class of the same name, whose name() is whatever it was given."""

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class KafkaException(Exception):
    pass


def test_a_lookalike_error_whose_name_is_not_a_code_is_named_by_its_class() -> None:
    for name in ("\x1b]8;;https://evil.example\x07click\x1b]8;;\x07", "a" * 65, "", "two words"):
        assert error_type(KafkaException(KafkaError(name))) == "KafkaException"
    assert error_type(KafkaException(KafkaError("BROKER_NOT_AVAILABLE"))) == "BROKER_NOT_AVAILABLE"
