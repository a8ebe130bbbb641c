"""The durable archive of published events (EventRecord), written off every request's path
by a thread of its own. The live log in Redis holds the events meanwhile; resumes from
further back than the live log read the archive."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence

from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from sessions_app.infra import live_state, sql
from sessions_app.infra.live_state import Event
from sessions_app.models import ChatSession, EventRecord

logger = logging.getLogger(__name__)

# (seq, type, frame) of a published event.
ArchivedFrame = tuple[int, str, str]


def archive_many(frames_by_session: Mapping[str, Sequence[ArchivedFrame]]) -> None:
    """Write published frames of many sessions to the archive, in one transaction (a frame
    archived already is skipped), and move the sessions that got a new message to the top
    of their members' lists (`updated_at`: here rather than in each send's transaction,
    which is on the path to the first token).

    Plain rows, each session's key and the time adapted once: `bulk_create` adapted every
    value of every row, ~5% of a web process's CPU in a burst of sends (decision 034)."""
    created = timezone.now()
    [created_at] = sql.values(EventRecord, "created_at", [created])
    sessions = list(frames_by_session)
    session_keys = dict(zip(sessions, sql.values(EventRecord, "session", sessions), strict=True))
    rows = [
        (session_keys[session_id], seq, event_type, frame, created_at)
        for session_id, frames in frames_by_session.items()
        for seq, event_type, frame in frames
    ]
    with_messages = [
        session_id
        for session_id, frames in frames_by_session.items()
        if any(event_type == "message" for _, event_type, _ in frames)
    ]
    with transaction.atomic():
        sql.insert_rows(EventRecord, ("session", "seq", "type", "frame", "created_at"), rows, ignore_conflicts=True)
        if with_messages:
            sql.update(ChatSession, {"updated_at": created}, {"id": with_messages})


ARCHIVE_DELAY_SECONDS = 0.1


class Archiver:
    """Writes published events to the archive from a thread of its own, in batches, so
    that no request, cancel or turn end waits on the insert."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, list[ArchivedFrame]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, session_id: str, events: Sequence[Event], frames: Sequence[str]) -> None:
        """Archive the frames of published events (in the order published)."""
        # Deltas are not archived: they are most events, the answers are in the tree, and a
        # resume from further back than the live log gets a snapshot (decision 009).
        kept = [
            (live_state.seq_of(frame), event["type"], frame)
            for event, frame in zip(events, frames, strict=True)
            if event["type"] != "delta"
        ]
        if not kept:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-archiver", daemon=True)
                self._thread.start()
        self._queue.put((session_id, kept))

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            # A connection that went bad is replaced by the write's query; one that cannot be
            # had fails the write, which logs it: this thread must outlive both.
            with contextlib.suppress(Exception):
                close_old_connections()
            self.write(batch)

    def _next_batch(self) -> dict[str, list[ArchivedFrame]]:
        batch: dict[str, list[ArchivedFrame]] = {}
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
        return batch

    def write(self, batch: dict[str, list[ArchivedFrame]]) -> None:
        try:
            archive_many(batch)
        except IntegrityError:
            # A session of the batch was deleted (its `session.deleted` itself, or what a
            # process published for it meanwhile): each session's events on their own, so
            # that a deleted session's go with it and the others' are archived. Not "the
            # sessions that exist, again": a deletion not committed yet still shows its
            # session, whose rows the insert then waits for and fails on (PostgreSQL), and
            # the batch would be lost. Only then: no read or extra statement per batch.
            self._write_each(batch)
        except Exception:  # the live log still has them; retried by nothing, logged
            logger.exception("archiving events of %d sessions failed", len(batch))

    def _write_each(self, batch: dict[str, list[ArchivedFrame]]) -> None:
        for session_id, frames in batch.items():
            try:
                archive_many({session_id: frames})
            except IntegrityError:
                continue  # deleted: its events go with it
            except Exception:
                logger.exception("archiving events of session %s failed", session_id)


archiver = Archiver()
