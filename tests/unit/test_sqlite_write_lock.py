"""The SQLite backend's write queue (config/sqlite_backend, decision 011): a writer waits in
the lock's queue for the one in its transaction and starts once that one has committed, across
threads and processes; rollbacks, exceptions and closes release the lock.

Real SQLite files and real flocks. Most tests use a database of their own (a temporary
file, alias `writelock`), so they do not depend on how the test database is configured.
"""

from __future__ import annotations

import fcntl
import os
import queue
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
from django.db import connections, transaction

from config.settings.base import BASE_DIR
from config.sqlite_backend import base as backend
from config.sqlite_backend.base import DatabaseWrapper, write_lock_path

ALIAS = "writelock"
OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
TIMEOUT = 10  # seconds: a bound on each wait, far above what any of them takes


def register(name: str) -> None:
    settings = {"ENGINE": "config.sqlite_backend", "NAME": name, "OPTIONS": OPTIONS}
    connections.settings[ALIAS] = connections.configure_settings({"default": {}, ALIAS: settings})[ALIAS]


@pytest.fixture
def db_file(tmp_path: Path, django_db_blocker: Any) -> Iterator[str]:
    name = str(tmp_path / "db.sqlite3")
    register(name)
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        yield name
        connections[ALIAS].close()
    del connections[ALIAS]
    del connections.settings[ALIAS]


def insert() -> None:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("INSERT INTO t (v) VALUES (%s)", ["x"])


def rows_in_transaction() -> int:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        return int(cursor.fetchone()[0])


def lock_is_free(db_name: str) -> bool:
    """Whether a writer could take the queue's lock right now (through a file of its own)."""
    fd = os.open(write_lock_path(db_name), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the lock if we took it
    return True


def rows(db_name: str) -> int:
    """The rows committed so far, as a new reader sees them."""
    with closing(sqlite3.connect(db_name)) as reader:
        return int(reader.execute("SELECT count(*) FROM t").fetchone()[0])


def test_a_waiting_writer_queues_on_the_lock_and_starts_after_the_holder_commits(
    db_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer asks while the holder is in its transaction: it waits in the flock's queue
    (not in SQLite's busy handler), and gets the lock only after the holder committed and let
    go of it. Seen through the backend's flock calls, from the threads that make them."""
    log: list[tuple[str, str]] = []
    queued = threading.Event()
    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        who = threading.current_thread().name.split("_")[0]
        if operation == fcntl.LOCK_EX:  # the blocking ask, made once LOCK_NB found it taken
            log.append((who, "queues"))
            queued.set()
        elif operation == fcntl.LOCK_UN:
            log.append((who, f"lets go with {rows(db_file)} rows committed"))
        real_flock(fd, operation)
        if operation == fcntl.LOCK_EX:
            log.append((who, "gets the lock"))

    monkeypatch.setattr(
        backend,
        "fcntl",
        SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, LOCK_UN=fcntl.LOCK_UN, flock=flock),
    )
    holding, let_go = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic(using=ALIAS):
                insert()
                holding.set()
                assert let_go.wait(TIMEOUT)
        finally:
            connections[ALIAS].close()

    def write() -> int:
        try:
            assert holding.wait(TIMEOUT)
            with transaction.atomic(using=ALIAS):
                seen = rows_in_transaction()
                insert()
            return seen
        finally:
            connections[ALIAS].close()

    with (
        ThreadPoolExecutor(1, thread_name_prefix="holder") as holders,
        ThreadPoolExecutor(1, thread_name_prefix="writer") as writers,
    ):
        holder, writer = holders.submit(hold), writers.submit(write)
        assert queued.wait(TIMEOUT), "the writer did not queue on the lock"
        assert not writer.done()  # it cannot start while the holder is in its transaction
        let_go.set()
        holder.result(TIMEOUT)
        seen = writer.result(TIMEOUT)

    assert log == [
        ("writer", "queues"),
        ("holder", "lets go with 1 rows committed"),  # after its commit, not before
        ("writer", "gets the lock"),
        ("writer", "lets go with 2 rows committed"),
    ]
    assert seen == 1  # the writer's transaction began after the holder's commit


def test_commit_rollback_exceptions_and_close_release_the_lock(db_file: str) -> None:
    with transaction.atomic(using=ALIAS):
        insert()
        assert not lock_is_free(db_file)
        with transaction.atomic(using=ALIAS):  # a savepoint keeps it
            insert()
        assert not lock_is_free(db_file)
    assert lock_is_free(db_file)

    with transaction.atomic(using=ALIAS):
        insert()
        transaction.set_rollback(True, using=ALIAS)
    assert lock_is_free(db_file)

    with pytest.raises(ValueError), transaction.atomic(using=ALIAS):
        insert()
        raise ValueError
    assert lock_is_free(db_file)

    with transaction.atomic(using=ALIAS):
        insert()
        connections[ALIAS].close()
        assert lock_is_free(db_file)
    insert()  # reconnects
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone()[0] == 3  # the first two and the last: the rest rolled back


CHILD = textwrap.dedent(
    """
    import fcntl, sys
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": {
        "ENGINE": "config.sqlite_backend", "NAME": sys.argv[1], "OPTIONS": {"transaction_mode": "IMMEDIATE"},
    }})
    django.setup()
    from django.db import connection, transaction

    real_flock = fcntl.flock

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX:  # the blocking ask, made once LOCK_NB found it taken
            print("queued", flush=True)
        real_flock(fd, operation)

    fcntl.flock = flock
    connection.ensure_connection()
    print("ready", flush=True)
    with transaction.atomic():
        seen = connection.cursor().execute("SELECT count(*) FROM t").fetchone()[0]
        connection.cursor().execute("INSERT INTO t (v) VALUES ('child')")
    print(f"saw {seen}", flush=True)
    """
)


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines of a child's output as they come, for reads bounded by a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_writer_in_another_process_waits_and_starts_after_the_holder_commits(db_file: str) -> None:
    child = None
    try:
        with transaction.atomic(using=ALIAS):
            insert()
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, db_file], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
            )
            assert child.stdout is not None
            output = lines_of(child.stdout)
            assert output.get(timeout=TIMEOUT) == "ready\n"
            assert output.get(timeout=TIMEOUT) == "queued\n"  # it asked while this transaction holds
            assert child.poll() is None  # and waits: it cannot start before this commits
        assert output.get(timeout=TIMEOUT) == "saw 1\n"  # its transaction began after this one's commit
        assert child.wait(timeout=TIMEOUT) == 0
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


