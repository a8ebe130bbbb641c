"""The Python client's session state (chat_client/state.py), applying the events a device
receives in `seq` order (docs/protocol.md, "Applying events")."""

from __future__ import annotations

from typing import Any

from chat_client.state import SessionState


def answer_node(status: str) -> dict[str, Any]:
    return {"id": "a-1", "role": "assistant", "parts": [], "turnId": "t-2", "status": status, "contentSeq": 0}


def applied(*events: dict[str, Any]) -> SessionState:
    state = SessionState()
    for seq, event in enumerate(events, start=1):
        state._apply_event({"seq": seq, **event}, 0.0)
    return state


def test_a_queued_turns_answer_streams_once_the_turn_starts_and_settles_at_its_end():
    queued: list[dict[str, Any]] = [
        {"type": "message", "message": answer_node("queued")},
        {"type": "turn.queued", "turnId": "t-2", "clientId": "demo", "position": 1},
    ]
    started = [*queued, {"type": "turn.start", "turnId": "t-2", "clientId": "demo"}]
    streamed = [*started, {"type": "delta", "turnId": "t-2", "messageId": "a-1", "text": "hi"}]
    ended = [*streamed, {"type": "turn.end", "turnId": "t-2", "clientId": "demo", "reason": "complete"}]

    assert applied(*queued).messages["a-1"]["status"] == "queued"
    assert applied(*started).messages["a-1"]["status"] == "streaming"
    state = applied(*ended)
    assert (state.messages["a-1"]["status"], state.text_of("a-1"), state.turns["t-2"]["status"]) == (
        "complete",
        "hi",
        "complete",
    )


def snapshot(*turns: dict[str, Any]) -> SessionState:
    state = SessionState()
    state._apply_snapshot({"type": "snapshot", "lastSeq": 10, "messages": [], "turns": list(turns)})
    return state


def test_a_turn_end_is_the_event_applied_or_made_from_the_snapshots_turn():
    ended = {"turnId": "t-1", "clientId": "demo", "status": "cancelled", "reason": "cancelled", "error": None}
    state = snapshot(
        {**ended, "cancelledBy": "demo2", "parentTurnId": None},
        {"turnId": "t-2", "clientId": "demo", "status": "active"},
    )

    assert state.turn_end("t-1") == {
        "type": "turn.end",
        "turnId": "t-1",
        "clientId": "demo",
        "reason": "cancelled",
        "cancelledBy": "demo2",
    }
    assert (state.turn_ended("t-2"), state.turn_end("t-2"), state.turn_end("t-3")) == (False, None, None)
    state._apply_event({"seq": 11, "type": "turn.end", "turnId": "t-2", "clientId": "demo", "reason": "complete"}, 0.0)
    assert state.turn_ended("t-2") and state.turn_end("t-2") == state.events[-1]


def test_a_turn_start_published_after_the_turns_end_leaves_it_ended():
    # A worker starts a queued turn as a web process cancels it: each publishes as it
    # commits, so the `turn.start` can come second. The turn stays ended, no one generating.
    state = applied(
        {"type": "message", "message": answer_node("queued")},
        {"type": "turn.queued", "turnId": "t-2", "clientId": "demo", "position": 1},
        {"type": "turn.end", "turnId": "t-2", "clientId": "demo", "reason": "cancelled"},
        {"type": "turn.start", "turnId": "t-2", "clientId": "demo"},
    )
    assert state.active_turns == {}
    assert state.turns["t-2"]["status"] == "cancelled"
    assert state.messages["a-1"]["status"] == "cancelled"
