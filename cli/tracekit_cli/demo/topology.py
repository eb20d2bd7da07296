"""Start the demo's services as processes, send them traffic, and stop them cleanly.

Library code with no terminal output of its own: ``tracekit demo`` (the CLI) drives it and draws
the progress; tests drive it directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tracekit_cli.demo.queue import open_queue
from tracekit_cli.demo.services import BULK_QUANTITY, FAILING_SKU, ROLES

HTTP_ROLES = ("gateway", "orders", "inventory")
STOP_GRACE_SECONDS = 10.0


@dataclass(slots=True)
class SentRequest:
    """One checkout the demo sent through the gateway, and what it expects to happen."""

    number: int
    sku: str
    quantity: int
    status: int
    correlation_id: str | None

    @property
    def should_fail(self) -> bool:
        """The inventory fails for this SKU."""
        return self.sku == FAILING_SKU

    @property
    def should_be_slow(self) -> bool:
        """Pricing replica 3 is slow for this order."""
        return self.quantity >= BULK_QUANTITY


# The demo talks only to its own services on loopback: a proxy the shell names (http_proxy
# without 127.0.0.1 in no_proxy, as behind a corporate proxy) would take every call away.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
open_loopback = urllib.request.build_opener(urllib.request.ProxyHandler({})).open
# prometheus-client's shared metrics directory: PROMETHEUS_MULTIPROC_DIR or its former name, which
# it still honours. Another server's, whose scrapes would sum the demo's counts with its own.
MULTIPROC_DIR = "prometheus_multiproc_dir"


def inherited_environment() -> dict[str, str]:
    """This process's environment without tracekit's, OpenTelemetry's and prometheus-client's
    settings: a shell set up for other services (``OTEL_SDK_DISABLED=true``, a sampler, an
    exporter, ``TRACEKIT_MODE=correlation``) must not leave the demo's services without spans.
    Proxies are left out too: the services call one another on loopback."""
    theirs = ("TRACEKIT_", "OTEL_")
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(theirs) and name.lower() not in (*PROXY_VARIABLES, MULTIPROC_DIR)
    }


def checkout_for(number: int) -> tuple[str, int]:
    """The demo's traffic pattern: every 4th order is bulk (slow), every 7th is discontinued."""
    sku = FAILING_SKU if number % 7 == 5 else f"sku-{100 + number}"
    quantity = BULK_QUANTITY + 2 if number % 4 == 1 else 1 + number % 3
    return sku, quantity


class _PortTaken(Exception):
    """A demo service exited because another process had taken its port."""


