"""A process given the ID of an exited one whose files are still in the multiprocess directory.

prometheus-client names a process's files by its process ID and opens those it finds under its
own: a process that got the ID of an exited worker (PID reuse, frequent in a container, whose
IDs start at 1) carried on the exited one's values. Its counters and histograms were still
right as sums, but the exited worker's requests in flight stayed in
``http_server_active_requests`` for the new one's whole life; and a worker that got the ID
while a fold of those files was under way wrote the requests it served after the fold into a
file the fold had removed. A process now folds the files named with its ID that it has not
opened, waiting for the fold under way, before it records anything.

Every file is written by real prometheus-client and tracekit in processes of their own; the
PID reuse is real, in a PID namespace of its own (``/proc/sys/kernel/ns_last_pid`` chooses the
next process's ID), or faked by a process that names an exited one's files with its own ID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from stopping import pid_namespace_prefix

from tracekit import metrics

_SERVE = """
import os, signal, sys
from tracekit import metrics

def serve(requests, in_flight=0):
    server = metrics.HttpServerMetrics.get("shop")
    for _ in range(requests):
        server.request_started()
        server.request_finished("GET", "/orders", 200, 0.01, None)
    for _ in range(in_flight):
        server.request_started()

def killed_with_a_request_in_flight():
    serve(5, in_flight=1)
    os.kill(os.getpid(), signal.SIGKILL)
"""

# Named with this process's ID, argv[1]'s files are those of an exited process with the same ID.
_GIVEN_AN_EXITED_ID = """
import os, sys
from pathlib import Path
for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob(f"*_{sys.argv[1]}.db"):
    path.rename(path.with_name(path.name.replace(sys.argv[1], str(os.getpid()))))
"""

_SERVES_UNTIL_TOLD = """
serve(3)
print("ready", flush=True)
sys.stdin.readline()
"""

Scrape = dict[str, float]
_SHOWN = ("http_server_request_duration_seconds_count", "http_server_active_requests")


def _samples(exposition: bytes) -> Scrape:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
        if sample.name in _SHOWN
    }


def _scrapes(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Scrape, Scrape]:
    """One scrape of tracekit's exposition, then one of prometheus-client's own reader."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    own_reader = CollectorRegistry()
    MultiProcessCollector(own_reader, str(directory))
    tracekit_scrape = _samples(generate_latest(metrics.exposition_registry()))  # type: ignore[arg-type]
    return tracekit_scrape, _samples(generate_latest(own_reader))


def test_a_process_with_an_exited_ones_id_does_not_carry_its_requests_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    exited = subprocess.run(
        [sys.executable, "-c", _SERVE + "killed_with_a_request_in_flight()"], env=env, timeout=60
    )
    assert exited.returncode < 0
    (live_gauges,) = tmp_path.glob("gauge_livesum_*.db")
    exited_pid = live_gauges.stem.rpartition("_")[2]
    source = _GIVEN_AN_EXITED_ID + _SERVE + _SERVES_UNTIL_TOLD
    with subprocess.Popen(
        [sys.executable, "-c", source, exited_pid], env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    ) as reusing:  # fmt: skip
        assert reusing.stdout is not None and reusing.stdin is not None
        assert reusing.stdout.readline() == "ready\n"
        expected = {_SHOWN[0]: 8, _SHOWN[1]: 0}
        assert _scrapes(tmp_path, monkeypatch) == (expected, expected)
        reusing.stdin.close()
    assert _scrapes(tmp_path, monkeypatch)[0] == {_SHOWN[0]: 8}


