"""Every code block in README.md and docs/ is run as written, or marked as a fragment with a reason.

See ``tests/support/doc_blocks.py`` for the markers. Each document's blocks run in order in a
folder of their own with ``HOME`` there (so the default store is a fresh one), as a reader
following the page in one terminal would: a block that activates ``.venv`` leaves it active for
the next. Programs that call ``tracekit.init()`` without choosing an exporter write into that
store (``TRACEKIT_EXPORTER=store``) and serve no metrics port unless they say so; brokers are
real: RabbitMQ on 127.0.0.1:5672, a redis-server of the test's own; Kafka is librdkafka's mock
cluster (no broker can run here); Amazon SQS is moto's server, which boto3 reaches through its
standard ``AWS_*`` variables (``environment``), with the page's queue made first. The only edits
to a block are the addresses of those servers and of the services a page calls, free ports for
the fixed ones a page uses, and installing tracekit from this checkout rather than PyPI; each is
listed in ``substitutions``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from doc_blocks import KINDS, ROOT, Block, blocks, documents
from loopback import free_port, serving_werkzeug, wait_for_port
from moto_server import running_moto
from redis_server import running_redis
from trace_topologies import checkout, incident

from tracekit.store import Store

ALL_BLOCKS = [block for document in documents() for block in blocks(document)]
RUNNABLE = [d for d in documents() if any(b.kind not in ("fragment", None) for b in blocks(d))]
SHOWN_HOME = "/home/you"  # how the pages write the reader's home folder
BIN = str(Path(sys.executable).parent)


def test_every_block_is_run_or_marked_as_a_fragment_with_a_reason() -> None:
    unmarked = [b.where for b in ALL_BLOCKS if b.kind not in KINDS]
    assert not unmarked, (
        f"blocks with no doc-test marker (see tests/support/doc_blocks.py): {unmarked}"
    )
    unexplained = [b.where for b in ALL_BLOCKS if b.kind == "fragment" and len(b.argument) < 10]
    assert not unexplained, f"fragments must say why they are not run: {unexplained}"
    assert sum(b.kind != "fragment" for b in ALL_BLOCKS) >= 25


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with running_redis() as url:
        yield url


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    """librdkafka's mock cluster, in this process; other processes reach it over TCP."""
    import confluent_kafka

    anchor = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    metadata = anchor.list_topics(timeout=10)
    yield ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    anchor.flush(5)


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    """moto's SQS with the queue docs/queues/sqs.md looks up, ``orders``."""
    import boto3

    with running_moto() as url:
        sqs = boto3.client("sqs", endpoint_url=url, **_AWS_CLIENT)
        sqs.create_queue(QueueName="orders")
        yield url


_AWS_CLIENT = {"region_name": "us-east-1", "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing"}  # fmt: skip


@pytest.fixture(scope="module")
def billing_url() -> Iterator[str]:
    """An HTTP service answering every request, for the pages' ``http://billing.internal``."""

    def answer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"charged"]

    with serving_werkzeug(answer) as url:
        yield url


