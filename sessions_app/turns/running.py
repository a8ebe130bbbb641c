"""The worker's side of a turn's life: claiming the turns it was handed, ending them with
their outcome (and starting the next queued turn), and ending the turns of workers that
stopped heartbeating. Each runs its transitions (transitions.py) under the session's lock."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone

from sessions_app.events import build, emit
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import after_commit
from sessions_app.infra.live_state import Event
from sessions_app.models import MessageNode, Policy, Turn, TurnStatus
from sessions_app.tree import context_nodes, context_path
from sessions_app.turns import announce, transitions
from sessions_app.turns._queries import in_flight_turns
from sessions_app.turns.locking import lock_session_rows
from sessions_app.turns.promotion import interrupted_by, promote
from sessions_app.turns.types import ClaimedTurn, TurnOutcome

logger = logging.getLogger(__name__)


def turns_claim(*, turn_pks: Sequence[int], worker_id: str) -> list[ClaimedTurn | None]:
    """Claim many turns in one transaction (a worker claims the turns it was handed
    meanwhile together: worker/turn_loop.py). One outcome per pk, in order: None for a turn
    claimed before, ended, or named twice (only its first request gets it), so a
    redelivered task never runs a turn twice."""
    with transaction.atomic():  # on SQLite: queued on the write lock with the others (decision 011)
        rows = transitions.claim(turn_pks, worker_id)
    claimed: dict[int, ClaimedTurn] = {}
    if rows:
        # The branches above the turns' messages, with the exchanges that ran beside them
        # and the turns' answers: their contexts (tree.py), in one read.
        nodes = context_nodes((row.user_message_id or 0 for row in rows), {row.session_id for row in rows})
        for row in rows:
            branch = context_path(row.user_message_id or 0, nodes)
            claimed[row.pk] = ClaimedTurn(
                pk=row.pk,
                session_id=str(row.session_id),
                turn_id=row.turn_id,
                client_id=row.client_id,
                model=row.model,
                model_options=dict(row.model_options),
                assistant_message_id=nodes[row.assistant_message_id or 0].node_id,
                cancel_requested=bool(row.cancel_requested_by),
                context=[{"role": node.role, "parts": node.parts} for node in branch],
            )
    return [claimed.pop(pk, None) for pk in turn_pks]


def turn_finish(outcome: TurnOutcome) -> bool:
    """End an active turn with its outcome, then start the queued turns that may start
    (_promote). False if the turn had already ended.

    This is on the path of every cancel and every answer's end, so it reads the session's
    in-flight turns once, for both the turn itself and the queue."""
    # Its own transaction (a group of turns ends through turns_finish).
    with transaction.atomic(savepoint=False):
        lock_session_rows([outcome.session_id])
        # No join: loading the answers with the turns was 1 ms of a cancel's ~10 (decision 015).
        ended = _finish_locked(outcome, in_flight_turns([outcome.session_id]))
        if ended is None:
            return False
        emit.on_commit(outcome.session_id, ended.events)
        after_commit(partial(_after_finishes, [ended]))
    return True


@dataclass
class _Ended:
    """A turn ended in a transaction: what to publish and announce once it commits."""

    outcome: TurnOutcome
    turn: Turn
    started: list[Turn]
    events: list[Event]


def _finish_locked(outcome: TurnOutcome, in_flight: Sequence[Turn]) -> _Ended | None:
    """End the turn under its session's lock; `in_flight`: the session's in-flight turns as
    read under it (updated in place as turns end and start). None if it had ended."""
    turn = next((t for t in in_flight if t.pk == outcome.turn_pk), None)
    if turn is not None and turn.cancel_requested_by and outcome.status != TurnStatus.CANCELLED:
        # A cancel committed before this end, which its worker had not heard yet (the
        # answer ended meanwhile, or the worker was lost): the cancel wins, as its answer
        # and its `cancel` event said. The turn ends `cancelled`, with all it streamed.
        outcome = replace(outcome, status=TurnStatus.CANCELLED, error_code="", error_message="")
    if turn is None or not transitions.finish(turn, outcome):
        return None
    started = promote([t for t in in_flight if t.pk != turn.pk])
    return _Ended(outcome, turn, started, [build.turn_end(turn), *(build.turn_start(t) for t in started)])


def _after_finishes(ended: Sequence[_Ended]) -> None:
    """After the commit (and the events' publishing, registered before this)."""
    announce.promoted([t for e in ended for t in e.started])
    announce.ended([e.turn for e in ended])
    live_state.expire_live_contents_sync([(e.outcome.session_id, e.outcome.message_id) for e in ended])


def turns_finish(outcomes: Sequence[TurnOutcome]) -> list[bool | Exception]:
    """End many turns in one transaction (a worker ends the turns that ended meanwhile
    together: worker/turn_loop.py): their sessions locked in one statement, their in-flight
    turns read in one, their events published in one Redis round trip after the commit.
    On PostgreSQL a turn's end cost a lock and a read of its own; under load a worker ends
    tens of turns at a time. If the group fails, each turn ends on its own."""
    if len(outcomes) <= 1:
        return [_one(partial(turn_finish, o)) for o in outcomes]
    try:
        with transaction.atomic():
            session_ids = sorted({o.session_id for o in outcomes})
            lock_session_rows(session_ids)  # in id order: two workers' groups cannot deadlock
            in_flight: dict[str, list[Turn]] = {}
            for turn in in_flight_turns(session_ids):
                in_flight.setdefault(str(turn.session_id), []).append(turn)
            finished = [_finish_locked(o, in_flight.get(o.session_id, [])) for o in outcomes]
            ended = [e for e in finished if e is not None]
            if ended:
                after_commit(partial(_publish_ended, ended))
    except Exception:
        logger.warning("ending a group of turns failed; ending them one by one", exc_info=True)
        return [_one(partial(turn_finish, o)) for o in outcomes]
    return [e is not None for e in finished]


def _publish_ended(ended: Sequence[_Ended]) -> None:
    emit.many_now([(e.outcome.session_id, e.events) for e in ended])
    _after_finishes(ended)


def _one(call: Callable[[], bool]) -> bool | Exception:
    try:
        return call()
    except Exception as exc:
        return exc


def overdue_interrupts(*, older_than_seconds: float) -> list[str]:
    """Bound an interrupt's wait: end the turns that interrupting sends have waited for
    longer than `older_than_seconds` (their workers did not stop them: stuck or slow),
    `cancelled` with what they streamed, which starts the interrupting turns. Returns the
    ended turn ids."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    waiting = Turn.objects.filter(status=TurnStatus.QUEUED, policy=Policy.INTERRUPT, created_at__lt=cutoff)
    ended: list[str] = []
    for session_id in {turn.session_id for turn in waiting}:
        in_flight = in_flight_turns([session_id])
        stuck = {
            other.pk: other
            for turn in in_flight
            if turn.status == TurnStatus.QUEUED and turn.policy == Policy.INTERRUPT and turn.created_at < cutoff
            for other in interrupted_by(turn, in_flight)
        }
        for other in stuck.values():
            if _end_keeping_content(other, TurnStatus.CANCELLED):
                ended.append(other.turn_id)
    return ended


def _end_keeping_content(turn: Turn, status: str, error_code: str = "", error_message: str = "") -> bool:
    """End an active turn without its worker, with what it streamed (the live text)."""
    message_id = (
        MessageNode.objects.filter(pk=turn.assistant_message_id or 0).values_list("node_id", flat=True).first() or ""
    )
    content = live_state.live_content_sync(str(turn.session_id), message_id)
    return turn_finish(
        TurnOutcome(
            turn_pk=turn.pk,
            session_id=str(turn.session_id),
            message_id=message_id,
            status=status,
            parts=content.parts,
            content_seq=content.content_seq,
            error_code=error_code,
            error_message=error_message,
        )
    )


def turn_end_stuck(*, turn_pk: int, by: str) -> bool:
    """An operator ends an active turn that no longer moves (its worker hangs, or its task
    was lost before a worker claimed it): `error` with code `ended_by_operator`, keeping
    what it streamed; a worker still running it is told to stop. False if the turn is not
    active (a queued turn is cancelled instead: it never called the model)."""
    turn = Turn.objects.filter(pk=turn_pk, status=TurnStatus.ACTIVE).first()
    if turn is None or not _end_keeping_content(
        turn, TurnStatus.ERROR, "ended_by_operator", f"ended by an operator ({by})"
    ):
        return False
    live_state.signal_cancel_sync(str(turn.session_id), [turn.pk])
    return True


def turns_fail_lost(*, live_workers: set[str], scope: str = "") -> list[str]:
    """End active turns whose worker (of this deployment: ids starting with `scope`) has
    stopped heartbeating with error `worker_lost`, keeping what they streamed. Returns the
    ended turn ids."""
    lost = (
        Turn.objects.filter(status=TurnStatus.ACTIVE, worker_id__startswith=scope)
        .exclude(worker_id="")
        .exclude(worker_id__in=live_workers)
    )
    ended = []
    for turn in lost:
        if _end_keeping_content(turn, TurnStatus.ERROR, "worker_lost", "the worker running this turn stopped"):
            ended.append(turn.turn_id)
    return ended


def cancel_requested(turn_pks: Sequence[int]) -> list[int]:
    """Which of these turns have a cancel asked (a worker that missed the cancel signal,
    while Redis was away, asks the database)."""
    return list(
        Turn.objects.filter(pk__in=list(turn_pks), status=TurnStatus.ACTIVE)
        .exclude(cancel_requested_by="")
        .values_list("pk", flat=True)
    )


def turns_gone(turn_pks: Sequence[int]) -> list[int]:
    """Which of these turns no longer exist (their session was deleted: a worker that
    missed the signal, while Redis was away, asks the database)."""
    found = set(Turn.objects.filter(pk__in=list(turn_pks)).values_list("pk", flat=True))
    return [pk for pk in turn_pks if pk not in found]


def unclaimed_turns() -> list[int]:
    """Active turns no worker has claimed (their task may have been lost with Redis)."""
    return list(Turn.objects.filter(status=TurnStatus.ACTIVE, worker_id="").values_list("pk", flat=True))
