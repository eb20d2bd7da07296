"""Run ``tracekit collector`` as a real subprocess and find the port it bound; read its /proc
and what it has not read yet of its clients."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

ENTRY = [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector"]
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def start_collector(
    store: Path, *extra: str, open_files: int | None = None, file_bytes: int | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start the collector on a free port (``open_files``: its fd limit; ``file_bytes``: the
    largest file it may write, a disk that fills up there); returns it, its port."""

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
        if file_bytes is not None:  # Python ignores SIGXFSZ: a write past it fails with EFBIG
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, hard))

    grpc = [] if "--grpc-port" in extra else ["--grpc-port", "0"]  # never the shared 4317
    process = subprocess.Popen(
        [*ENTRY, "--port", "0", *grpc, "--store", str(store), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=limit_files,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _LISTENING.search(line)
    assert match, (
        f"collector did not start: {line!r} {process.stderr.read() if process.stderr else ''}"
    )
    return process, int(match.group(1))


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children (the collector and its writer process)."""
    return sum(_rss(p) for p in [pid, *_children(pid)])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def threads(pid: int) -> int:
    """Threads of ``pid`` now."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def unread(port: int) -> int:
    """What the server listening on ``port`` has not taken yet: connections waiting in its
    accept queue, and bytes waiting in the receive queue of each connection it accepted (read
    from /proc/net/tcp and tcp6, where a listening socket's receive queue is its accept queue)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:  # the server's end
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
