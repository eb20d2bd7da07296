"""The gRPC server's client connections, seen through this process's descriptors (Linux).

grpc's core accepts and reads its connections in its own threads; Python is never told of one.
Past its cap (``grpc.max_allowed_incoming_connections``) it closes every newcomer, however long
the connections it holds have been idle: a client leaving hundreds of connections open kept every
exporter out for as long as they stayed. The HTTP side makes room at its cap by displacing its
longest-waiting connection; here the receiver looks now and then (``IdleConnections``) at grpc's
connections as the kernel sees them (each one's peer, and when it last received data), and
shuts down the longest-idle ones past a lower cap, so that a newcomer finds room under grpc's.
A shut-down socket reads as its client's close to grpc, which ends the connection; a duplicate
descriptor is shut down, never grpc's own closed.

Elsewhere (no ``/proc/self/fd`` or no ``TCP_INFO``) nothing is displaced.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

from tracekit.receiver._address import peer

_DESCRIPTORS = "/proc/self/fd"
_TCP_INFO = getattr(socket, "TCP_INFO", None)
# struct tcp_info (linux/tcp.h): tcpi_last_data_recv, milliseconds since data last arrived
_LAST_DATA_RECEIVED = struct.Struct("=I")
_LAST_DATA_RECEIVED_AT = 52
_ESTABLISHED = "01"  # a connection's state in /proc/net/tcp


@dataclass(frozen=True, slots=True)
class Connection:
    """One of grpc's client connections: a duplicate of its socket, its peer as grpc names it
    (``ipv4:10.0.0.7:51234``), and the seconds since it last received data."""

    sock: socket.socket
    peer: str
    idle: float


class IdleConnections:
    """Makes room among the connections to ``port``: past ``keep`` of them, the longest-idle
    ones (no call open, nothing received for ``min_idle`` seconds) are shut down."""

    def __init__(self, port: int, keep: int, min_idle: float) -> None:
        self.port = port
        self.keep = keep
        self.min_idle = min_idle
        # descriptors open when a look last found no more than ``keep`` connections: while
        # there are no more, nothing is to be done (a look reads every socket of the system)
        self._quiet_at = 0

    def displace(self, in_use: Callable[[str], bool]) -> int:
        """Shut down those past ``keep`` (``in_use``: whether a peer has a call open); returns
        how many were."""
        descriptors = _descriptor_count()
        self._quiet_at = min(self._quiet_at, descriptors)
        if _TCP_INFO is None or descriptors <= max(self.keep, self._quiet_at):
            return 0  # (the descriptors bound the connections: most are not grpc's)
        found = list(_connections(self.port))
        try:
            self._quiet_at = descriptors if len(found) <= self.keep else 0
            return self._shut_longest_idle(found, in_use)
        finally:
            for connection in found:
                connection.sock.close()

    def _shut_longest_idle(self, found: list[Connection], in_use: Callable[[str], bool]) -> int:
        idle = [c for c in found if c.idle >= self.min_idle and not in_use(c.peer)]
        idle.sort(key=lambda c: c.idle, reverse=True)
        victims = idle[: max(0, len(found) - self.keep)]
        for victim in victims:
            with suppress(OSError):
                victim.sock.shutdown(socket.SHUT_RDWR)
        return len(victims)


def _descriptor_count() -> int:
    try:
        return len(os.listdir(_DESCRIPTORS))
    except OSError:
        return 0


def _connections(port: int) -> Iterator[Connection]:
    """Each established TCP connection of this process whose own port is ``port``. Only those
    sockets are wrapped (a socket object made of another, a pipe to the writer process, could
    change its blocking mode, which its duplicate shares, under ``socket.setdefaulttimeout``)."""
    inodes = _established(port)
    for descriptor, family in list(_descriptors(inodes)):  # (before the duplicates are made)
        with suppress(OSError):
            found = _connection(os.dup(descriptor), family, port)
            if found is not None:
                yield found


def _descriptors(inodes: dict[str, socket.AddressFamily]) -> Iterator[tuple[int, int]]:
    """This process's descriptors of the sockets ``inodes`` names, with each one's family."""
    with suppress(OSError):
        for name in os.listdir(_DESCRIPTORS):
            with suppress(OSError, ValueError):
                family = inodes.get(os.readlink(f"{_DESCRIPTORS}/{name}"))
                if family is not None:
                    yield int(name), family


def _established(port: int) -> dict[str, socket.AddressFamily]:
    """``socket:[inode]`` of each established connection whose own port is ``port``, with its
    family (from /proc/net/tcp and tcp6)."""
    found = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with suppress(OSError), open(f"/proc/self/net/{table}") as lines:
            next(lines, None)  # the header
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                if local_port == port and fields[3] == _ESTABLISHED:
                    found[f"socket:[{fields[9]}]"] = family
    return found


def _connection(descriptor: int, family: int, port: int) -> Connection | None:
    """The connection ``descriptor`` (a duplicate) holds, or None (and it is closed) when that
    is no longer one to ``port``: its number was closed and reused since it was listed."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, fileno=descriptor)
    except OSError:
        os.close(descriptor)
        raise
    try:
        if sock.getsockname()[1] != port:
            sock.close()
            return None
        client = peer(*sock.getpeername())
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)  # type: ignore[arg-type]
    except OSError:
        sock.close()
        raise
    (milliseconds,) = _LAST_DATA_RECEIVED.unpack_from(info, _LAST_DATA_RECEIVED_AT)
    return Connection(sock, client, milliseconds / 1000)
