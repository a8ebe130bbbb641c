"""A `wait` pending when its session is deleted answers `not_found` as soon as it hears the
session go (no `turn.end` follows `session.deleted`), rather than reading, seconds later,
that the turns it waited for are gone and answering that there was nothing to wait for.
Against the tests' real Redis and database, with the web process's hub."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessions_app.errors import NotFound
from sessions_app.infra.db_threads import db
from sessions_app.schemas import CancelFilter
from sessions_app.sessions.services import session_delete
from sessions_app.web.hub import hub
from sessions_app.web.waiting import wait_for_turns
from tests.unit.published import claimed_turn, member_and_session

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.usefixtures("no_archive"),  # not what these tests look at
]


@pytest.fixture
def streaming() -> tuple[Any, Any]:
    """A member, and their session with a turn of theirs a worker has claimed."""
    alice, session = member_and_session()
    claimed_turn(alice, session)
    return alice, session


async def test_a_wait_pending_when_its_session_is_deleted_answers_not_found(streaming):
    alice, session = streaming
    session_id = str(session.pk)
    feed_hub = hub()
    waiting = asyncio.ensure_future(wait_for_turns(session_id=session_id, user=alice, flt=CancelFilter(), timeout=60))
    try:
        # Until the wait listens to the session's feed (its turn is still streaming).
        deadline = asyncio.get_running_loop().time() + 30
        while not ((feed := feed_hub.feeds.get(session_id)) and feed.listeners):
            assert not waiting.done(), waiting.result()
            assert asyncio.get_running_loop().time() < deadline, "the wait never listened"
            await asyncio.sleep(0.01)
        await db(session_delete)(session=session, by=alice)
        with pytest.raises(NotFound, match="deleted"):
            await waiting
    finally:
        waiting.cancel()
        await feed_hub.aclose()
