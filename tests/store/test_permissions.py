"""The store holds span attributes and log bodies: private to its owner whatever the umask.

Each writer runs in a subprocess with its own umask (the umask is per process): the library's
``Store``, the SDK exporter behind ``TRACEKIT_EXPORTER=store``, and ``tracekit collector`` with
its writer process. The file, SQLite's ``-wal`` and ``-shm`` files and every folder tracekit
created are checked while the writer still has the store open.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracekit.records import SpanRecord
from tracekit.store import Store

UMASKS = [0o000, 0o022, 0o027]

# Writes one span, then prints the modes while the connection (and so the WAL) is still open.
WRITERS = {
    "store": """
        from tracekit.store import Store
        from tracekit.records import SpanRecord
        store = Store(path)
        store.write_spans([SpanRecord("a" * 32, "b" * 16, None, "svc", "GET /", "SERVER", 1, 2)])
    """,
    "exporter": """
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from tracekit.store.exporter import StoreSpanExporter
        provider = TracerProvider()
        exporter = StoreSpanExporter(path)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("t").start_span("work").end()
    """,
}
REPORT = """
    import os, sys
    for p in [path, path + "-wal", path + "-shm", path + "-lock", *sys.argv[3:]]:
        print(p, oct(os.stat(p).st_mode & 0o777))
