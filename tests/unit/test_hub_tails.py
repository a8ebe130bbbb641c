"""The hub's check of its sessions' tails (web/hub.py, `_check_tails`) against real Redis:
a session whose events kept arriving while the check read its last seq is not taken for
one whose numbering Redis lost (that costs a round trip a session, every second, while
sessions stream); one whose numbering did go back is moved above what devices saw."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sessions_app.infra import live_state
from sessions_app.web.hub import Hub, SessionFeed

pytestmark = pytest.mark.django_db


def feed_at(hub: Hub, seq: int) -> SessionFeed:
    feed = hub.feeds.setdefault(session := str(uuid.uuid4()), SessionFeed(session))
    feed.seq = seq
    feed.ready.set()
    return feed


async def set_last_seq(session_id: str, seq: int) -> None:
    await live_state.async_redis().set(live_state.Keys.seq(session_id), seq, ex=60)


@pytest.fixture
def renumbered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    renumber = live_state.renumber_above

    async def counted(session_id: str, floor: int) -> int:
        calls.append(session_id)
        return await renumber(session_id, floor)

    monkeypatch.setattr(live_state, "renumber_above", counted)
    return calls


async def test_events_forwarded_during_the_check_are_not_a_loss(monkeypatch: Any, renumbered: list[str]) -> None:
    hub = Hub()
    feed = feed_at(hub, 5)
    await set_last_seq(feed.session_id, 5)
    read = live_state.last_seqs

    async def read_while_events_arrive(session_ids: list[str]) -> list[int]:
        seqs = await read(session_ids)
        feed.seq = 7  # events 6 and 7 published and forwarded meanwhile
        return seqs

    monkeypatch.setattr(live_state, "last_seqs", read_while_events_arrive)
    await hub._check_tails()
    assert renumbered == []
    assert feed.seq == 7


async def test_a_numbering_that_went_back_is_moved_above_what_devices_saw(renumbered: list[str]) -> None:
    hub = Hub()
    feed = feed_at(hub, 9)
    await set_last_seq(feed.session_id, 3)  # Redis restarted and lost the session's count
    await hub._check_tails()
    assert renumbered == [feed.session_id]
    assert await live_state.last_seq(feed.session_id) >= 9
