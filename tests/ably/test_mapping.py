"""The mapping of our events to AI Transport messages (sessions_app/ably/mapping.py), event
by event, for what the demo model never does: reasoning, tool calls and results, edits,
regenerations, agents' turns, errors, queued turns cancelled, lost deltas. Pure: no I/O."""

from __future__ import annotations

import itertools
from typing import Any

from sessions_app.ably.mapping import Close, Publish, Republish, SessionTranslator, Stream

SESSION = "s1"


class Events:
    """Our events, numbered as the server numbers them."""

    def __init__(self) -> None:
        self.seq = itertools.count(1)

    def __call__(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"seq": next(self.seq), "type": type_, "at": 0, **fields}

    def node(self, id_: str, role: str, client_id: str, turn_id: str, **extra: Any) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": id_,
            "parent": None,
            "role": role,
            "parts": [],
            "turnId": turn_id,
            "clientId": client_id,
        }
        node.update({"forkOf": None, "status": "streaming", "contentSeq": 0, "createdAt": 0, **extra})
        return self("message", message=node)


def sent(ev: Events, translator: SessionTranslator, *, turn: str = "t1", user: str = "alice", **answer: Any) -> None:
    """A send: its user message, its answer, turn.start."""
    user_node = ev.node("u1", "user", user, turn, parts=[{"type": "text", "text": "hi"}], status="complete")
    translator.apply(user_node)
    translator.apply(ev.node("a1", "assistant", answer.pop("client_id", user), turn, parent="u1", **answer))
    translator.apply(ev("turn.start", turnId=turn, clientId=answer.get("owner", user)))


def publish(op: Any) -> Publish:
    assert isinstance(op, Publish), op
    return op


def kinds(ops: list[Any]) -> list[Any]:
    """Each operation in short: ('publish', [(name, codec kind), ...]) or ('close', status)."""
    out: list[Any] = []
    for op in ops:
        if isinstance(op, Publish):
            out.append(("publish", [(m.name, (m.codec or {}).get("kind")) for m in op.messages]))
        elif isinstance(op, Close):
            out.append(("close", op.stream.index, op.status))
        else:
            out.append(("rewrite",))
    return out


def test_reasoning_text_and_tools_become_parts_in_the_workers_order() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    sent(ev, translator)
    steps = [
        ev("delta", turnId="t1", messageId="a1", text="thinking", part="reasoning"),
        ev("delta", turnId="t1", messageId="a1", text="Let me count. "),
        ev(
            "tool.call",
            turnId="t1",
            messageId="a1",
            part={"type": "tool-call", "id": "c1", "name": "count", "arguments": {"text": "a b"}},
        ),
        ev(
            "tool.result",
            turnId="t1",
            messageId="a1",
            part={"type": "tool-result", "id": "c1", "name": "count", "result": 2, "isError": False},
        ),
        ev("delta", turnId="t1", messageId="a1", text="Two."),
        ev("turn.end", turnId="t1", clientId="alice", reason="complete"),
    ]
    ops = [translator.apply(step) for step in steps]
    assert [kinds(o) for o in ops] == [
        [("publish", [("ai-output", "start"), ("ai-output", "start-step"), ("ai-output", "reasoning")])],
        [("close", 0, "complete"), ("publish", [("ai-output", "text")])],
        [("close", 1, "complete"), ("publish", [("ai-output", "tool-input")])],
        [("publish", [("ai-output", "tool-output-available")])],
        [("publish", [("ai-output", "text")])],
        [
            ("close", 4, "complete"),
            ("publish", [("ai-output", "finish-step"), ("ai-output", "finish"), ("ai-run-end", None)]),
        ],
    ]
    call = publish(ops[2][1]).messages[0]
    assert call.codec == {"kind": "tool-input", "toolCallId": "c1", "toolName": "count"}
    assert call.data == {"text": "a b"} and call.transport["stream"] == "false"
    assert publish(ops[3][0]).messages[0].data == {"output": 2}
    reasoning = publish(ops[0][0]).opens[2]
    assert (reasoning.kind, reasoning.pending, reasoning.transport["stream-id"]) == ("reasoning", "thinking", "a1:0")
    assert publish(ops[1][1]).opens[0].pending == "Let me count. "
    assert translator.turns == {}


def test_edits_regenerations_and_agents_are_in_the_headers() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    edited = ev.node("u2", "user", "alice", "t2", parent="a0", forkOf="u1", parts=[{"type": "text", "text": "better"}])
    [inputs] = translator.apply(edited)
    assert isinstance(inputs, Publish)
    assert inputs.messages[0].transport["fork-of"] == "u1" and inputs.messages[0].transport["parent"] == "a0"
    assert inputs.messages[0].client_id == "alice"
    # An agent answers it, regenerating an earlier answer: the run is the agent's.
    translator.apply(ev.node("a2", "assistant", "agent:critic", "t2", parent="u2", forkOf="a1"))
    [start] = translator.apply(ev("turn.start", turnId="t2", clientId="agent:critic", parentTurnId="t1"))
    assert isinstance(start, Publish)
    headers = start.messages[0].transport
    assert headers["run-client-id"] == "agent:critic"
    assert headers["input-client-id"] == "alice" and headers["input-codec-message-id"] == "u2"
    assert headers["fork-of"] == "u1" and headers["msg-regenerate"] == "a1"
    assert headers["chat-parent-turn-id"] == "t1"


