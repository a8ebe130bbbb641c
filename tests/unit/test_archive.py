"""The event archive while sessions are being deleted: a deletion that has not committed
yet must cost no other session its events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError

from sessions_app.events import archive
from sessions_app.events.archive import ArchivedFrame, archiver
from sessions_app.models import ChatSession, EventRecord


def frame(seq: int) -> ArchivedFrame:
    return (seq, "message", f'{{"seq":{seq},"type":"message"}}')


@pytest.mark.django_db
def test_sessions_being_deleted_while_their_events_are_archived_cost_the_others_nothing(monkeypatch):
    """On PostgreSQL an insert naming a session whose deletion has not committed waits for
    it, then fails on the foreign key; a read meanwhile still finds the session. With two
    such deletions, a retry of "the sessions that exist" failed again on the second, and
    the batch was dropped, the live session's events with it (seen in a scale-out run:
    dozens of a live session's events missing from its archive)."""
    owner = get_user_model().objects.create_user(username="archive-owner", password="x")
    live, *doomed = [ChatSession.objects.create(owner=owner, title=name) for name in ("live", "doomed", "doomed too")]
    being_deleted = {str(session.pk) for session in doomed}  # their rows still there, for any read
    insert = archive.archive_many

    def as_postgresql_does(frames_by_session: Mapping[str, Sequence[ArchivedFrame]]) -> None:
        if being_deleted & set(frames_by_session):
            raise IntegrityError('insert violates foreign key constraint "sessions_app_eventrecord_session_id"')
        insert(frames_by_session)

    monkeypatch.setattr(archive, "archive_many", as_postgresql_does)

    archiver.write({str(live.pk): [frame(1), frame(2)], **{str(s.pk): [frame(1)] for s in doomed}})

    assert sorted(EventRecord.objects.filter(session=live).values_list("seq", flat=True)) == [1, 2]
    assert not EventRecord.objects.exclude(session=live).exists()
