"""The SQLite backend's write queue (config/sqlite_backend, decision 011): a writer waits for
the one in its transaction and starts the moment it commits, across threads and processes;
rollbacks, exceptions and closes release the lock.

Real SQLite files and real flocks. Most tests use a database of their own (a temporary
file, alias `writelock`), so they do not depend on how the test database is configured.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction

from config.settings.base import BASE_DIR
from config.sqlite_backend.base import DatabaseWrapper, write_lock_path

ALIAS = "writelock"
OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
# A writer that slept and retried in SQLite's busy handler would start up to 100 ms late
# (its pauses grow to 25, 50, 100 ms); one queued on the flock starts within a millisecond.
PROMPT = 0.020


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


def test_a_waiting_writer_starts_as_soon_as_the_holder_commits(db_file: str) -> None:
    # Hold times just past SQLite's retry points (1, 3, 8, 18, 33, 53, 78, 103, 128, 178,
    # 228, 328 ms), where sleeping and retrying would start late by 18 to 98 ms.
    holds = [0.035, 0.080, 0.130, 0.180, 0.230] * 2

    def hold(seconds: float, entered: threading.Event) -> float:
        try:
            with transaction.atomic(using=ALIAS):
                insert()
                entered.set()
                time.sleep(seconds)
                committing = time.perf_counter()
            return committing
        finally:
            connections[ALIAS].close()

    def write(entered: threading.Event) -> tuple[float, float]:
        try:
            entered.wait()
            asked = time.perf_counter()
            with transaction.atomic(using=ALIAS):
                began = time.perf_counter()
                insert()
            return asked, began
        finally:
            connections[ALIAS].close()

    late: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        for seconds in holds:
            entered = threading.Event()
            holder, writer = pool.submit(hold, seconds, entered), pool.submit(write, entered)
            committing, (asked, began) = holder.result(), writer.result()
            assert began - asked > seconds * 0.8, "the writer did not wait for the holder"
            late.append(began - committing)
    assert max(late) < PROMPT, [f"{x * 1000:.1f} ms" for x in late]


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
    import sys, time
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": {
        "ENGINE": "config.sqlite_backend", "NAME": sys.argv[1], "OPTIONS": {"transaction_mode": "IMMEDIATE"},
    }})
    django.setup()
    from django.db import connection, transaction

    connection.ensure_connection()
    print("ready", flush=True)
    with transaction.atomic():
        began = time.time()
        connection.cursor().execute("INSERT INTO t (v) VALUES ('child')")
    print(began, flush=True)
    """
)


def test_a_writer_in_another_process_waits_and_starts_as_soon_as_the_holder_commits(db_file: str) -> None:
    with transaction.atomic(using=ALIAS):
        insert()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db_file], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(0.23)  # the child asks meanwhile: it must still be waiting
            assert child.poll() is None
            committing = time.time()
        except BaseException:
            child.kill()
            raise
    began = float(child.stdout.readline())
    assert child.wait(timeout=10) == 0
    assert 0 < began - committing < PROMPT * 2.5  # a process wakes up a bit slower than a thread


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