def test_an_error_ends_the_answer_with_an_error_output_and_ably_style_codes() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    sent(ev, translator)
    error = {"code": "provider_timeout", "message": "the model went silent"}
    ops = translator.apply(ev("turn.end", turnId="t1", clientId="alice", reason="error", error=error))
    assert kinds(ops) == [
        ("publish", [("ai-output", "start"), ("ai-output", "start-step"), ("ai-output", "error"), ("ai-run-end", None)])
    ]
    end = publish(ops[0]).messages[-1].transport
    assert end["run-reason"] == "error"
    assert (end["error-code"], end["error-message"], end["chat-error-code"]) == (
        "50401",
        "the model went silent",
        "provider_timeout",
    )
    assert publish(ops[0]).messages[2].data == "the model went silent"


def test_a_queued_turn_cancelled_before_it_started_still_opens_and_ends_its_run() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    translator.apply(ev.node("u1", "user", "bob", "t9", parts=[{"type": "text", "text": "later"}]))
    translator.apply(ev.node("a9", "assistant", "bob", "t9", parent="u1", status="queued"))
    assert translator.apply(ev("turn.queued", turnId="t9", clientId="bob", position=1)) == []
    ops = translator.apply(ev("turn.end", turnId="t9", clientId="bob", reason="cancelled"))
    assert kinds(ops) == [("publish", [("ai-run-start", None)]), ("publish", [("ai-run-end", None)])]
    assert publish(ops[1]).messages[0].transport["run-reason"] == "cancelled"


def test_ids_are_stable_so_a_replay_publishes_nothing_new() -> None:
    ev = Events()
    first = [SessionTranslator(SESSION), SessionTranslator(SESSION)]
    events = [
        ev.node("u1", "user", "alice", "t1", parts=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        ev.node("a1", "assistant", "alice", "t1", parent="u1"),
        ev("turn.start", turnId="t1", clientId="alice"),
        ev("delta", turnId="t1", messageId="a1", text="x"),
        ev("turn.end", turnId="t1", clientId="alice", reason="complete"),
    ]
    ids = [
        [m.id for e in events for op in t.apply(dict(e)) if isinstance(op, Publish) for m in op.messages] for t in first
    ]
    assert ids[0] == ids[1]
    assert ids[0][:2] == [f"{SESSION}:in:u1:0", f"{SESSION}:in:u1:1"]
    assert len(set(ids[0])) == len(ids[0])


def test_answers_across_a_gap_are_rewritten_from_their_saved_parts() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    sent(ev, translator)
    [opening] = translator.apply(ev("delta", turnId="t1", messageId="a1", text="Hel"))
    publish(opening).opens[2].serial = "serial-0"
    translator.mark_gap()
    assert translator.apply(ev("delta", turnId="t1", messageId="a1", text="lo")) == []
    [rewrite] = translator.apply(ev("turn.end", turnId="t1", clientId="alice", reason="complete"))
    assert isinstance(rewrite, Republish)
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "Hello"},
        {"type": "tool-call", "id": "c1", "name": "count", "arguments": {}},
        {"type": "reasoning", "text": "hmm"},
    ]
    publishes, texts = translator.rewrite(rewrite.turn, parts, "9")
    assert kinds(publishes) == [("publish", [("ai-output", "tool-input"), ("ai-output", "reasoning")])]
    assert [(s.index, s.kind, s.serial, text, s.status) for s, text in texts] == [
        (0, "text", "serial-0", "Hello", "complete"),
        (2, "reasoning", None, "hmm", "complete"),
    ]
    assert [m.name for m in translator.ending(rewrite.turn, "9")][-1] == "ai-run-end"


def test_a_restart_rebuilds_the_open_stream_from_the_log() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    sent(ev, translator)
    deltas = [ev("delta", turnId="t1", messageId="a1", text=t) for t in ("a", "b", "c")]
    [opening] = translator.apply(deltas[0])
    stream: Stream = publish(opening).opens[2]
    stream.serial, stream.confirmed_seq = "serial-1", deltas[1]["seq"]  # "ab" reached Ably
    saved = translator.dump()

    again = SessionTranslator(SESSION)
    again.load(saved)
    for delta in deltas:
        again.take_delta(delta)
    reloaded = again.turns["t1"].streams[0]
    assert (reloaded.serial, reloaded.sent, reloaded.pending, reloaded.needs_replace) == ("serial-1", "ab", "c", True)


def test_a_deleted_session_ends_every_run_still_open_as_cancelled() -> None:
    ev, translator = Events(), SessionTranslator(SESSION)
    sent(ev, translator)  # t1: streaming
    translator.apply(ev("delta", turnId="t1", messageId="a1", text="half an"))
    translator.apply(ev.node("u2", "user", "bob", "t2", parts=[{"type": "text", "text": "later"}]))
    translator.apply(ev.node("a2", "assistant", "bob", "t2", parent="u2", status="queued"))
    translator.apply(ev("turn.queued", turnId="t2", clientId="bob", position=1))  # t2: queued, no run yet

    ops = translator.apply(ev("session.deleted", clientId="alice"))

    assert kinds(ops) == [
        ("close", 0, "cancelled"),
        ("publish", [("ai-run-end", None)]),
        ("publish", [("ai-run-start", None)]),
        ("publish", [("ai-run-end", None)]),
    ]
    ends = [publish(op).messages[-1] for op in ops if isinstance(op, Publish) and op.messages[-1].name == "ai-run-end"]
    assert [(m.transport["run-id"], m.transport["run-reason"]) for m in ends] == [
        ("t1", "cancelled"),
        ("t2", "cancelled"),
    ]
    ids = [m.id for op in ops if isinstance(op, Publish) for m in op.messages]
    assert len(set(ids)) == len(ids) and translator.turns == {}
