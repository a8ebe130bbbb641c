"""Which queued turns start when the turns ahead of them end: the queue's rules in one
place, for every end that frees a place (a worker's end of a turn: running.py; a cancel
that ends turns no worker had picked up yet: cancellation/services.py). The caller holds
the session's lock and publishes the started turns' `turn.start`."""

from __future__ import annotations

from collections.abc import Sequence

from sessions_app.conf import app_settings
from sessions_app.models import Policy, Turn, TurnStatus
from sessions_app.turns import transitions


def promote(in_flight: Sequence[Turn]) -> list[Turn]:
    """The queued turns that start now that a turn has ended; `in_flight`: the session's
    other in-flight turns in creation order, read under its lock.

    - An interrupting turn starts once none of the turns it interrupted is still active:
      the sender's older active turns with a cancel asked.
    - Then the queue, first in, first out, while its oldest turn may start: a turn queued
      by the `queue` policy when nothing is active; a turn queued by the session's cap
      (MAX_ACTIVE_TURNS, docs/agents.md) while the active turns stay within it.
    - Sub-agent turns queued with their parent turn start with it (docs/agents.md)."""
    queued = {t.pk for t in in_flight if t.status == TurnStatus.QUEUED}
    started = [
        turn
        for turn in in_flight
        if turn.status == TurnStatus.QUEUED
        and turn.policy == Policy.INTERRUPT
        and turn.parent_turn_id not in queued
        and not interrupted_by(turn, in_flight)
        and transitions.activate(turn)
    ]
    started.extend(_sub_agents_of(started, in_flight))
    active = sum(t.status == TurnStatus.ACTIVE for t in in_flight)
    cap = int(app_settings.MAX_ACTIVE_TURNS)
    for turn in in_flight:
        if turn.status != TurnStatus.QUEUED or turn.policy == Policy.INTERRUPT or turn.parent_turn_id in queued:
            continue
        group = [turn, *(t for t in in_flight if t.parent_turn_id == turn.pk and t.status == TurnStatus.QUEUED)]
        fits = active == 0 if turn.policy == Policy.QUEUE else cap <= 0 or active + len(group) <= cap
        if not fits:
            break
        if transitions.activate(turn):
            with_sub_agents = [turn, *_sub_agents_of([turn], in_flight)]
            started.extend(with_sub_agents)
            active += len(with_sub_agents)
    return started


def _sub_agents_of(parents: Sequence[Turn], in_flight: Sequence[Turn]) -> list[Turn]:
    """Start the queued sub-agent turns of turns that just started."""
    pks = {parent.pk for parent in parents}
    return [
        t for t in in_flight if t.parent_turn_id in pks and t.status == TurnStatus.QUEUED and transitions.activate(t)
    ]


def interrupted_by(turn: Turn, in_flight: Sequence[Turn]) -> list[Turn]:
    """The turns an interrupting `turn` still waits for."""
    return [
        other
        for other in in_flight
        if other.pk < turn.pk
        and other.status == TurnStatus.ACTIVE
        and other.client_id == turn.client_id
        and other.cancel_requested_by
    ]
