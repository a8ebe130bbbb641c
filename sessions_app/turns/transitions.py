"""The turn state machine: every change of a turn's state is a function here, and each is
one guarded `UPDATE … WHERE status = …` whose row count says whether it happened (as
plain statements: a cancel, an end and an interrupt's start make several each).

    queued ──activate──▶ active ──claim──▶ active, claimed by a worker ──finish──▶ complete
       │                   │                       │                              cancelled
       └──end_unstarted────┴──▶ cancelled          └──request_cancel (a flag)     error

The session's lock (locking.py) orders the transitions of one session; the guards make each
transition safe on its own too: two workers, two cancels, or a cancel racing a finish can
never both win, whatever the caller holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from sessions_app.infra.sql import update
from sessions_app.models import IN_FLIGHT, MessageNode, NodeStatus, Turn, TurnStatus
from sessions_app.turns._queries import ClaimRow, claim_turns
from sessions_app.turns.types import TurnOutcome

ENDED = (TurnStatus.COMPLETE, TurnStatus.CANCELLED, TurnStatus.ERROR)


def activate(turn: Turn) -> bool:
    """A queued turn becomes active (its answer starts streaming)."""
    now = timezone.now()
    if not update(Turn, {"status": TurnStatus.ACTIVE, "started_at": now}, {"id": turn.pk, "status": TurnStatus.QUEUED}):
        return False
    update(MessageNode, {"status": NodeStatus.STREAMING}, {"id": turn.assistant_message_id or 0})
    turn.status, turn.started_at = TurnStatus.ACTIVE, now
    return True


def claim(turn_pks: Sequence[int], worker_id: str) -> list[ClaimRow]:
    """Those of the turns that are active and claimed by no worker become `worker_id`'s; the
    ones it got, oldest first (one statement: _queries.claim_turns)."""
    return claim_turns(turn_pks, worker_id)


def end_unstarted(turn: Turn, *, by: str) -> bool:
    """A turn no worker has claimed (queued, or active and not yet picked up) ends
    `cancelled` without ever calling the model."""
    now = timezone.now()
    ended = update(
        Turn,
        {"status": TurnStatus.CANCELLED, "cancel_requested_by": by, "ended_at": now},
        {"id": turn.pk, "status": list(IN_FLIGHT), "worker_id": ""},
    )
    if not ended:
        return False
    update(MessageNode, {"status": NodeStatus.CANCELLED}, {"id": turn.assistant_message_id or 0})
    turn.status, turn.cancel_requested_by, turn.ended_at = TurnStatus.CANCELLED, by, now
    return True


def request_cancel(turn: Turn, *, by: str) -> bool:
    """Flag an active turn for cancelling (its worker stops it and ends it `cancelled`);
    False if it has ended or a cancel was asked already."""
    asking = {"id": turn.pk, "status": TurnStatus.ACTIVE, "cancel_requested_by": ""}
    flagged = update(Turn, {"cancel_requested_by": by}, asking)
    if flagged:
        turn.cancel_requested_by = by
    return bool(flagged)


def finish(turn: Turn, outcome: TurnOutcome) -> bool:
    """An active turn ends with its reason, and its answer with the final parts."""
    if outcome.status not in ENDED:
        raise ValueError(f"a turn cannot end as {outcome.status!r}")
    now = timezone.now()
    changes = {
        "status": outcome.status,
        "ended_at": now,
        "error_code": outcome.error_code,
        "error_message": outcome.error_message,
        "usage": outcome.usage,
        "finish_reason": outcome.finish_reason,
    }
    if not update(Turn, changes, {"id": turn.pk, "status": TurnStatus.ACTIVE}):
        return False
    answer = {"parts": outcome.parts, "content_seq": outcome.content_seq, "status": outcome.status}
    update(MessageNode, answer, {"id": turn.assistant_message_id or 0})
    turn.status, turn.ended_at = outcome.status, now
    turn.error_code, turn.error_message = outcome.error_code, outcome.error_message
    turn.usage, turn.finish_reason = outcome.usage, outcome.finish_reason
    return True
