"""A throw-away redis-server (no persistence) on a free loopback port, or a Redis Cluster of
them."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conditions import need, wait_for
from loopback import free_port


def answers_ping(port: int) -> bool:
    """True when a Redis server on loopback ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis() -> Iterator[int]:
    """Start redis-server and yield its port (skip locally, fail in CI, when it is missing)."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_for(lambda: process.poll() is None and answers_ping(port), 10, "redis-server")
        except AssertionError:
            need(False, "a running redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(10)


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
