"""`wait`: block until the turns a filter matches have ended, or a timeout passes.

The waiter listens to the session's feed in this process (hub.py) for `turn.end`, so it
answers as soon as the last matched turn ends, with no polling of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
from django.contrib.auth.models import AbstractBaseUser

from sessions_app.cancellation.filters import matches
from sessions_app.cancellation.services import client_id_of
from sessions_app.errors import NotFound
from sessions_app.infra.db_threads import db
from sessions_app.models import IN_FLIGHT, Turn, oldest_first
from sessions_app.schemas import CancelFilter
from sessions_app.web.hub import hub


def matched_turns(*, session_id: str, user: AbstractBaseUser, flt: CancelFilter) -> list[dict[str, Any]]:
    """Turns the filter names: a turnId in any state; otherwise the in-flight ones."""
    turns = Turn.objects.filter(session_id=uuid.UUID(session_id))
    # The database narrows to the candidates (the one turnId, else the in-flight turns);
    # which of them the filter names is decided by the one Python matcher.
    turns = turns.filter(turn_id=flt.turn_id) if flt.turn_id is not None else turns.filter(status__in=IN_FLIGHT)
    requester = client_id_of(user)
    return [
        {"turnId": t.turn_id, "status": t.status, "reason": t.reason}
        for t in oldest_first(turns)
        if matches(flt, turn_id=t.turn_id, client_id=t.client_id, requester_client_id=requester)
    ]


def turn_states(*, session_id: str, turn_ids: list[str]) -> list[dict[str, Any]]:
    by_id = {t.turn_id: t for t in Turn.objects.filter(session_id=uuid.UUID(session_id), turn_id__in=turn_ids)}
    return [{"turnId": i, "status": by_id[i].status, "reason": by_id[i].reason} for i in turn_ids if i in by_id]


class _EndWatcher:
    def __init__(self, turn_ids: set[str]) -> None:
        self.waiting = set(turn_ids)
        self.done = asyncio.Event()
        self.session_gone = False

    def offer(self, seq: int, frame: str) -> None:
        event = orjson.loads(frame)
        kind = event.get("type")
        if kind == "session.deleted":  # no `turn.end` follows: the turns went with it
            self.session_deleted()
        if kind != "turn.end":
            return
        self.waiting.discard(event.get("turnId"))
        if not self.waiting:
            self.done.set()

    def session_deleted(self) -> None:
        """The hub's word that the session was deleted (also heard as its last event)."""
        self.session_gone = True
        self.done.set()

    def resync(self) -> None:
        self.done.set()  # re-read the database below


async def wait_for_turns(
    *, session_id: str, user: AbstractBaseUser, flt: CancelFilter, timeout: float
) -> dict[str, Any]:
    turns = await db(matched_turns)(session_id=session_id, user=user, flt=flt)
    turn_ids = [t["turnId"] for t in turns]
    watcher = _EndWatcher({t["turnId"] for t in turns if t["status"] in IN_FLIGHT})
    if not watcher.waiting:
        return {"turns": turns, "timedOut": False}
    feed_hub = hub()
    await feed_hub.subscribe(session_id, watcher)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            watcher.done.clear()
            # The database is the truth: also covers ends that happened before we listened.
            turns = await db(turn_states)(session_id=session_id, turn_ids=turn_ids)
            if watcher.session_gone or len(turns) < len(turn_ids):  # turns go only with their session
                raise NotFound("no such session: it was deleted")
            if all(t["status"] not in IN_FLIGHT for t in turns):
                return {"turns": turns, "timedOut": False}
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {"turns": turns, "timedOut": True}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.done.wait(), timeout=min(remaining, 5.0))
    finally:
        await feed_hub.unsubscribe(session_id, watcher)
