"""The worker's side of a turn's life: claiming the turns it was handed, ending them with
their outcome (and starting the next queued turn), and ending the turns of workers that
stopped heartbeating. Each runs its transitions (transitions.py) under the session's lock."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from django.db import transaction

from sessions_app.events import build, emit
from sessions_app.infra import live_state
from sessions_app.models import Turn, TurnStatus
from sessions_app.tree import context_path
from sessions_app.turns import announce, transitions
from sessions_app.turns._queries import ancestry, in_flight_turns
from sessions_app.turns.locking import in_one_transaction, lock_sessions
from sessions_app.turns.types import ClaimedTurn, TurnOutcome


def turns_claim(*, turn_pks: Sequence[int], worker_id: str) -> list[ClaimedTurn | None]:
    """Claim many turns in one transaction (a worker claims the turns it was handed
    meanwhile together: worker/turn_loop.py). One outcome per pk, in order: None for a turn
    claimed before, ended, or named twice (only its first request gets it), so a
    redelivered task never runs a turn twice."""
    with transaction.atomic():  # on SQLite: queued on the write lock with the others (decision 011)
        rows = transitions.claim(turn_pks, worker_id)
    claimed: dict[int, ClaimedTurn] = {}
    if rows:
        # The turns' answers and the branches above them (their user messages included):
        # their contexts, in one read.
        nodes = ancestry(row.assistant_message_id for row in rows if row.assistant_message_id)
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
    """End an active turn with its outcome, then start the next queued turn if the session
    has no active turn left. False if the turn had already ended.

    This is on the path of every cancel and every answer's end, so it reads the session's
    in-flight turns once, for both the turn itself and the queue."""
    # No savepoint of its own: grouped finishes give each one (in_one_transaction).
    with transaction.atomic(savepoint=False):
        lock_sessions([outcome.session_id])
        # No join: loading the answers with the turns was 1 ms of a cancel's ~10 (decision 015).
        in_flight = in_flight_turns([outcome.session_id])
        turn = next((t for t in in_flight if t.pk == outcome.turn_pk), None)
        if turn is None or not transitions.finish(turn, outcome):
            return False
        emitted = [build.turn_end(turn)]
        promoted = _promote_queue([t for t in in_flight if t.pk != turn.pk])
        if promoted is not None:
            emitted.append(build.turn_start(promoted))
        emit.on_commit(outcome.session_id, emitted)
        transaction.on_commit(partial(_after_finish, turn, promoted, outcome))
    return True


def _after_finish(turn: Turn, promoted: Turn | None, outcome: TurnOutcome) -> None:
    """After the commit (and the events' publishing, registered before this)."""
    if promoted is not None:
        announce.run([promoted.pk])
        announce.started([promoted])
    announce.ended([turn])
    live_state.expire_live_content_sync(outcome.session_id, outcome.message_id)


def turns_finish(outcomes: Sequence[TurnOutcome]) -> list[bool | Exception]:
    """Many `turn_finish` calls in one transaction (a worker ends the turns that ended
    meanwhile together: worker/turn_loop.py)."""
    return in_one_transaction(
        [partial(turn_finish, outcome) for outcome in outcomes],
        lock_order=[outcome.session_id for outcome in outcomes],
    )


def _promote_queue(in_flight: Sequence[Turn]) -> Turn | None:
    """Start the oldest queued turn when nothing is active (first in, first out); returns
    it. `in_flight`: the session's other in-flight turns in creation order, read under its
    lock."""
    if any(t.status == TurnStatus.ACTIVE for t in in_flight):
        return None
    for turn in in_flight:
        if turn.status == TurnStatus.QUEUED and transitions.activate(turn):
            return turn
    return None


def turns_fail_lost(*, live_workers: set[str], scope: str = "") -> list[str]:
    """End active turns whose worker (of this deployment: ids starting with `scope`) has
    stopped heartbeating with error `worker_lost`, keeping what they streamed. Returns the
    ended turn ids."""
    lost = (
        Turn.objects.filter(status=TurnStatus.ACTIVE, worker_id__startswith=scope)
        .exclude(worker_id="")
        .exclude(worker_id__in=live_workers)
        .select_related("assistant_message")
    )
    ended = []
    for turn in lost:
        message_id = turn.assistant_message.node_id if turn.assistant_message else ""
        content = live_state.live_content_sync(str(turn.session_id), message_id)
        outcome = TurnOutcome(
            turn_pk=turn.pk,
            session_id=str(turn.session_id),
            message_id=message_id,
            status=TurnStatus.ERROR,
            parts=content.parts,
            content_seq=content.content_seq,
            error_code="worker_lost",
            error_message="the worker running this turn stopped",
        )
        if turn_finish(outcome):
            ended.append(turn.turn_id)
    return ended
