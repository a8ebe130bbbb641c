"""The work after a commit that `answering_first` holds back until the answers it lets out
are written (infra/db_threads.Hold, decision 033)."""

from __future__ import annotations

import threading

import pytest

from sessions_app.infra.db_threads import Hold, after_commit, answering_first

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


def committed_with(work: threading.Event) -> str:
    after_commit(work.set)
    return "answer"


async def test_the_work_after_a_commit_waits_for_every_release_of_its_hold():
    ran = threading.Event()
    hold = Hold(2, limit=60)

    answer, after = await answering_first(committed_with, hold)(ran)

    assert answer == "answer" and not ran.is_set()
    hold.release_one()
    assert not after.done() and not ran.is_set()
    hold.release_one()
    await after
    assert ran.is_set()


async def test_a_hold_never_released_lets_the_work_go_after_its_limit():
    ran = threading.Event()

    _, after = await answering_first(committed_with, Hold(1, limit=0.05))(ran)

    await after
    assert ran.is_set()
