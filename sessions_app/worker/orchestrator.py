"""An orchestrator's turn (docs/agents.md, "Orchestrators").

A user's message to a session with an orchestrating agent starts one parent turn and, with
it, a turn for each of its sub-agents in the session (the send creates them together:
turns/sending.py), whose answers stream at once as siblings under the message. The worker
running the parent turn waits here until every sub-agent turn working for it has ended
(complete, cancelled or error), then its model answers the message with their answers before
it: the final answer, which follows theirs in the tree.

The wait holds no connection and polls nothing while sub-agents stream: the sub-agent turns
of a message are handed to the same task as their parent, so this worker process ends them
itself, and each end (the `turn_ended` signal, after its commit) wakes the wait, which then
reads the database, the truth. Ends made elsewhere (a sub-agent turn site code attached
later and another process ran, a cancel that ended one before any worker claimed it) are
seen by a read every RECHECK_SECONDS. The wait runs in the turn's consume task, so a cancel
of the parent turn ends it at once (and the cancel service cancelled the sub-agent turns
with it: cancellation/services.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from sessions_app import signals
from sessions_app.agents.config import agent_name
from sessions_app.infra.db_threads import db
from sessions_app.models import IN_FLIGHT, Turn
from sessions_app.turns.types import ClaimedTurn

RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class SubAgentResult:
    """How a sub-agent's turn ended, and what it answered."""

    turn_id: str
    client_id: str
    status: str
    text: str
    error: str = ""

    @property
    def name(self) -> str:
        return agent_name(self.client_id) or self.client_id


def results_text(results: list[SubAgentResult]) -> str:
    """What the orchestrator's model is told after the user's message: each sub-agent's
    answer under its name, oldest turn first, with how it ended when it did not complete."""
    blocks = []
    for result in results:
        note = {"cancelled": " (stopped before it finished)", "error": f" (failed: {result.error})"}.get(
            result.status, ""
        )
        blocks.append(f"[{result.name}]{note}\n{result.text.strip() or '(no answer)'}")
    answers = "\n\n".join(blocks) if blocks else "(no sub-agent answered)"
    return f"\n\nYour sub-agents answered:\n\n{answers}\n\nWrite the final answer."


def with_results(context: list[dict[str, Any]], results: list[SubAgentResult]) -> list[dict[str, Any]]:
    """The parent turn's context with the sub-agents' answers appended to its last message
    (the user's), so that every vendor sees one user message at the end. With no sub-agent
    turn (the owner removed every sub-agent from the session) the orchestrator answers the
    message alone: its context as it is."""
    if not results:
        return context
    if not context:
        return [{"role": "user", "parts": [{"type": "text", "text": results_text(results)}]}]
    *before, last = context
    parts = [*last.get("parts", []), {"type": "text", "text": results_text(results)}]
    return [*before, {**last, "parts": parts}]


def sub_agent_turns(parent_pk: int) -> list[SubAgentResult]:
    """The sub-agent turns working for a turn, oldest first, with their answers so far."""
    turns = Turn.objects.filter(parent_turn_id=parent_pk).select_related("assistant_message").order_by("id")
    return [
        SubAgentResult(
            turn_id=turn.turn_id,
            client_id=turn.client_id,
            status=turn.status,
            text=turn.assistant_message.text if turn.assistant_message else "",
            error=turn.error_message or turn.error_code,
        )
        for turn in turns
    ]


async def sub_agent_results(turn: ClaimedTurn) -> list[SubAgentResult]:
    """Wait until every sub-agent turn of `turn` has ended; their results."""
    woken = asyncio.Event()
    waiter = (asyncio.get_running_loop(), woken)
    with _lock:  # registered before the first read: an end between the two is not missed
        _waiters.setdefault(turn.pk, []).append(waiter)
    try:
        while True:
            woken.clear()
            results: list[SubAgentResult] = await db(sub_agent_turns)(turn.pk)
            if all(r.status not in IN_FLIGHT for r in results):
                return results
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), RECHECK_SECONDS)
    finally:
        with _lock:
            _waiters[turn.pk].remove(waiter)
            if not _waiters[turn.pk]:
                del _waiters[turn.pk]


# Waiting parent turns of this process: parent pk -> (its loop, the event that wakes it).
_waiters: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
_lock = threading.Lock()


def _wake_parent(sender: Any, turn: Turn, **_kwargs: Any) -> None:
    """A turn ended in this process (on the thread that committed it): wake the parent
    turn waiting for it, if any."""
    if turn.parent_turn_id is None:
        return
    with _lock:
        waiting = list(_waiters.get(turn.parent_turn_id, ()))
    for loop, woken in waiting:
        with contextlib.suppress(RuntimeError):  # its loop has closed: nothing waits any more
            loop.call_soon_threadsafe(woken.set)


signals.turn_ended.connect(_wake_parent, dispatch_uid="sessions_app.worker.orchestrator.wake_parent")
