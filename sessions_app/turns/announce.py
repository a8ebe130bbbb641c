"""What follows a committed change of turns: handing started turns to the workers, and the
site's signals (sessions_app/signals.py).

The turns package does not know who runs turns: it sends `turns_ready`, which the worker
side connects to its Celery task (sessions_app/worker/tasks.py, connected when the app is
ready). A site could run turns elsewhere by connecting its own receiver instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.dispatch import Signal

from sessions_app import signals
from sessions_app.infra.db_threads import after_commit
from sessions_app.models import MessageNode, Turn

# Sent after commit with the pks of turns that became active and wait for a worker. Sent
# after their `turn.start` event was published: no delta of theirs may come first.
turns_ready = Signal()  # kwargs: turn_pks


def run(turn_pks: Sequence[int]) -> None:
    """Hand active turns to the workers now (the caller has committed them)."""
    if turn_pks:
        turns_ready.send(sender=Turn, turn_pks=list(turn_pks))


def started(turns: Sequence[Turn]) -> None:
    for turn in turns:
        signals.turn_started.send(sender=Turn, turn=turn)


def promoted(turns: Sequence[Turn]) -> None:
    """Queued turns that started (turns/promotion.py), once their `turn.start` is published:
    handed to the workers, then the site's signal."""
    run([turn.pk for turn in turns])
    started(turns)


def ended(turns: Sequence[Turn]) -> None:
    for turn in turns:
        signals.turn_ended.send(sender=Turn, turn=turn, reason=turn.status)


def created(nodes: Sequence[MessageNode]) -> None:
    for node in nodes:
        signals.message_created.send(sender=MessageNode, node=node)


def ended_on_commit(turns: Sequence[Turn]) -> None:
    if turns:
        ended_turns = list(turns)
        after_commit(lambda: ended(ended_turns))