def environment(document: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Variables a reader's machine has set for the page's servers (AWS credentials, region), or
    that this one needs: the README's first server takes tracekit's default metrics port, 9464,
    which another run on a shared machine may hold (its workers then warn, which fails the page):
    it takes a free one."""
    if str(document.relative_to(ROOT)) == "README.md":
        return {"TRACEKIT_METRICS_PORT": str(free_port())}
    if str(document.relative_to(ROOT)) == "docs/queues/sqs.md":
        return {"AWS_ENDPOINT_URL": request.getfixturevalue("sqs_endpoint"),
                "AWS_DEFAULT_REGION": _AWS_CLIENT["region_name"],
                "AWS_ACCESS_KEY_ID": _AWS_CLIENT["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": _AWS_CLIENT["aws_secret_access_key"]}  # fmt: skip
    return {}


def substitutions(document: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Server addresses and package sources that differ between a reader's machine and this one."""
    name = str(document.relative_to(ROOT))
    if name == "README.md":
        return {"'tracekit[cli]'": f"'{request.getfixturevalue('tracekit_wheel')}[cli]'",
                "TRACEKIT_METRICS_PORT=9465": f"TRACEKIT_METRICS_PORT={free_port()}"}  # fmt: skip
    if name == "docs/queues/redis.md":
        return {"redis.Redis()": f"redis.Redis.from_url({request.getfixturevalue('redis_url')!r})"}
    if name == "docs/queues/kafka.md":
        return {"localhost:9092": request.getfixturevalue("kafka_bootstrap")}
    if name == "docs/queues/sqs.md":
        return {"http://billing.internal": request.getfixturevalue("billing_url")}
    return {}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("document", RUNNABLE, ids=lambda d: str(d.relative_to(ROOT)))
def test_the_blocks_of_a_document_work_as_written(
    document: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    reader = Reader(tmp_path, substitutions(document, request), environment(document, request))
    if document.name == "cli.md":
        reader.store_with_example_requests()
    try:
        for block in blocks(document):
            reader.follow(block)
        # The README's gunicorn workers each said `tracekit: metrics port 9464 unavailable
        # (Address already in use) ...`: uvicorn, run just before, held the port, and so did the
        # other worker. A page's servers run as the page sets them up, without that warning.
        for log in reader.served_logs:
            said = [
                line for line in log.read_text().splitlines() if "tracekit: metrics port" in line
            ]
            assert not said, f"{log.name}: {said}"
    finally:
        reader.finish()


class Reader:
    """Follows one page: runs its blocks in its folder, keeps its servers until the end."""

    def __init__(self, folder: Path, replace: dict[str, str], settings: dict[str, str]) -> None:
        self.folder = folder
        self.home = _home_like_the_pages()
        self.replace = dict(replace)
        self.settings = dict(settings)
        self.servers: list[subprocess.Popen[bytes]] = []
        self.served_logs: list[Path] = []
        self.counter = 0

    def env(self, **extra: str) -> dict[str, str]:
        """The reader's environment: nothing of this test's, tracekit's or the SDK's settings."""
        theirs = ("TRACEKIT_", "OTEL_", "XDG_", "VIRTUAL_ENV", "PYTHON")
        keep = {k: v for k, v in os.environ.items() if not k.startswith(theirs)}
        path = f"{BIN}:{keep['PATH']}"
        return {**keep, **self.settings, "HOME": str(self.home), "PATH": path, **extra}

    def text(self, block: Block) -> str:
        text = block.text
        for old, new in self.replace.items():
            text = text.replace(old, new)
        return text

    def follow(self, block: Block) -> None:
        """Do what ``block``'s marker asks."""
        if block.kind == "fragment":
            return
        handler = getattr(self, f"do_{block.kind}")
        handler(block)

    # --- the kinds ----------------------------------------------------------------------------

    def do_run(self, block: Block) -> None:
        path = self.save(block, f"block{block.line}.py")
        result = subprocess.run(
            [sys.executable, str(path)], cwd=self.folder, capture_output=True, text=True,
            env=self.env(TRACEKIT_EXPORTER="store", TRACEKIT_METRICS_PORT="0"), timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, f"{block.where}: {result.stderr[-3000:]}"

    def do_file(self, block: Block) -> None:
        self.save(block, block.argument)

    def do_app(self, block: Block) -> None:
        kind, *check = block.argument.split()
        module = self.save(block, f"app{block.line}.py")
        port = free_port()
        serve = {"asgi": _SERVE_ASGI, "wsgi": _SERVE_WSGI}[kind].format(
            module=str(module), port=port
        )
        env = self.env(TRACEKIT_EXPORTER="store", TRACEKIT_METRICS_PORT="0")
        with open(self.folder / f"app{block.line}.log", "wb") as log:
            server = subprocess.Popen([sys.executable, "-c", serve], cwd=self.folder, env=env,
                                      stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        try:
            _wait_for_port(port, server, block, self.folder / f"app{block.line}.log")
            path, status = (check[1], int(check[2])) if check else ("/", None)  # GET PATH STATUS
            response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30,
                                 headers={"X-Correlation-ID": "doc-test-1"})  # fmt: skip
            if status is None:
                assert response.headers.get("x-correlation-id") == "doc-test-1", block.where
            else:
                assert response.status_code == status, f"{block.where}: {response.status_code}"
        finally:
            _stop(server)

    def do_shell(self, block: Block) -> None:
        result = subprocess.run(
            ["bash", "-c", self.shell(block)], cwd=self.folder, capture_output=True, text=True,
            env=self.env(), timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"{block.where}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
        )

    def do_serve(self, block: Block) -> None:
        port = free_port()
        self.replace[block.argument] = str(port)  # this block and the ones after it
        log_path = self.folder / f"serve{block.line}.log"
        self.served_logs.append(log_path)
        with open(log_path, "wb") as log:
            server = subprocess.Popen(["bash", "-c", self.shell(block)], cwd=self.folder,
                                      env=self.env(), stdout=log, stderr=log,
                                      start_new_session=True)  # fmt: skip
        self.servers.append(server)
        _wait_for_port(port, server, block, log_path, timeout=300)

    def do_output(self, block: Block) -> None:
        for command, shown in _transcript(self.text(block)):
            result = subprocess.run(
                ["bash", "-c", command], cwd=self.folder, capture_output=False, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                env=self.env(COLUMNS="100"),
            )  # fmt: skip
            printed = result.stdout.replace(str(self.home), SHOWN_HOME).splitlines()
            if shown and shown[-1].strip() == "...":
                shown = shown[:-1]
                printed = printed[: len(shown)]
            assert printed == shown, f"{block.where}: $ {command}\n" + "\n".join(printed)

    # --- helpers ------------------------------------------------------------------------------

    def shell(self, block: Block) -> str:
        activate = "if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi"
        return f"set -eo pipefail\n{activate}\n{self.text(block)}"

    def save(self, block: Block, name: str) -> Path:
        path = self.folder / name
        path.write_text(self.text(block), encoding="utf-8")
        return path

    def store_with_example_requests(self) -> None:
        """What docs/cli.md was captured against: the checkout and incident requests."""
        path = self.home / ".local" / "share" / "tracekit" / "tracekit.db"
        path.parent.mkdir(parents=True)
        with Store(path) as store:
            for topology in (checkout(), incident()):
                store.write_spans(topology.spans)
                store.write_logs(topology.logs)

    def finish(self) -> None:
        """Stop the page's servers and remove its home folder."""
        for server in self.servers:
            _stop(server)
        shutil.rmtree(self.home, ignore_errors=True)


def _home_like_the_pages() -> Path:
    """A new, empty home folder whose path is as long as ``/home/you``: help text that shows it
    then wraps where the page's does, and reads the same once the path is replaced."""
    for _ in range(100):
        path = Path("/tmp") / secrets.token_hex(2)  # /tmp/ + 4 characters
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        assert len(str(path)) == len(SHOWN_HOME)
        return path
    raise AssertionError("no free short home folder under /tmp")


_SERVE_ASGI = """
import runpy, uvicorn
app = runpy.run_path({module!r})["app"]
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""
_SERVE_WSGI = """
import runpy
from werkzeug.serving import run_simple
app = runpy.run_path({module!r})["app"]
run_simple("127.0.0.1", {port}, app, threaded=True)
"""


def _transcript(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines and what follows each, up to the next one."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1][1].append(line)
    return steps


def _wait_for_port(
    port: int, process: subprocess.Popen[Any], block: Block, log: Path, timeout: float = 60
) -> None:
    try:
        wait_for_port(port, process, timeout)
    except AssertionError as error:
        raise AssertionError(f"{block.where}: {error}\n{log.read_text()[-3000:]}") from None


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group the block started (its server and anything under it)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
