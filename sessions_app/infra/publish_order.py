"""The events of commands on one session published in the order the commands committed.

A command's events go to Redis after its transaction has committed, and not at once: a
send's wait for its HTTP answer to be written (decision 033), a cancel's go as its answer is
handed over (decision 043). Two commands on one session commit one after the other (the
session's lock), but without more, the second's events could be numbered first: a cancel
committed just after a send then reached every device before the send's `message` and
`turn.start`, and a client showed the turn it ended as running for ever.

So each such command takes a ticket inside its transaction, while it holds the session's
lock (the order of the tickets is the order of the commits), and its publish waits for the
publishes of the tickets taken before it on the same sessions, in this process. A ticket
whose transaction rolls back is released: when its thread next takes one, or when its
database call ends (db_threads). A wait is bounded (WAIT_LIMIT_SECONDS): a publish that
never comes holds the next back no longer. Commands served by another web process are not
ordered by this (decision 046).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from django.db import transaction

logger = logging.getLogger(__name__)

# The longest a publish waits for those before it. An HTTP send's publish may itself wait
# up to 20 ms for its answers to be written (web/commands.ANSWERS_FIRST_SECONDS).
WAIT_LIMIT_SECONDS = 1.0

_lock = threading.Lock()
# Session id -> the last ticket's "published", and the thread that took it.
_latest: dict[str, tuple[threading.Event, int]] = {}


class Ticket:
    """A command's place in its sessions' publishing order."""

    __slots__ = ("_before", "_published", "_sessions")

    def __init__(self, published: threading.Event, before: list[threading.Event], sessions: tuple[str, ...]) -> None:
        self._published, self._before, self._sessions = published, before, sessions

    def wait(self) -> None:
        """Until the commands before this one on its sessions have published."""
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        for earlier in self._before:
            if not earlier.wait(max(deadline - time.monotonic(), 0.0)):
                logger.warning(
                    "events of sessions %s published without waiting longer for earlier ones", self._sessions
                )
                return

    def published(self) -> None:
        """This command's events are in Redis (or will never be): the next may go."""
        self._published.set()
        with _lock:
            for session_id in self._sessions:
                latest = _latest.get(session_id)
                if latest is not None and latest[0] is self._published:
                    del _latest[session_id]


def take(session_ids: Iterable[str]) -> Ticket:
    """A ticket behind every ticket another thread took before on these sessions. This
    thread's own are behind each other already: it publishes them in the order it took them
    (the waves of a set of sends), and waiting for one would wait for itself."""
    sessions = tuple(dict.fromkeys(session_ids))
    published, me = threading.Event(), threading.get_ident()
    with _lock:
        before = [
            latest[0] for session_id in sessions if (latest := _latest.get(session_id)) is not None and latest[1] != me
        ]
        for session_id in sessions:
            _latest[session_id] = (published, me)
    return Ticket(published, before, sessions)


class _Open(threading.local):
    """This thread's tickets whose transaction has not committed yet, with that transaction."""

    def __init__(self) -> None:
        self.tickets: list[tuple[object, Ticket]] = []


_open = _Open()


def release_uncommitted(keep: object | None = None) -> None:
    """Release this thread's tickets whose transaction is over without committing (rolled
    back: nothing of theirs will be published), but those of the transaction `keep`."""
    for entry in [entry for entry in _open.tickets if entry[0] is not keep]:
        _open.tickets.remove(entry)
        entry[1].published()


def take_in_transaction(session_ids: Iterable[str]) -> Ticket:
    """The ticket of the surrounding transaction's command: taken now, inside it (in the
    order of the sessions' locks), kept if it commits, released if it rolls back."""
    connection = transaction.get_connection()
    outermost = connection.atomic_blocks[0] if connection.atomic_blocks else None
    release_uncommitted(keep=outermost)
    ticket = take(session_ids)
    if outermost is None:
        return ticket  # no transaction: what it describes is committed already
    entry = (outermost, ticket)
    _open.tickets.append(entry)

    def committed() -> None:
        if entry in _open.tickets:
            _open.tickets.remove(entry)

    transaction.on_commit(committed, robust=True)
    return ticket