def test_an_in_memory_database_takes_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, django_db_blocker: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    register(":memory:")
    try:
        with django_db_blocker.unblock():
            with connections[ALIAS].cursor() as cursor:
                cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            with transaction.atomic(using=ALIAS):
                insert()
            connections[ALIAS].close()  # ignored by Django for in-memory databases
        assert list(tmp_path.iterdir()) == []
    finally:
        del connections[ALIAS]
        del connections.settings[ALIAS]


@pytest.mark.django_db
def test_the_test_database_queues_on_a_lock_beside_its_own_file() -> None:
    db = connections["default"]
    if db.vendor != "sqlite":
        pytest.skip("the test database is not SQLite")
    assert isinstance(db, DatabaseWrapper)  # settings put the queue in front of every SQLite database
    if db.is_in_memory_db():
        pytest.skip("the test database is in memory")
    name = db.settings_dict["NAME"]
    assert name == db.settings_dict["TEST"]["NAME"]
    assert not lock_is_free(name)  # the test runs inside a transaction


def test_statements_keep_their_placeholders_and_literal_percents(db_file: str, django_db_blocker: Any):
    """The cursors convert `%s` to `?` once per statement text (decision 011's backend): a
    statement run again, with other values, reads its own values; `%%` is a literal `%`."""
    statement = "SELECT %s, '100%%', v FROM t WHERE v LIKE %s"
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("INSERT INTO t (v) VALUES (%s), (%s)", ["a%b", "c"])
            answers = []
            for value, pattern in ((1, "a%"), (2, "c")):
                cursor.execute(statement, [value, pattern])
                answers.append(cursor.fetchall())
    assert answers == [[(1, "100%", "a%b")], [(2, "100%", "c")]]
    assert backend._qmark_style.cache_info().hits >= 1
