"""The work after a commit that `answering_first` holds back until the answers it lets out
are written (infra/db_threads.Hold, decision 033), and the work it runs at the answer,
ahead of the hold (`at_answer`, decision 043)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sessions_app.infra.db_threads import Hold, after_commit, answering_first, at_answer

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


def committed_with_work_at_answer(at_answer_ran: threading.Event, deferred_ran: threading.Event) -> str:
    def at_the_answer() -> None:
        at_answer_ran.set()
        after_commit(deferred_ran.set)  # registered from there: still deferred

    at_answer(at_the_answer)
    return "answer"


async def test_work_at_the_answer_runs_before_the_hold_and_its_own_later_work_waits_for_it():
    at_answer_ran, deferred_ran = threading.Event(), threading.Event()
    hold = Hold(1, limit=60)

    answer, after = await answering_first(committed_with_work_at_answer, hold)(at_answer_ran, deferred_ran)

    assert answer == "answer"
    assert await asyncio.to_thread(at_answer_ran.wait, 10)  # the hold is not released yet
    assert not deferred_ran.is_set()
    hold.release_one()
    await after
    assert deferred_ran.is_set()
