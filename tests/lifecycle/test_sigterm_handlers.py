"""SIGTERM in a plain process whose own handler comes after ``tracekit.init()``.

A host handler installed after ``init`` replaces tracekit's; many chain to the handler they
replaced (``previous = signal.getsignal(SIGTERM)`` ... ``previous(signum, frame)``). The host's
handler then decides how the process ends, and tracekit's part is to flush.
"""

from __future__ import annotations

from stopping import Service

from tracekit.store import Store

CHAINING_CONSUMER = """
    import logging, signal, time
    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("consumer")
    set_correlation_id("job-1")
    log = logging.getLogger("consumer")
    stopping = False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        global stopping
        stopping = True
        print("host handler ran", flush=True)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    log.warning("took a message")
    print("ready", flush=True)
    while not stopping:
        time.sleep(0.05)
    log.warning("finished the last message")
    print("graceful end", flush=True)
"""


def _stored_bodies(service: Service) -> list[str]:
    with Store(service.store) as store:
        return [str(log.body) for log in store.logs_by_correlation_id("job-1")]


def test_a_host_handler_chaining_to_tracekits_ends_the_process_its_own_way(
    service: Service,
) -> None:
    service.write("consumer.py", CHAINING_CONSUMER)
    service.start("consumer.py")
    service.wait_output("ready")

    assert service.terminate() == 0, service.output()
    output = service.output()
    assert output.count("host handler ran") == 1, output
    assert "graceful end" in output
    assert "Traceback" not in output
    assert _stored_bodies(service) == ["took a message", "finished the last message"]