# PID 1 of a PID namespace of its own: a worker is killed with a request in flight (or exits,
# and a fold of its files is paused midway), and a worker forked next gets its process ID.
_REUSED_IN_A_NAMESPACE = """
import json, select, threading
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tracekit._metrics import fold

def forked(body, pid=None):
    if pid is not None:  # the next process gets this ID
        with open("/proc/sys/kernel/ns_last_pid", "w") as out:
            out.write(str(pid - 1))
    child = os.fork()
    if child == 0:
        try:
            body()
        finally:
            os._exit(0)
    assert pid is None or child == pid, (child, pid)
    return child

def scrape():
    text = generate_latest(metrics.exposition_registry()).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("http_server_request_duration_seconds_count", "http_server_active_requests")
    }

def serving_until_told(requests, then=0):
    ready, go = os.pipe(), os.pipe()
    def body():
        serve(requests)
        os.write(ready[1], b"x")
        os.read(go[0], 1)
        serve(then)
    return body, ready[0], go[1]

# 1. the files of the killed worker are not folded yet as the next one starts
exited = forked(killed_with_a_request_in_flight)
os.waitpid(exited, 0)
body, ready, go = serving_until_told(3)
reusing = forked(body, pid=exited)
os.read(ready, 1)
results = {"not folded yet": scrape()}
os.write(go, b"x")
os.waitpid(reusing, 0)

# 2. the next one starts while a fold of the exited worker's files is under way
exited = forked(lambda: serve(5))
os.waitpid(exited, 0)
paused, resume = threading.Event(), threading.Event()
write_folded = fold._write_folded
def paused_fold(*args):
    if os.getpid() != 1:  # (not in a forked child, folding files of its own)
        return write_folded(*args)
    paused.set()
    resume.wait()
    return write_folded(*args)
fold._write_folded = paused_fold
directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
folding = threading.Thread(target=fold.fold_exited, args=(directory,))
folding.start()
paused.wait()
body, ready, go = serving_until_told(3, then=4)
reusing = forked(body, pid=exited)
select.select([ready], [], [], 1.0)  # (it serves its first requests, or waits for the fold)
resume.set()
folding.join()
fold._write_folded = write_folded
os.write(go, b"x")
os.waitpid(reusing, 0)
results["folded meanwhile"] = scrape()
print(json.dumps(results))
"""


def _printed_as_pid_one(tmp_path: Path, source: str) -> str:
    """What ``source`` prints, run as PID 1 of a PID namespace of its own (its multiprocess
    directory in ``tmp_path``)."""
    script = tmp_path / "reuse.py"
    script.write_text(source)
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    unshare, *options = pid_namespace_prefix()
    result = subprocess.run(
        [unshare, "--kill-child", *options, sys.executable, str(script)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_worker_forked_with_an_exited_workers_id_counts_as_a_new_one(tmp_path: Path) -> None:
    """Real PID reuse: gunicorn's master forks each worker, and the one it forks after another
    exited may get that one's ID."""
    assert json.loads(_printed_as_pid_one(tmp_path, _SERVE + _REUSED_IN_A_NAMESPACE)) == {
        "not folded yet": {_SHOWN[0]: 8, _SHOWN[1]: 0},  # 5 + 3 served, none in flight
        "folded meanwhile": {_SHOWN[0]: 8 + 12},  # + 5 + 3 + 4, the last 4 after the fold
    }


# PID 1 of a PID namespace of its own: a fold finds a process exited, and before it takes the
# process's files another one, which does not use tracekit (prometheus-client alone: a sidecar,
# a script), gets its ID and opens them.
_OPENED_DURING_A_FOLD = """
import os, subprocess, sys, threading
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tracekit import metrics
from tracekit._metrics import fold

JOBS = '''
import sys
from prometheus_client import Counter
jobs = Counter("jobs", "Jobs done")
jobs.inc(int(sys.argv[1]))
if len(sys.argv) > 2:
    print("ready", flush=True)
    sys.stdin.readline()
    jobs.inc(int(sys.argv[2]))
'''
directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
first = subprocess.Popen([sys.executable, "-c", JOBS, "5"])
first.wait()
found_exited, resume = threading.Event(), threading.Event()
process_exited = fold.process_exited

def pausing_once_found(pid):
    answer = process_exited(pid)
    if pid == first.pid and not found_exited.is_set():
        found_exited.set()
        resume.wait()
    return answer

fold.process_exited = pausing_once_found
folding = threading.Thread(target=fold.fold_exited, args=(directory,))
folding.start()
found_exited.wait()
with open("/proc/sys/kernel/ns_last_pid", "w") as out:
    out.write(str(first.pid - 1))
second = subprocess.Popen(
    [sys.executable, "-c", JOBS, "3", "4"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)
assert second.pid == first.pid, (second.pid, first.pid)
assert second.stdout.readline() == "ready\\n"
resume.set()
folding.join()
fold.process_exited = process_exited
second.communicate("go\\n")
text = generate_latest(metrics.exposition_registry()).decode()
families = text_string_to_metric_families(text)
print(sum(s.value for f in families for s in f.samples if s.name == "jobs_total"))
"""


def test_a_file_opened_by_a_process_given_the_id_as_it_was_folded_stays_its(
    tmp_path: Path,
) -> None:
    """The process given the ID opened the exited one's file and carried its 5 on: a fold that
    took the file then lost the 4 it wrote after (8); given back, every one counts."""
    assert _printed_as_pid_one(tmp_path, _OPENED_DURING_A_FOLD) == "12.0\n"  # 5 + 3 + 4
