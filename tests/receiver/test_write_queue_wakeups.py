"""Many clients waiting for room in a full write queue: only the one whose turn it is wakes.

Each change to the line (a ticket joining or leaving it, the writer taking or finishing a
batch) woke every waiting request to look whether its turn had come. With 200 clients waiting,
the collector spent about 20 us of CPU a record on those wakeups (3 us with 10 clients) and
wrote a third of the records a second. Only the ticket whose turn it is is woken now.

Counted as what the waiting threads cost the machine: the times each was put to sleep and
woken (the kernel's voluntary context switches), not as a duration. A real store and writer
process; requests as the receiver's handler threads submit them, one connection each.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from tests.receiver.conftest import queued_rows

from tracekit.receiver._ingest import IngestQueue
from tracekit.store import Store

CLIENTS = 200
REQUESTS = 5  # by each client
SPANS = 100  # a request
_SWITCHES = re.compile(r"^voluntary_ctxt_switches:\s+(\d+)", re.MULTILINE)


def _sleeps_of_this_thread() -> int:
    status = Path("/proc/thread-self/status").read_text()
    return int(_SWITCHES.search(status).group(1))  # type: ignore[union-attr]


def test_clients_waiting_for_room_are_not_all_woken_at_every_change(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create()
    queue = IngestQueue(store, capacity=10 * SPANS, batch_size=10 * SPANS)
    queue.start()
    sleeps: list[int] = []
    errors: list[BaseException | None] = []

    def client(number: int) -> None:
        rows = queued_rows(store, f"{number + 1:032x}", SPANS)
        before = _sleeps_of_this_thread()
        for _ in range(REQUESTS):
            ticket = queue.submit(rows, [], wait=60, client=f"ipv4:127.0.0.1:{20_000 + number}")
            ticket.done.wait(60)
            errors.append(ticket.error)
        sleeps.append(_sleeps_of_this_thread() - before)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.close()
    assert errors == [None] * CLIENTS * REQUESTS
    assert queue.committed == CLIENTS * REQUESTS * SPANS
    # a request sleeps a few times (waiting for its turn, then for its commit); before, it was
    # woken a hundred times and more while its turn had not come
    assert sum(sleeps) / (CLIENTS * REQUESTS) < 20, sum(sleeps) / (CLIENTS * REQUESTS)
