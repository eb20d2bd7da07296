"""A throw-away redis-server (no persistence) on a free loopback port, or a Redis Cluster of
them."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conditions import need, wait_for
from loopback import free_port


def answers_ping(port: int, password: str | None = None) -> bool:
    """True when a Redis server on loopback ``port`` answers PING (after ``AUTH password``:
    a server that does not hold that password answers an error)."""
    request = b"PING\r\n" if password is None else f"AUTH {password}\r\nPING\r\n".encode()
    expected = b"+PONG" if password is None else b"+OK\r\n+PONG"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            answer = b""
            while len(answer) < len(expected) and (chunk := sock.recv(64)):
                answer += chunk
            return answer.startswith(expected)
    except OSError:
        return False


@contextmanager
def running_redis() -> Iterator[str]:
    """Start a redis-server of its own and yield its URL, password included (skip locally, fail
    in CI, when it is missing). A server of someone else's that took the port chosen for it
    answers no command to that password, and another port is tried: their data is never read,
    written or flushed."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    assert binary is not None
    password = secrets.token_hex(16)
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--requirepass", password],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if _serves(process, port, password):
                yield f"redis://:{password}@127.0.0.1:{port}/0"
                return
        finally:
            process.terminate()
            process.wait(10)
    need(False, "a running redis-server")


def _serves(process: subprocess.Popen[bytes], port: int, password: str) -> bool:
    """Whether ``process`` serves ``port``: False once it has exited (the port was taken
    meanwhile) or when nothing answers to ``password`` there in time."""
    try:
        wait_for(lambda: process.poll() is not None or answers_ping(port, password), 10,
                 "redis-server")  # fmt: skip
    except AssertionError:
        return False
    return process.poll() is None


@contextmanager
def running_redis_cluster(nodes: int = 3) -> Iterator[int]:
    """Start a Redis Cluster of ``nodes`` masters on free loopback ports (each node's cluster
    state in a throw-away directory) and yield the first node's port."""
    cli = shutil.which("redis-cli")
    need(shutil.which("redis-server") is not None and cli is not None, "redis-server, redis-cli")
    assert cli is not None
    with tempfile.TemporaryDirectory() as state, contextlib.ExitStack() as stack:
        ports = [stack.enter_context(_cluster_node(Path(state))) for _ in range(nodes)]
        addresses = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"],
            capture_output=True,
            timeout=60,
        )
        need(created.returncode == 0, "a Redis Cluster made by redis-cli --cluster create")
        wait_for(lambda: _cluster_ok(cli, ports[0]), 30, "the cluster's slots")
        yield ports[0]


@contextmanager
def _cluster_node(state: Path) -> Iterator[int]:
    # The cluster bus port is given too: by default it is the port + 10000, which may be taken,
    # or past 65535.
    port, bus_port = free_port(), free_port()
    directory = state / str(port)
    directory.mkdir()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: process.poll() is None and answers_ping(port), 10, "a cluster node")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=10
    )
    return "cluster_state:ok" in info.stdout
