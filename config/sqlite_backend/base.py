"""Django's SQLite backend, with write transactions queued on an OS file lock.

Every write transaction starts with BEGIN IMMEDIATE (settings: `transaction_mode`). When the
write lock is taken, SQLite's busy handler *sleeps* and retries with growing pauses (1, 2, 5,
10 ... 100 ms), so under a burst of writers the waiters oversleep the lock's release and the
burst takes far longer than its transactions. Here a writer first takes an exclusive
`flock` on `<database>.writelock`: the kernel queues the waiters, across threads and
processes, and wakes one the moment the holder lets go, so it then finds SQLite's lock free.
Decision 011.

Its cursors convert Django's placeholders (`%s`) to SQLite's (`?`) once per statement text
rather than on every execution: a regular expression over the statement, 9 µs for one row's
INSERT and ~150 µs for the 52-row INSERTs of a set of sends, against ~0.5 and 2 µs for the
look-up (strings cache their hash; a statement built anew pays one pass to hash it).
"""

from __future__ import annotations

import fcntl
import functools
import os
from typing import Any
from urllib.parse import urlsplit

from django.db.backends.sqlite3 import base, creation


def write_lock_path(name: str | os.PathLike[str]) -> str:
    """The lock file of a database file (NAME may be a path or a `file:` URI)."""
    path = os.fspath(name)
    if path.startswith("file:"):
        path = urlsplit(path).path
    return f"{path}.writelock"


class DatabaseCreation(creation.DatabaseCreation):
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]  # private: not in the stubs
        if test_database_name and not self.is_in_memory_db(test_database_name):
            # Nothing uses it once the database is gone; don't leave one per test run.
            try:
                os.remove(write_lock_path(test_database_name))
            except FileNotFoundError:
                pass


@functools.lru_cache(maxsize=1024)
def _qmark_style(query: str) -> str:
    """`query` with SQLite's placeholders: what Django's cursor does, kept per text."""
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class SQLiteCursor(base.SQLiteCursorWrapper):
    """Django's SQLite cursor, its conversion of "format"-style statements kept."""

    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return _qmark_style(query)
        return super().convert_query(query, param_names=param_names)  # type: ignore[no-any-return]


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def create_cursor(self, name: str | None = None) -> SQLiteCursor:
        return self.connection.cursor(factory=SQLiteCursor)  # type: ignore[no-any-return]

    # One open file (hence one flock owner) per Django connection, i.e. per thread: two
    # connections of one process exclude each other like two processes do.
    _write_lock_fd: int | None = None
    _write_lock_pid: int = 0  # the process that opened the fd (see _acquire_write_lock)
    _write_lock_held: bool = False

    def _acquire_write_lock(self) -> None:
        if self.is_in_memory_db():
            return  # no other process can open it, and SQLite's own lock is enough
        if self._write_lock_fd is not None and self._write_lock_pid != os.getpid():
            # Inherited through fork: the child shares the parent's open file, so its
            # flock would not exclude the parent. Drop our copy (the parent's stays locked).
            os.close(self._write_lock_fd)
            self._write_lock_fd, self._write_lock_held = None, False
        if self._write_lock_fd is None:
            # The path follows the NAME in use now (the test database has its own).
            self._write_lock_fd = os.open(
                write_lock_path(self.settings_dict["NAME"]), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._write_lock_pid = os.getpid()
        try:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Taken: wait in the kernel's queue (releases the GIL). This runs on a request or
            # executor thread, as all sync ORM code does, never on an event loop. No timeout:
            # a holder's transaction ends with a commit, a rollback, a close or its death.
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
        self._write_lock_held = True

    def _release_write_lock(self) -> None:
        if self._write_lock_held and self._write_lock_fd is not None:
            self._write_lock_held = False
            if self._write_lock_pid == os.getpid():
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)

    def _start_transaction_under_autocommit(self) -> None:
        # atomic() begins here; a BEGIN that fails must not keep the lock.
        self._acquire_write_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._release_write_lock()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]
        finally:
            # Even if COMMIT fails: the rollback that follows needs no queue (SQLite keeps its
            # own lock until then, so the next writer merely waits there a moment).
            self._release_write_lock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]
        finally:
            self._release_write_lock()

    def close(self) -> None:
        self.validate_thread_sharing()  # before touching the lock: another thread may own it
        try:
            super().close()  # closing the SQLite connection ends any open transaction
        finally:
            self._release_write_lock()
            if self._write_lock_fd is not None:
                os.close(self._write_lock_fd)
                self._write_lock_fd = None
