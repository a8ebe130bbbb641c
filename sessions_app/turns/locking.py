"""Serialising the state changes of a session, and grouping many of them in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django.db import connection, transaction

from sessions_app.errors import NotFound
from sessions_app.infra.sql import column, fetch, marks, table, values
from sessions_app.models import ChatSession

logger = logging.getLogger(__name__)

T = TypeVar("T")


def lock_sessions(session_ids: Iterable[Any]) -> dict[Any, ChatSession]:
    """Serialise the sessions' state changes: their row locks where the database has row
    locks, taken in one query in pk order (two processes locking overlapping sets cannot
    deadlock); on SQLite the IMMEDIATE transaction already holds the database's write lock.
    Returns the sessions as read under the locks; empty where there are no row locks."""
    if not connection.features.has_select_for_update:
        return {}
    return {s.pk: s for s in ChatSession.objects.select_for_update().filter(pk__in=list(session_ids)).order_by("pk")}


def locked_session(session_id: Any) -> ChatSession:
    """The session as it is now, read under its lock (inside a transaction), for a change
    that reads and then writes it: NotFound if it was deleted meanwhile. A change made from
    a copy read earlier would undo another one, or bring back a deleted session (Django's
    `save` inserts a row its update did not find)."""
    found = lock_sessions([session_id]).get(session_id)
    if found is None:  # no row locks (SQLite: the transaction holds the write lock), or gone
        found = ChatSession.objects.filter(pk=session_id).first()
    if found is None:
        raise NotFound("no such session")
    return found


def lock_session_rows(session_ids: Iterable[Any]) -> None:
    """`lock_sessions` for a caller that needs the locks only (a turn's end): one plain
    statement that loads no session (a session row, with its JSON settings, costs the ORM
    a model instance; a turn's end on PostgreSQL paid ~0.3 ms for it). No-op on SQLite."""
    if not connection.features.has_select_for_update:
        return
    ids = values(ChatSession, "id", session_ids)
    if ids:
        id_column = column(ChatSession, "id")
        fetch(
            f"SELECT {id_column} FROM {table(ChatSession)} WHERE {id_column} IN ({marks(ids)}) "  # noqa: S608
            f"ORDER BY {id_column} FOR UPDATE",
            ids,
        )


def in_one_transaction(calls: Sequence[Callable[[], T]], lock_order: Sequence[str]) -> list[T | Exception]:
    """Run calls, each of which opens its own `transaction.atomic()`, in one transaction.
    Outcomes (a result or the error raised) come back in the order of `calls`.

    No savepoint per call: the calls (turn ends) fail only when the database does, so if
    one fails, the whole group rolls back and each call runs again on its own.

    `lock_order`: the session each call locks. Calls run sorted by it, so two processes'
    groups take their session locks in the same order and can never deadlock each other.
    A lone call runs as it is (its own transaction)."""
    if len(calls) == 1:
        return [_outcome(calls[0])]
    order = sorted(range(len(calls)), key=lambda i: lock_order[i])
    outcomes: dict[int, T | Exception] = {}
    try:
        with transaction.atomic():
            for index in order:
                outcomes[index] = calls[index]()
    except Exception:
        logger.warning("a call of a group failed; running the group's calls one by one", exc_info=True)
        return [_outcome(call) for call in calls]
    return [outcomes[index] for index in range(len(calls))]


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as exc:
        return exc