_START_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Topology:
    """The demo's eight processes, a queue and a store; use as a context manager."""

    def __init__(self, store_path: Path, queue: str = "auto") -> None:
        self.store_path = store_path
        self.workdir = Path(tempfile.mkdtemp(prefix="tracekit-demo-"))
        self.ports = {role: _free_port() for role in HTTP_ROLES}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._redis: subprocess.Popen[bytes] | None = None
        try:
            self.queue_url, self.queue_description = self._choose_queue(queue)
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)  # a redis-server stopped too
            raise

    def _choose_queue(self, choice: str) -> tuple[str, str]:
        redis_server = shutil.which("redis-server")
        if choice in ("auto", "redis") and redis_server and _has_module("redis"):
            return self._start_redis(redis_server)
        if choice == "redis":
            raise RuntimeError("--queue redis needs redis-server on PATH and the redis package")
        path = self.workdir / "queue.db"
        # made now (WAL mode, its table): the services, all opening it at once, found it locked
        open_queue(f"sqlite:{path}").pending()
        return f"sqlite:{path}", f"embedded SQLite queue ({path})"

    def _start_redis(self, binary: str, timeout: float = 30.0) -> tuple[str, str]:
        """Start a redis-server of the demo's own and wait until it answers.

        Its port is chosen free, then bound by it: in between another process may take it,
        another Redis even, which would answer the demo's commands. So the demo's server holds
        a password of its own (given on its standard input, not its command line, which other
        users see), and one that finds its port taken is started again on a new port.
        """
        password = secrets.token_hex(16)
        deadline = time.monotonic() + timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _free_port()
            config = f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
            with self._redis_log.open("wb") as log:  # the child has its own copy
                self._redis = subprocess.Popen(  # noqa: S603 (redis-server found on PATH, fixed args)
                    [binary, "-"],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            assert self._redis.stdin is not None
            with contextlib.suppress(BrokenPipeError), self._redis.stdin as stdin:
                stdin.write(f"{config}requirepass {password}\n".encode())  # gone: see its log
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            if self._redis_answers(url, deadline):
                return url, f"Redis (redis-server on 127.0.0.1:{port})"
            if attempt == _START_ATTEMPTS or b"already in use" not in self._redis_log.read_bytes():
                break
        raise RuntimeError(
            f"redis-server exited as it started (see {self._redis_log});"
            " --queue embedded runs the demo without it"
        )

    def _redis_answers(self, url: str, deadline: float) -> bool:
        """True once the demo's redis-server answers at ``url`` (not another one that holds its
        port: redis-py takes a server without a password for one that accepted it); False when
        it exited first."""
        import redis

        assert self._redis is not None
        client = redis.Redis.from_url(url, socket_timeout=1)
        answer = "nothing yet"
        while self._redis.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the demo's queue did not answer: {answer} (see {self._redis_log})"
                )
            try:
                if client.info("server").get("process_id") == self._redis.pid:
                    return True
                answer = "another redis-server holds its port"
            except redis.RedisError as error:
                answer = str(error)
            time.sleep(0.05)
        return False

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            # A service or queue that failed says so naming its log in the folder: keep it then.
            # Ctrl-C, output that cannot be written (a full disk) and the like name none.
            if str(self.workdir) not in str(error):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def environment(self, role: str) -> dict[str, str]:
        """What one service process runs with: tracekit writes straight into the store."""
        return {
            **inherited_environment(),
            "TRACEKIT_EXPORTER": "store",
            "TRACEKIT_STORE": str(self.store_path),
            "TRACEKIT_METRICS_PORT": "0",
            "TRACEKIT_EXCLUDED_URLS": "^/health$",  # start-up probes are not requests
            "TRACEKIT_DEMO_PORTS": json.dumps(self.ports),
            "TRACEKIT_DEMO_QUEUE": self.queue_url,
            "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={role}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, timeout: float = 30.0) -> None:
        """Start every service and wait until the HTTP ones answer.

        A service's port is chosen free, then bound by the service: in between, any process's
        outgoing connection may take it (the ports are ephemeral ones). A service that finds its
        port taken starts them all again on new ports, a few times at most.
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_services(timeout)
                return
            except _PortTaken:
                if attempt == _START_ATTEMPTS:
                    raise RuntimeError(
                        f"the demo's services found their ports taken {attempt} times"
                        f" (see {self.workdir}); try again"
                    ) from None
                self.stop()
                self.ports = {role: _free_port() for role in HTTP_ROLES}

    def _start_services(self, timeout: float) -> None:
        for role in ROLES:
            with (self.workdir / f"{role}.log").open("wb") as log:  # the child has its own copy
                self.processes[role] = subprocess.Popen(  # noqa: S603 (this interpreter, our module)
                    [sys.executable, "-m", "tracekit_cli.demo.services", role],
                    env=self.environment(role),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
                )
        deadline = time.monotonic() + timeout
        for role in HTTP_ROLES:
            self._wait_healthy(role, deadline)
        for role in ROLES:
            if role not in HTTP_ROLES:
                self._wait_ready(role, deadline)

    @property
    def _redis_log(self) -> Path:
        return self.workdir / "redis-server.log"

    def _wait_healthy(self, role: str, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.ports[role]}/health"
        while True:
            if self.processes[role].poll() is not None:
                log = self.workdir / f"{role}.log"
                if b"address already in use" in log.read_bytes().lower():
                    raise _PortTaken(role)
                raise RuntimeError(f"demo service {role} exited; see {log}")
            try:
                with open_loopback(url, timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(_did_not_start(role, self.workdir)) from None
                time.sleep(0.1)

    def _wait_ready(self, role: str, deadline: float) -> None:
        """A consumer prints ``ready`` once its tracekit setup is done and it polls its queue."""
        log = self.workdir / f"{role}.log"
        while b"ready" not in log.read_bytes():
            if self.processes[role].poll() is not None:
                raise RuntimeError(f"demo service {role} exited; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(_did_not_start(role, self.workdir))
            time.sleep(0.05)

    def send(self, number: int) -> SentRequest:
        """Send checkout number ``number`` through the gateway, as an outside client would."""
        sku, quantity = checkout_for(number)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['gateway']}/checkout",
            data=json.dumps({"sku": sku, "quantity": quantity}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with open_loopback(request, timeout=10) as response:
                status, headers = response.status, response.headers
        except urllib.error.HTTPError as error:
            status, headers = error.code, error.headers
        return SentRequest(number, sku, quantity, status, headers.get("X-Correlation-ID"))

    def wait_until_idle(self, timeout: float = 15.0, settle: float = 1.0) -> bool:
        """Wait until every queued message was handled, and nothing new came for ``settle`` s."""
        queue = open_queue(self.queue_url)
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if queue.pending() == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return True
            else:
                idle_since = None
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop every service (they flush their telemetry), then the queue."""
        try:
            stop_processes(list(self.processes.values()))
        finally:
            self.processes.clear()
            if self._redis is not None:
                redis, self._redis = self._redis, None
                stop_processes([redis])


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process and wait for it, killing one that takes over STOP_GRACE_SECONDS.

    A second Ctrl-C (or SIGTERM) while they flush means: do not wait. Each is then killed at
    once, rather than left running in its own session with nobody to stop it.
    """
    try:
        _terminate_and_wait(processes)
    except BaseException:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        raise


def _terminate_and_wait(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _did_not_start(role: str, workdir: Path) -> str:
    """Names the service's log: an error naming the work folder keeps it (see ``__exit__``)."""
    return f"demo service {role} did not start in time; see {workdir / f'{role}.log'}"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
