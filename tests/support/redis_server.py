"""A throw-away redis-server (no persistence) on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

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
