"""SIGTERM in plain processes where tracekit's handler does not end the process itself.

A host handler installed after ``init`` replaces tracekit's; many chain to the handler they
replaced (``previous = signal.getsignal(SIGTERM)`` ... ``previous(signum, frame)``). The host's
handler then decides how the process ends, and tracekit's part is to flush. And a container's
PID 1 (no init in front of it) outlives SIGTERM's default action: so must tracekit.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from stopping import Service, pid_namespace_prefix

from tracekit.receiver import Receiver, ReceiverConfig
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


PID_ONE_WORKER = """
    import logging, os, signal, time
    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
    set_correlation_id("job-1")
    log = logging.getLogger("worker")
    log.warning("before SIGTERM")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    log.warning("after SIGTERM")
    print("pid", os.getpid(), "outlived SIGTERM", flush=True)
"""


def test_pid_one_outlives_sigterm_with_tracekit_still_exporting(service: Service) -> None:
    """A container's PID 1 without an init: the kernel ignores SIGTERM's default action."""
    prefix = pid_namespace_prefix()
    script = service.write("worker.py", PID_ONE_WORKER)
    result = subprocess.run(
        [*prefix, sys.executable, str(script)],
        env=service.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "pid 1 outlived SIGTERM" in result.stdout
    assert _stored_bodies(service) == ["before SIGTERM", "after SIGTERM"]


PID_ONE_AFTER_SIGTERM = """
    import os, signal
    import tracekit

    tracekit.init("worker")
    alarms = []
    signal.signal(signal.SIGALRM, lambda *_: alarms.append(1))
    os.kill(os.getpid(), signal.SIGTERM)  # handled, and outlived
    signal.alarm(3)
    signal.pause()  # until the next signal this process gets
    print("woken by", "the alarm" if alarms else "another signal", flush=True)
"""


def test_pid_one_gets_no_second_sigterm_nobody_sent(service: Service) -> None:
    """tracekit wakes a main thread whose SIGTERM handler has not run a second after the
    signal. A PID 1 ran it and lived on, with tracekit's handler back in place: taken for one
    that had not run, it was sent SIGTERM again, a signal nobody had sent."""
    prefix = pid_namespace_prefix()
    script = service.write("worker.py", PID_ONE_AFTER_SIGTERM)
    result = subprocess.run(
        [*prefix, sys.executable, str(script)],
        env=service.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout == "woken by the alarm\n"


PENDING_WORK = """
    import logging, time
    import tracekit
    from opentelemetry import trace
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
    set_correlation_id("job-1")
    with trace.get_tracer("t").start_as_current_span("pending"):
        logging.getLogger("worker").warning("pending log line")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_sigterm_flushes_logs_beside_spans_whose_endpoint_hangs(service: Service) -> None:
    """Spans go to a backend that never answers, log records to one that works: the flush
    on SIGTERM gives each the whole export timeout, side by side, as ``shutdown()`` does."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    receiver = Receiver(Store(service.store), ReceiverConfig(port=0, grpc_port=0)).start()
    try:
        service.write("worker.py", PENDING_WORK)
        service.start(
            "worker.py",
            TRACEKIT_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{blackhole.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{receiver.endpoint}/v1/logs",
            OTEL_EXPORTER_OTLP_TIMEOUT="60", OTEL_BSP_EXPORT_TIMEOUT="2000",
        )  # fmt: skip
        service.wait_output("ready")
        assert service.terminate() == -signal.SIGTERM
    finally:
        receiver.stop()
        blackhole.close()
    assert _stored_bodies(service) == ["pending log line"]


# A main thread that logs, then blocks for good (like a pool worker waiting for its next task)
# as a SIGTERM lands that another thread noted: the end of the scripts below.
BLOCKED_AS_SIGTERM_LANDS = """
    set_correlation_id("job-1")
    logging.getLogger("worker").warning("pending log line")
    never_released = threading.Lock()
    never_released.acquire()

    def sigterm_noted_by_another_thread():
        time.sleep(0.5)  # the main thread is waiting by now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=sigterm_noted_by_another_thread).start()
    print("ready", flush=True)
    never_released.acquire()
"""

BLOCKED_WHEN_SIGTERM_LANDS = (
    """
    import logging, signal, threading, time
    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
"""
    + BLOCKED_AS_SIGTERM_LANDS
)


def test_sigterm_ends_a_process_whose_main_thread_is_blocked_when_it_lands(
    service: Service,
) -> None:
    """CPython runs a Python signal handler in the main thread, between bytecodes. A SIGTERM
    noted while the main thread is already blocked (delivered to another thread, or landing
    just before the wait starts: a pool worker waiting for its next task when the pool is
    terminated, tests/lifecycle/test_workers_flush.py) was never handled: with tracekit's
    handler in place of the default action, the process lived on and its parent waited for it
    for ever."""
    service.write("worker.py", BLOCKED_WHEN_SIGTERM_LANDS)
    service.start("worker.py")
    service.wait_output("ready")
    assert service.process is not None

    assert service.process.wait(30) == -signal.SIGTERM, service.output()
    assert _stored_bodies(service) == ["pending log line"]


PRELOADED_APP = """
    import logging, signal, threading, time
    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")  # at import: in the fork server too, which preloads this module

    def blocked_when_sigterm_lands():
        set_correlation_id("job-1")
        logging.getLogger("worker").warning("pending log line")
        never_released = threading.Lock()
        never_released.acquire()

        def sigterm_noted_by_another_thread():
            time.sleep(0.5)  # the main thread is waiting by now
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        threading.Thread(target=sigterm_noted_by_another_thread).start()
        never_released.acquire()  # waits for good, like a pool worker for its next task
