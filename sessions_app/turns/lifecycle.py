"""Turns: cancelling and the turn state machine (`queued` -> `active` ->
complete/cancelled/error); sending is in sending.py. Every transition is a conditional
update under the session's row lock, so two workers or two cancels can never both win."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from sessions_app import signals
from sessions_app.cancellation.services import CancelOutcome, cancel_locked
from sessions_app.errors import NotFound
from sessions_app.events import build as events
from sessions_app.infra import live_state
from sessions_app.models import (
    ChatSession,
    MessageNode,
    NodeStatus,
    Turn,
    TurnStatus,
)
from sessions_app.schemas import CancelFilter
from sessions_app.sessions.services import require_member
from sessions_app.tree import context_path
from sessions_app.turns._queries import ancestry, claim_turns, in_flight_turns

logger = logging.getLogger(__name__)

T = TypeVar("T")


def dispatch_turns(turn_pks: Sequence[int]) -> None:
    """Hand turns to the workers: one task for them all (a Celery publish costs about half
    a millisecond of CPU; a burst of sends pays it once per set, not per turn)."""
    from sessions_app.worker.tasks import run_turns

    if turn_pks:
        run_turns.delay(list(turn_pks))


def _announce(fn: Callable[[], None]) -> None:
    transaction.on_commit(fn)


def in_one_transaction(calls: Sequence[Callable[[], T]], lock_order: Sequence[str]) -> list[T | Exception]:
    """Run calls, each of which opens its own `transaction.atomic()`, in one transaction.
    Outcomes (a result or the error raised) come back in the order of `calls`.

    No savepoint per call: the calls (turn ends) fail only when the database does, so if
    one fails, the whole group rolls back and each call runs again on its own.

    `lock_order`: the session each call locks. Calls run sorted by it, so two processes'
    groups take their session locks in the same order and can never deadlock each other.
    A lone call runs as it is (its own transaction)."""
    if len(calls) == 1:
        return [_outcome(calls[0])]
    order = sorted(range(len(calls)), key=lambda i: lock_order[i])
    outcomes: dict[int, T | Exception] = {}
    try:
        with transaction.atomic():
            for index in order:
                outcomes[index] = calls[index]()
    except Exception:
        logger.warning("a call of a group failed; running the group's calls one by one", exc_info=True)
        return [_outcome(call) for call in calls]
    return [outcomes[index] for index in range(len(calls))]


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as exc:
        return exc


def lock_sessions(session_ids: Iterable[Any]) -> dict[Any, ChatSession]:
    """Serialise the sessions' state changes: their row locks where the database has row
    locks, taken in one query in pk order (two processes locking overlapping sets cannot
    deadlock); on SQLite the IMMEDIATE transaction already holds the database's write lock.
    Returns the sessions as read under the locks; empty where there are no row locks."""
    if not connection.features.has_select_for_update:
        return {}
    return {s.pk: s for s in ChatSession.objects.select_for_update().filter(pk__in=list(session_ids)).order_by("pk")}


def _announce_ended(turns: Sequence[Turn]) -> None:
    for turn in turns:
        signals.turn_ended.send(sender=Turn, turn=turn, reason=turn.status)


def turns_cancel(
    *,
    session_id: Any,
    user: AbstractBaseUser,
    flt: CancelFilter,
    as_admin: bool = False,
) -> CancelOutcome:
    """Cancel the turns `flt` matches that the authoriser allows; report the rest."""
    session = (
        ChatSession.objects.filter(pk=session_id).first()
        if as_admin
        else require_member(session_id=session_id, user=user)
    )
    if session is None:
        raise NotFound("no such session")
    with transaction.atomic():
        session = lock_sessions([session.pk]).get(session.pk, session)
        outcome = cancel_locked(session=session, requester=user, flt=flt, bypass_authoriser=as_admin)
        events.emit_on_commit(str(session.pk), outcome.events)
        ended = list(outcome.ended)
        _announce(lambda: _announce_ended(ended))
    return outcome


# --- the worker's side of the state machine ----------------------------------------------


@dataclass
class ClaimedTurn:
    """What a worker needs to run a turn, loaded once when it claims it."""

    pk: int
    session_id: str
    turn_id: str
    client_id: str
    model: str
    model_options: dict[str, Any]
    assistant_message_id: str
    cancel_requested: bool
    context: list[dict[str, Any]] = field(default_factory=list)


def turn_claim(*, turn_pk: int, worker_id: str) -> ClaimedTurn | None:
    """Claim an active turn for this worker; None if it was claimed before or has ended
    (a redelivered task never runs a turn twice)."""
    return turns_claim(turn_pks=[turn_pk], worker_id=worker_id)[0]


def turns_claim(*, turn_pks: Sequence[int], worker_id: str) -> list[ClaimedTurn | None]:
    """Claim many turns in one transaction (a worker claims the turns it was handed
    meanwhile together: engine.py). One outcome per pk, in order: None for a turn claimed
    before, ended, or named twice (only its first request gets it)."""
    claimed = _claim(turn_pks, worker_id)
    return [claimed.pop(pk, None) for pk in turn_pks]


def _claim(turn_pks: Sequence[int], worker_id: str) -> dict[int, ClaimedTurn]:
    with transaction.atomic():  # on SQLite: queued on the write lock with the others (decision 011)
        turns = claim_turns(turn_pks, worker_id)
    if not turns:
        return {}
    # The turns' answers and the branches above them (their user messages included): their
    # contexts, in one read.
    nodes = ancestry(turn.assistant_message_id for turn in turns if turn.assistant_message_id)
    claimed = {}
    for turn in turns:
        answer = nodes[turn.assistant_message_id or 0]
        claimed[turn.pk] = ClaimedTurn(
            pk=turn.pk,
            session_id=str(turn.session_id),
            turn_id=turn.turn_id,
            client_id=turn.client_id,
            model=turn.model,
            model_options=dict(turn.model_options),
            assistant_message_id=answer.node_id,
            cancel_requested=bool(turn.cancel_requested_by),
            context=[{"role": n.role, "parts": n.parts} for n in context_path(turn.user_message_id or 0, nodes)],
        )
    return claimed


def turn_finish(
    *,
    turn_pk: int,
    status: str,
    parts: list[dict[str, Any]],
    content_seq: int,
    error_code: str = "",
    error_message: str = "",
    usage: dict[str, Any] | None = None,
    finish_reason: str = "",
    session_id: Any = None,
    message_id: str | None = None,
) -> bool:
    """End an active turn with its final answer, then start the next queued turn if the
    session has no active turn left. False if the turn had already ended. `session_id`:
    the turn's session, and `message_id` its answer's node id, when the caller knows them
    (the worker does; they save queries on the path of every cancel).

    This is on the path of every cancel and every answer's end, so it reads the session's
    in-flight turns once, for both the turn itself and the queue."""
    if session_id is None:
        session_id = Turn.objects.filter(pk=turn_pk).values_list("session_id", flat=True).first()
        if session_id is None:
            raise Turn.DoesNotExist(f"no turn {turn_pk}")
    # No savepoint of its own: grouped finishes give each one (in_one_transaction).
    with transaction.atomic(savepoint=False):
        lock_sessions([session_id])
        # No join: loading the answers with the turns was 1 ms of a cancel's ~10 (decision 015).
        in_flight = in_flight_turns([session_id])
        turn = next((t for t in in_flight if t.pk == turn_pk and t.status == TurnStatus.ACTIVE), None)
        if turn is None:
            return False
        now = timezone.now()
        Turn.objects.filter(pk=turn_pk, status=TurnStatus.ACTIVE).update(
            status=status,
            ended_at=now,
            error_code=error_code,
            error_message=error_message,
            usage=usage or {},
            finish_reason=finish_reason,
        )
        turn.status, turn.ended_at, turn.error_code, turn.error_message = status, now, error_code, error_message
        turn.usage, turn.finish_reason = usage or {}, finish_reason
        MessageNode.objects.filter(pk=turn.assistant_message_id or 0).update(
            parts=parts,
            content_seq=content_seq,
            status=status,
        )
        promoted = _promote_queue([t for t in in_flight if t.pk != turn_pk])
        emitted = [events.turn_end(turn)]
        if promoted:
            emitted.append(events.turn_start(promoted))
        events.emit_on_commit(str(session_id), emitted)
        if promoted:
            # After its `turn.start` is published: no delta of it may come first.
            _announce(lambda: dispatch_turns([promoted.pk]))
            _announce(lambda: _announce_started(promoted))
        _announce(lambda: _announce_ended([turn]))
        if message_id is None:
            message_id = (
                MessageNode.objects.filter(pk=turn.assistant_message_id or 0).values_list("node_id", flat=True).first()
            )
        if message_id:
            _announce(partial(live_state.expire_live_content_sync, str(session_id), message_id))
    return True


def turns_finish(outcomes: Sequence[dict[str, Any]]) -> list[bool | Exception]:
    """Many `turn_finish` calls (keyword arguments each) in one transaction (a worker ends
    the turns that ended meanwhile together: engine.py)."""
    return in_one_transaction(
        [partial(turn_finish, **outcome) for outcome in outcomes],
        lock_order=[str(outcome.get("session_id", "")) for outcome in outcomes],
    )


def _announce_started(turn: Turn) -> None:
    signals.turn_started.send(sender=Turn, turn=turn)


def _promote_queue(in_flight: Sequence[Turn]) -> Turn | None:
    """Start the oldest queued turn when nothing is active (first in, first out); returns
    it. `in_flight`: the session's in-flight turns in creation order, read under its lock."""
    if not in_flight or any(t.status == TurnStatus.ACTIVE for t in in_flight):
        return None
    turn = in_flight[0]
    Turn.objects.filter(pk=turn.pk).update(status=TurnStatus.ACTIVE, started_at=timezone.now())
    MessageNode.objects.filter(pk=turn.assistant_message_id or 0).update(status=NodeStatus.STREAMING)
    turn.status = TurnStatus.ACTIVE
    return turn


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
        if turn_finish(
            turn_pk=turn.pk,
            session_id=turn.session_id,
            message_id=message_id,
            status=TurnStatus.ERROR,
            parts=content.parts,
            content_seq=content.content_seq,
            error_code="worker_lost",
            error_message="the worker running this turn stopped",
        ):
            ended.append(turn.turn_id)
    return ended
