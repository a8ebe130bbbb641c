"""The one place that emits events: builders for each event type, and emission after the
database commit (services) or straight away (the worker's streaming path).

Events go to Redis (numbered, logged, fanned out: live_state.py), then to the database archive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import close_old_connections, transaction
from django.utils import timezone

from sessions_app.infra import live_state
from sessions_app.infra.live_state import Event, now_ms
from sessions_app.models import ChatSession, MessageNode, Turn, node_payload
from sessions_app.turns._queries import archive_events

logger = logging.getLogger(__name__)


def turn_queued(turn: Turn, position: int) -> Event:
    return {
        "type": "turn.queued",
        "at": now_ms(),
        "turnId": turn.turn_id,
        "clientId": turn.client_id,
        "position": position,
    }


def turn_start(turn: Turn) -> Event:
    return {"type": "turn.start", "at": now_ms(), "turnId": turn.turn_id, "clientId": turn.client_id}


def message(node: MessageNode, turn_id: str | None) -> Event:
    return {"type": "message", "at": now_ms(), "message": node_payload(node, turn_id=turn_id)}


def delta(turn_id: str, message_id: str, text: str, part: str = "text") -> Event:
    event: Event = {"type": "delta", "at": now_ms(), "turnId": turn_id, "messageId": message_id, "text": text}
    if part != "text":
        event["part"] = part
    return event


def turn_end(turn: Turn) -> Event:
    event: Event = {
        "type": "turn.end",
        "at": now_ms(),
        "turnId": turn.turn_id,
        "clientId": turn.client_id,
        "reason": turn.status,
    }
    if turn.error_code:
        event["error"] = {"code": turn.error_code, "message": turn.error_message}
    return event


def cancel(filter_: dict[str, Any], client_id: str, cancelled: list[str], rejected: list[str]) -> Event:
    return {
        "type": "cancel",
        "at": now_ms(),
        "filter": filter_,
        "clientId": client_id,
        "cancelled": cancelled,
        "rejected": rejected,
    }


def presence(online: list[str]) -> Event:
    return {"type": "presence", "at": now_ms(), "online": online}


def archive_many(frames_by_session: dict[str, Sequence[str]]) -> None:
    """Write published frames of many sessions to the durable archive, in one transaction,
    and move the sessions that got a new message to the top of their members' lists
    (`updated_at`: here rather than in each send's transaction, which is on the path to
    the first token)."""
    rows = []
    with_messages = set()
    for session_id, frames in frames_by_session.items():
        for frame in frames:
            type_start = frame.index('"type":"') + 8
            event_type = frame[type_start : frame.index('"', type_start)]
            rows.append((session_id, live_state.seq_of(frame), event_type, frame))
            if event_type == "message":
                with_messages.add(session_id)
    with transaction.atomic():
        archive_events(rows)
        if with_messages:
            ChatSession.objects.filter(pk__in=with_messages).update(updated_at=timezone.now())


def is_delta(frame: str) -> bool:
    """Cheap test on a frame as published: `{"seq":N,"type":"delta",...`."""
    return frame.startswith('"type":"delta"', frame.index(",") + 1)


ARCHIVE_DELAY_SECONDS = 0.1


class Archiver:
    """Writes published events to the archive from a thread of its own, in batches, so
    that no request, cancel or turn end waits on the insert. The live log in Redis holds
    the events meanwhile (the archive serves resumes from further back than it keeps)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Sequence[str]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, session_id: str, frames: Sequence[str]) -> None:
        # Deltas are not archived: they are most events, the answers are in the tree, and a
        # resume from further back than the live log gets a snapshot (decision 009).
        frames = [f for f in frames if not is_delta(f)]
        if not frames:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-archiver", daemon=True)
                self._thread.start()
        self._queue.put((session_id, frames))

    def _run(self) -> None:
        while True:
            batch: dict[str, list[str]] = {}
            session_id, frames = self._queue.get()
            # Events come in bursts (a send's three, a turn's end, a cancel's), each right
            # before a latency-critical write elsewhere (the claim, the finish): wait a little
            # so as not to take the write lock at that moment, and to batch more.
            time.sleep(ARCHIVE_DELAY_SECONDS)
            batch.setdefault(session_id, []).extend(frames)
            while len(batch) < 500:
                try:
                    session_id, frames = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.setdefault(session_id, []).extend(frames)
            try:
                close_old_connections()
                archive_many(dict(batch))
            except Exception:  # the live log still has them; retried by nothing, logged
                logger.exception("archiving events of %d sessions failed", len(batch))


archiver = Archiver()


def publish_now(session_id: str, events: Sequence[Event]) -> list[str]:
    """Publish, then archive in the background (the caller has committed what the events
    describe)."""
    return publish_many_now([(session_id, events)])[0]


def publish_many_now(batches: Sequence[tuple[str, Sequence[Event]]]) -> list[list[str]]:
    """`publish_now` for many sessions' batches in one Redis round trip, in order."""
    published = live_state.publish_many(batches)
    for (session_id, _), frames in zip(batches, published, strict=True):
        archiver.add(session_id, frames)
    return published


async def publish_now_async(session_id: str, events: Sequence[Event]) -> list[str]:
    """Publish, then archive in the background, from async code."""
    frames = await live_state.publish_async(session_id, events)
    archiver.add(session_id, frames)
    return frames


def emit_on_commit(session_id: str, events: Sequence[Event]) -> None:
    """Publish once the surrounding transaction commits; nothing if it rolls back."""
    batch = list(events)
    if batch:
        transaction.on_commit(lambda: publish_now(session_id, batch))


def tool_call(turn_id: str, message_id: str, part: dict[str, Any]) -> Event:
    """A model asked for a server-side tool (`part`: a `tool-call` part of the answer)."""
    return {"type": "tool.call", "at": now_ms(), "turnId": turn_id, "messageId": message_id, "part": part}


def tool_result(turn_id: str, message_id: str, part: dict[str, Any]) -> Event:
    """A tool's result (`part`: a `tool-result` part of the answer)."""
    return {"type": "tool.result", "at": now_ms(), "turnId": turn_id, "messageId": message_id, "part": part}