"""

FORK_SERVER_PARENT = """
    import multiprocessing as mp

    if __name__ == "__main__":
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["app"])
        import app

        child = context.Process(target=app.blocked_when_sigterm_lands)
        child.start()
        child.join(20)
        print("child exit code", child.exitcode, flush=True)
        if child.exitcode is None:
            child.kill()
"""


def test_sigterm_ends_a_fork_server_child_whose_main_thread_is_blocked(
    service: Service,
) -> None:
    """A fork server that preloads the app runs ``init`` and then sets a wakeup fd of its own;
    its children, forked with tracekit's SIGTERM handler but no watcher, lived on after a
    SIGTERM that landed while their main thread was blocked (a pool that never finished
    terminating)."""
    service.write("app.py", PRELOADED_APP)
    service.write("parent.py", FORK_SERVER_PARENT)
    service.start("parent.py")
    assert service.process is not None

    assert service.process.wait(60) == 0, service.output()
    assert f"child exit code {-signal.SIGTERM}" in service.output()
    assert _stored_bodies(service) == ["pending log line"]


PARENT_OF_A_TERMINATED_CHILD = """
    import multiprocessing as mp, time
    import tracekit

    tracekit.init("parent")

    if __name__ == "__main__":
        child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        time.sleep(0.5)
        child.terminate()
        child.join()
        time.sleep(2)  # longer than tracekit waits for a handler to run
        print("child", child.exitcode, "parent still here", flush=True)
