"""A request as large as the write queue, first in line, waits for the queue to drain: it no
longer keeps a smaller request waiting behind it while there is room for that one.

Room goes to the client with the fewest records unwritten, first come first served among
equals. A request larger than the room left had its turn and kept it until the queue was empty,
so an exporter's 100 records, with as few unwritten, waited behind it and were told 503 after
their second in line while most of the queue was free (160,000 of 200,000 places, the defaults).
Among equals, a request that fits now goes first.

The writer is started only once both requests are in line, so the queue does not drain meanwhile
(as behind a slow disk): what each request is told depends on turns alone, not on timing. A
real store and writer process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.receiver.conftest import queued_rows

from tracekit.receiver._ingest import IngestQueue, QueueFull, Ticket
from tracekit.store import Store

CAPACITY = 1_000


def test_a_request_that_fits_is_not_kept_waiting_behind_one_as_large_as_the_queue(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db")
    store.create()
    queue = IngestQueue(store, capacity=CAPACITY)
    queued = queue.submit(queued_rows(store, "a" * 32, CAPACITY // 2), [], client="ipv4:10.0.0.1:1")
    big: list[Ticket] = []
    in_line = threading.Thread(
        target=lambda: big.append(
            queue.submit(queued_rows(store, "b" * 32, CAPACITY), [], 60, "ipv4:10.0.0.2:1")
        )
    )
    in_line.start()
    while not queue._line:  # the large request is in line, waiting for the queue to empty
        time.sleep(0.01)
    try:
        small = queue.submit(queued_rows(store, "c" * 32, 100), [], 1.0, "ipv4:10.0.0.3:1")
    except QueueFull:
        small = None  # before: told 503, with half the queue free
    queue.start()
    in_line.join(60)
    queue.close()
    assert small is not None and small.error is None
    assert queued.error is None and big and big[0].error is None
    with Store(tmp_path / "s.db") as reader:
        assert reader.count_spans() == CAPACITY // 2 + CAPACITY + 100