"""


def modes(output: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in output.splitlines())


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def expected(path: Path, made: list[Path]) -> dict[str, str]:
    files = {str(path) + suffix: "0o600" for suffix in ("", "-wal", "-shm", "-lock")}
    return {**files, **{str(d): "0o700" for d in made}}


@pytest.mark.parametrize("umask", UMASKS, ids=oct)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_library_writers_create_private_files_and_folders(
    tmp_path: Path, writer: str, umask: int
) -> None:
    made = [tmp_path / "data", tmp_path / "data" / "tracekit"]
    path = made[-1] / "tracekit.db"
    script = "import os, sys\nos.umask(int(sys.argv[2]))\npath = sys.argv[1]\n"
    script += textwrap.dedent(WRITERS[writer]) + textwrap.dedent(REPORT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(umask), *map(str, made)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert modes(result.stdout) == expected(path, made)


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=oct)
def test_a_symlink_to_a_store_not_made_yet_gets_a_private_store(tmp_path: Path, umask: int) -> None:
    """O_EXCL refuses to create through a symlink, and a dangling link at the store path was
    taken for an existing store: SQLite then created the file it names with the umask's mode,
    readable by everyone at 022."""
    target, link = tmp_path / "real.db", tmp_path / "tracekit.db"
    link.symlink_to(target)
    script = "import os, sys\nos.umask(int(sys.argv[2]))\npath = sys.argv[1]\n"
    script += textwrap.dedent(WRITERS["store"]) + "path = os.path.realpath(path)\n"
    script += textwrap.dedent(REPORT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(link), str(umask)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert modes(result.stdout) == expected(target, [])
    assert link.is_symlink() and Store(link).count_spans() == 1


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with Store(tmp_path / "s.db") as store:
        store.create()
    assert mode(tmp_path) == "0o755"
    assert mode(tmp_path / "s.db") == "0o600"


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=oct)
def test_collector_and_its_writer_process_create_private_files(tmp_path: Path, umask: int) -> None:
    import http.client

    made = [tmp_path / "new"]
    path = made[0] / "c.db"
    process = subprocess.Popen(
        [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector",
         "--port", "0", "--grpc-port", "0", "--store", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split("127.0.0.1:")[1].split(" ")[0])
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "hello"
        span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/traces", request.SerializeToString(),
                     {"Content-Type": "application/x-protobuf"})  # fmt: skip
        assert conn.getresponse().status == 200
        conn.close()
        found = {str(p): mode(p) for p in [path, *made, *path.parent.glob("c.db-*")]}
        assert found == expected(path, made)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_store_its_owner_shares_with_a_group_is_written_by_the_group(tmp_path: Path) -> None:
    """SQLite gives ``-wal`` and ``-shm`` the store's mode: an owner who made the store 0660 had
    the other members of its group write it. The lock file, made 0600 whatever the store's mode,
    refused them every write (Permission denied). Those who may only read the store get no
    lock file to hold its writers back with."""
    from conditions import need

    need(os.geteuid() == 0, "root, to write as another user")
    group = pwd.getpwuid(_nobody()).pw_gid
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # (tmp_path's is root's alone)
        os.chown(folder, -1, group)
        os.chmod(folder, 0o2770)  # setgid: what is made in it is the group's
        path = Path(folder) / "s.db"
        with Store(path) as store:
            store.create()
        os.chown(path, -1, group)
        path.chmod(0o660)  # shared, writers stopped: the owner's next writer follows
        with Store(path) as store:
            store.write_spans([_request("c-1", "d" * 32, 1)])
        assert mode(Path(f"{path}-lock")) == "0o660"
        script = textwrap.dedent(WRITERS["store"]) + "print(store.count_spans())"
        member = subprocess.run(
            [*_as_user(_nobody(), group), sys.executable, "-c", f"path = {str(path)!r}\n{script}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (member.returncode, member.stdout) == (0, "2\n"), member.stderr
        path.chmod(0o640)
        with Store(path) as store:
            store.write_spans([_request("c-2", "c" * 32, 2)])
        assert mode(Path(f"{path}-lock")) == "0o600"


def test_a_lock_file_root_makes_beside_a_users_store_is_the_users(tmp_path: Path) -> None:
    """SQLite, run as root, gives the ``-wal`` and ``-shm`` it makes the store owner's: a store a
    user made before the lock file came in, first written since by root (a collector run with
    sudo), got a lock file root's own, and the user's writers could write it no more."""
    from conditions import need

    need(os.geteuid() == 0, "root, to write as another user")
    user = _nobody()
    group = pwd.getpwuid(user).pw_gid
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # (tmp_path's is root's alone)
        os.chown(folder, user, group)
        path = Path(folder) / "s.db"
        script = textwrap.dedent(WRITERS["store"]) + "print(store.count_spans())"
        command = [*_as_user(user, group), sys.executable, "-c", f"path = {str(path)!r}\n{script}"]
        subprocess.run(command, capture_output=True, timeout=60, check=True)
        os.remove(f"{path}-lock")  # as a tracekit from before it left the store
        with Store(path) as store:
            store.write_spans([_request("c-1", "d" * 32, 1)])
        owner = os.stat(f"{path}-lock")
        assert (owner.st_uid, owner.st_gid, mode(Path(f"{path}-lock"))) == (user, group, "0o600")
        written = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert (written.returncode, written.stdout) == (0, "2\n"), written.stderr


def _as_user(user: int, group: int) -> list[str]:
    """A command prefix that runs as ``user`` in ``group`` alone."""
    from conditions import need

    setpriv = shutil.which("setpriv")
    need(setpriv is not None, "setpriv (util-linux), to run as another user")
    assert setpriv is not None
    return [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups"]


def _nobody() -> int:
    import pwd

    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


@pytest.mark.parametrize("standing_for", ["file", "folder"])
def test_a_symlink_another_user_left_in_a_shared_folder_is_not_followed(
    tmp_path: Path, standing_for: str
) -> None:
    """Another user's symlink in /tmp (sticky, writable by all) at the path a store is asked for
    (``--store /tmp/tracekit.db``) or standing for its folder (``--store
    /tmp/tracekit/tracekit.db``, /tmp/tracekit theirs): the kernel's fs.protected_symlinks
    refuses to go through such a link, but tracekit resolved it itself (realpath) and created
    the store where it pointed, in a folder only this user may write. The collector is one line
    and exit 2, and nothing is created there; this user's own link is followed."""
    from conditions import need

    need(os.geteuid() == 0, "root, to leave a symlink another user owns")
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    shared.chmod(0o1777)
    private.mkdir(mode=0o700)
    if standing_for == "file":
        link = store_path = shared / "tracekit.db"
        link.symlink_to(private / "planted.db")
    else:
        link = shared / "tracekit"
        link.symlink_to(private)
        store_path = link / "tracekit.db"
    os.lchown(link, _nobody(), -1)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    result = subprocess.run(
        [tracekit, "collector", "--port", "0", "--grpc-port", "0", "--store", str(store_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "another user" in result.stderr, result.stderr
    assert list(private.iterdir()) == []
    with pytest.raises(PermissionError, match="another user"):
        Store(store_path).create()
    assert list(private.iterdir()) == []
    os.lchown(link, os.geteuid(), -1)  # this user's own link: followed, as before
    with Store(store_path) as store:
        store.create()
    assert (private / ("planted.db" if standing_for == "file" else "tracekit.db")).is_file()


def test_a_symlink_another_user_left_is_not_followed_on_a_path_that_goes_up_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--store /tmp/theirs/../tracekit.db``: the kernel goes through /tmp/theirs (another
    user's link) and up from where it points, but the check read the path tidied to
    /tmp/tracekit.db, saw no link, and the store was created in the folder above the one
    they named. The link is refused as on any other path."""
    from conditions import need

    need(os.geteuid() == 0, "root, to leave a symlink another user owns")
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    shared.chmod(0o1777)
    (private / "inner").mkdir(parents=True, mode=0o700)
    link = shared / "theirs"
    link.symlink_to(private / "inner")
    os.lchown(link, _nobody(), -1)
    store_path = link / ".." / "tracekit.db"
    with pytest.raises(PermissionError, match="another user"):
        Store(store_path).create()
    assert not (private / "tracekit.db").exists() and not (shared / "tracekit.db").exists()
    monkeypatch.chdir(shared)  # a relative path too
    with pytest.raises(PermissionError, match="another user"):
        Store(Path("theirs/../tracekit.db")).create()
    assert not (private / "tracekit.db").exists()


def test_a_symlink_another_user_left_is_not_followed_where_this_users_own_link_leads(
    tmp_path: Path,
) -> None:
    """This user's own link (``~/.tracekit`` -> /tmp/tracekit-me) leading through a link another
    user left in /tmp in its place: the kernel refuses that second link as it follows the
    first, but only the path as written was checked, and the store was created in the folder
    the other user named. It is refused; this user's own links are followed as before."""
    from conditions import need

    need(os.geteuid() == 0, "root, to leave a symlink another user owns")
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    shared.chmod(0o1777)
    private.mkdir(mode=0o700)
    theirs = shared / "tracekit-me"
    theirs.symlink_to(private)
    os.lchown(theirs, _nobody(), -1)
    mine = tmp_path / "home" / ".tracekit"
    mine.parent.mkdir()
    mine.symlink_to(theirs)
    with pytest.raises(PermissionError, match="another user"):
        Store(mine / "tracekit.db").create()
    assert list(private.iterdir()) == []
    os.lchown(theirs, os.geteuid(), -1)  # this user's own links all the way: followed
    with Store(mine / "tracekit.db") as store:
        store.create()
    assert (private / "tracekit.db").is_file()


@pytest.mark.parametrize(
    "planted", ["tracekit.db", "tracekit.db-wal", "tracekit.db-shm", "tracekit.db-lock"]
)
def test_a_file_another_user_left_in_a_shared_folder_is_not_written(
    tmp_path: Path, planted: str
) -> None:
    """Another user's empty file, mode 0666, in /tmp (sticky, writable by all) at the store's
    path or at its -wal's: the kernel's fs.protected_regular keeps a writer from opening it, but
    where that is off SQLite wrote every span into it, for the other user to read. Now
    ``tracekit collector --store /tmp/tracekit.db`` is one line and exit 2, and the file stays
    empty."""
    from conditions import need

    need(os.geteuid() == 0, "root, to leave a file another user owns")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    store_path, left = shared / "tracekit.db", shared / planted
    left.touch()
    left.chmod(0o666)
    os.chown(left, _nobody(), -1)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    result = subprocess.run(
        [tracekit, "collector", "--port", "0", "--grpc-port", "0", "--store", str(store_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "another user" in result.stderr, result.stderr
    with pytest.raises(PermissionError, match="another user"), Store(store_path) as store:
        store.create()
    assert left.stat().st_size == 0
    os.chown(left, os.geteuid(), -1)  # this user's own file: written, as before
    with Store(store_path) as store:
        store.create()
    assert store_path.stat().st_size > 0


def test_a_wal_another_user_left_beside_a_store_in_a_shared_folder_is_not_read(
    tmp_path: Path,
) -> None:
    """Another user's ``-wal`` (holding every page of a store of theirs) left beside the user's
    store in /tmp, where no collector has it open: ``tracekit search`` listed their forged
    request in place of the user's own, and closing the store wrote their pages into the file,
    the user's request gone for good. Now the command is one line and exit 2, and the store
    keeps what it held."""
    import sqlite3

    from conditions import need

    need(os.geteuid() == 0, "root, to leave a file another user owns")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    store_path, theirs = shared / "tracekit.db", tmp_path / "theirs.db"
    now = time.time_ns()
    for path, cid, trace_id in (
        (store_path, "req-own", "a" * 32),
        (theirs, "req-forged", "c" * 32),
    ):
        with Store(path) as store:
            store.write_spans([_request(cid, trace_id, now)])
    forger = sqlite3.connect(theirs, isolation_level=None)
    forger.execute("PRAGMA wal_autocheckpoint = 0")
    forger.execute("VACUUM")  # every page of their store into its -wal
    left = shared / "tracekit.db-wal"
    left.write_bytes(Path(f"{theirs}-wal").read_bytes())
    forger.close()
    left.chmod(0o666)
    os.chown(left, _nobody(), -1)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    search = [tracekit, "search", "--since", "1h", "--format", "text", "--store", str(store_path)]

    result = subprocess.run(search, capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and "another user" in result.stderr, result.stderr
    left.unlink()
    kept = subprocess.run(search, capture_output=True, text=True, timeout=30, check=True)
    assert "req-own" in kept.stdout and "req-forged" not in kept.stdout


def _request(correlation_id: str, trace_id: str, start: int) -> SpanRecord:
    return SpanRecord(
        trace_id, "b" * 16, None, "svc", "GET /", "SERVER", start, start + 10**6,
        attributes={"correlation.id": correlation_id}, resource={"service.name": "svc"},
    )  # fmt: skip