"""


def test_a_forked_childs_sigterm_leaves_its_parent_alone(service: Service) -> None:
    """A forked child inherits the wakeup socket that tells of SIGTERM, but not the thread that
    listens on it: it listens on its own, so its SIGTERM does not reach the parent's."""
    service.write("parent.py", PARENT_OF_A_TERMINATED_CHILD)
    service.start("parent.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert f"child {-signal.SIGTERM} parent still here" in service.output()


WORKER_STARTING_TRACEKIT_AFTER_FORK = """
    import logging, os, signal, time  # logging imports threading, as nearly every program does

    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker that starts tracekit itself, as after a pre-fork server's fork
        import tracekit
        from tracekit.correlation import set_correlation_id

        tracekit.init("forked-worker")
        set_correlation_id("job-1")
        logging.getLogger("worker").warning("took a message")
        os.write(ready_write, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(ready_read, 1)
    os.kill(pid, signal.SIGTERM)
    print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def test_a_child_of_fork_that_starts_tracekit_flushes_on_sigterm(service: Service) -> None:
    """The child's main thread is the one that forked, where its SIGTERM handler belongs,
    though threading still names the parent's system thread id there (Python 3.11)."""
    service.write("parent.py", WORKER_STARTING_TRACEKIT_AFTER_FORK)
    service.start("parent.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert f"child {-signal.SIGTERM}" in service.output()
    assert _stored_bodies(service) == ["took a message"], service.output()


ASYNCIO_APP_RELOADING_ON_SIGHUP = """
    import asyncio, os, signal
    import tracekit

    async def main():
        loop = asyncio.get_running_loop()
        reloaded = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, reloaded.set)
        tracekit.init("app")  # at startup, inside the app, as a lifespan handler calls it
        os.kill(os.getpid(), signal.SIGHUP)
        try:
            await asyncio.wait_for(reloaded.wait(), 10)
            print("reloaded", flush=True)
        except TimeoutError:
            print("SIGHUP never handled", flush=True)

    asyncio.run(main())
"""


def test_an_event_loops_signal_handlers_still_run_after_init(service: Service) -> None:
    """asyncio's ``add_signal_handler`` hears of signals on the wakeup fd it set. ``init``
    found it there, left it, and then cleared it: the loop never heard of a signal again."""
    service.write("app.py", ASYNCIO_APP_RELOADING_ON_SIGHUP)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert service.output().splitlines() == ["reloaded"]


BLOCKED_AFTER_AN_EVENT_LOOP = (
    """
    import asyncio, logging, signal, threading, time
    import tracekit
    from tracekit.correlation import set_correlation_id

    INIT_BEFORE_THE_LOOP = {init_before_the_loop}
    if INIT_BEFORE_THE_LOOP:
        tracekit.init("worker")

    async def start_up():  # takes the wakeup fd over, and clears it as the loop closes
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, print, "reload")
        if not INIT_BEFORE_THE_LOOP:
            tracekit.init("worker")  # finds the loop's wakeup fd set

    asyncio.run(start_up())
"""
    + BLOCKED_AS_SIGTERM_LANDS
)


@pytest.mark.parametrize("init_before_the_loop", [True, False])
def test_sigterm_ends_a_blocked_process_after_an_event_loop_cleared_the_wakeup_fd(
    service: Service, init_before_the_loop: bool
) -> None:
    """asyncio's ``add_signal_handler`` sets the loop's own wakeup fd over tracekit's (or
    ``init`` finds it set), and the loop clears it (``set_wakeup_fd(-1)``) as it closes:
    tracekit heard of no SIGTERM after that, and a process blocked when one landed lived on."""
    service.write(
        "worker.py",
        BLOCKED_AFTER_AN_EVENT_LOOP.replace("{init_before_the_loop}", str(init_before_the_loop)),
    )
    service.start("worker.py")
    service.wait_output("ready")
    assert service.process is not None

    assert service.process.wait(30) == -signal.SIGTERM, service.output()
    assert _stored_bodies(service) == ["pending log line"]


FORKING_PARENT = """
    import gc, os
    import tracekit

    tracekit.init("parent")
    child = os.fork()
    if child == 0:
        gc.collect()
        print("child open fds", len(os.listdir("/proc/self/fd")), flush=True)
        os._exit(0)
    os.waitpid(child, 0)
    print("parent open fds", len(os.listdir("/proc/self/fd")), flush=True)
"""


def test_a_forked_child_leaves_no_socket_of_its_parents_unclosed(service: Service) -> None:
    """A forked child dropped the parent's wakeup socket without closing it (a ResourceWarning
    under ``python -X dev``) and kept the other end open for good."""
    service.write("parent.py", FORKING_PARENT)
    service.start("-X", "dev", "parent.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    output = service.output()
    assert "ResourceWarning" not in output, output
    counts = dict(line.split(" open fds ") for line in output.splitlines() if "open fds" in line)
    assert counts["child"] == counts["parent"], output  # its own wakeup socket for the parent's


SHUTDOWN_FROM_A_HANDLER_DURING_INIT = """
    import logging, os, signal, sys
    import tracekit
    from opentelemetry import trace
    from tracekit.correlation import set_correlation_id

    def on_sigterm(signum, frame):
        tracekit.shutdown()
        print("tracekit shut down", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)

    class SigtermNow(logging.Handler):
        def emit(self, record):  # SIGTERM lands while init runs, as a platform's may
            os.kill(os.getpid(), signal.SIGTERM)

    tracekit.init("worker")
    set_correlation_id("job-1")
    with trace.get_tracer("worker").start_as_current_span("job"):
        logging.getLogger("worker").warning("working")
    logging.getLogger("tracekit").addHandler(SigtermNow(logging.DEBUG))
    logging.getLogger("tracekit").setLevel(logging.DEBUG)
    tracekit.init("worker")  # a library calling it again (it logs that at DEBUG)
    print("init returned", flush=True)
"""


def test_a_host_handler_calling_shutdown_while_init_runs_does_not_hang(
    service: Service,
) -> None:
    """The handler runs in the thread it interrupted, inside ``init``: its ``shutdown()`` waited
    for the lock ``init`` holds, for ever. The stop now waits for ``init`` to end instead."""
    service.write("worker.py", SHUTDOWN_FROM_A_HANDLER_DURING_INIT)
    service.start("worker.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    output = service.output()
    assert "tracekit shut down" in output.splitlines()
    assert "Traceback" not in output
    assert [span.name for span in service.spans()] == ["job"]
    assert _stored_bodies(service) == ["working"]


PID_ONE_SIGTERM_DURING_SHUTDOWN = """
    import logging, os, signal
    import tracekit
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor
    from tracekit.correlation import set_correlation_id

    class SigtermWhileStopping(SpanProcessor):
        armed = True

        def force_flush(self, timeout_millis=30000):
            if self.armed:  # the platform's SIGTERM lands while shutdown() flushes
                self.armed = False
                os.kill(os.getpid(), signal.SIGTERM)
            return True

    tracekit.init("worker")
    trace.get_tracer_provider().add_span_processor(SigtermWhileStopping())
    tracekit.shutdown()  # handled once this stop is done, and outlived
    tracekit.init("worker")
    set_correlation_id("job-1")
    logging.getLogger("worker").warning("after the first SIGTERM")
    os.kill(os.getpid(), signal.SIGTERM)
    print("pid", os.getpid(), "outlived both", flush=True)
    os._exit(0)  # the platform's SIGKILL after its grace period: no exit hook runs
"""


def test_pid_one_flushes_at_a_second_sigterm_after_one_that_waited_for_a_stop(
    service: Service,
) -> None:
    """A SIGTERM that lands while a stop runs is raised again when that stop is done. A PID 1
    outlived it, and tracekit took itself for still terminating: the next SIGTERM flushed
    nothing."""
    prefix = pid_namespace_prefix()
    script = service.write("worker.py", PID_ONE_SIGTERM_DURING_SHUTDOWN)
    result = subprocess.run(
        [*prefix, sys.executable, str(script)],
        env=service.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "pid 1 outlived both" in result.stdout
    assert _stored_bodies(service) == ["after the first SIGTERM"]
